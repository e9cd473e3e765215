"""The gateway: Maestro's public API. Stateless; reads the store, writes via the scheduler."""
