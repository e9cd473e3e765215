"""Code every service shares: serving bootstrap, health, shutdown, logging, errors."""
