"""What the scheduler's gates and the persona worker's `run_checks` tool share about the
sandbox: the request and report models, the metric registry, gate evaluation and the
client. No protobuf outside `convert.py` and `client.py`."""
