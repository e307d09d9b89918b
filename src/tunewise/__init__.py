"""tunewise: should you fine-tune, or will prompting, few-shot or RAG do? Evidence from your data."""

__version__ = "0.1.0"
