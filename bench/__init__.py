"""Benchmarks of the ingest endpoint and the worker against framework-free floors (`make bench`)."""
