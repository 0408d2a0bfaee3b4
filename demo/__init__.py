"""Example handlers for the reference project: what `make run` runs."""
