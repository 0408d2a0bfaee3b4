"""The benchmark's handler: a no-op, or a sleep of BENCH_HANDLER_SLEEP seconds."""

from __future__ import annotations

import os
import time
from typing import Any

from webhook_worker import webhooks

SLEEP = float(os.environ.get("BENCH_HANDLER_SLEEP", "0") or 0)


@webhooks.handler_all
def bench_handler(event: Any, **kwargs: Any) -> None:
    if SLEEP:
        time.sleep(SLEEP)
