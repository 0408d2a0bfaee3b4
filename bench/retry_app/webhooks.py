"""Fail attempts 1..BENCH_FAIL_ATTEMPTS of every event, succeed on the next one.

`event.attempts` is the number of the attempt running (the claim counts it
before the handlers run). Unset or 0: the handler does nothing.
"""

from __future__ import annotations

import os
from typing import Any

from webhook_worker import webhooks

FAIL_ATTEMPTS = int(os.environ.get("BENCH_FAIL_ATTEMPTS", "0") or 0)


class BenchFailure(RuntimeError):
    """The failure the retry benchmark asks for; retried like any handler error."""


@webhooks.handler_all
def fail_first_attempts(event: Any, **kwargs: Any) -> None:
    if event.attempts <= FAIL_ATTEMPTS:
        raise BenchFailure(f"attempt {event.attempts} fails on purpose (of {FAIL_ATTEMPTS})")
