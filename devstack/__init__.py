"""Local development stack: embedded Postgres and Redis, and the process runner.

Not part of the distributed wheel; used by `make run`, `make test` and the
test suite's fault-injection fixtures.
"""
