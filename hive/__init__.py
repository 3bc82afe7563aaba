"""hive: the per-machine daemon of an LLM serving fleet (a reconciliation controller)."""

__version__ = "0.1.0"
