"""Optional apps built on the worker's public hooks; none is loaded unless installed."""
