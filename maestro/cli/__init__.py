"""The `maestro` command line: run workflows locally or against a gateway.

`maestro.cli.main` parses arguments and dispatches; `stack` starts the services as
local processes; `gateway_client` and `convert` are the only modules that touch
protobuf; `render` turns plain models into text and JSON.
"""
