"""Maestro: a workflow engine that runs a DAG of AI personas as gRPC services."""

__version__ = "0.1.0"
