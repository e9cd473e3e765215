"""Maintenance scripts; k8s_secrets is also imported by tests."""
