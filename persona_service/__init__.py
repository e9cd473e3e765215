"""The persona worker: runs one step attempt per call with an LLM provider."""
