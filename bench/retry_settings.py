"""bench/settings.py (the reference settings and the bench handler), for bench.retry_backlog.

Adds the bench-only app bench/retry_app (its handler fails the first
BENCH_FAIL_ATTEMPTS attempts of every event) and sets the retry settings from
the environment:

    BENCH_RETRY_SCHEDULE    comma-separated seconds, e.g. "10,120"
    BENCH_RETRY_JITTER      a fraction, e.g. "0"
    BENCH_REQUEUE_AFTER     seconds, e.g. "600"
    BENCH_STRIPE_WEBHOOKS   a JSON object merged into STRIPE_WEBHOOKS last, for
                            keys these do not cover

The sweeper's beat interval is config/settings.py's WEBHOOKS_SWEEP_INTERVAL.
"""

from __future__ import annotations

import json
import os

from bench.settings import *  # noqa: F403
from bench.settings import INSTALLED_APPS, STRIPE_WEBHOOKS

INSTALLED_APPS = [*INSTALLED_APPS, "bench.retry_app"]

if os.environ.get("BENCH_RETRY_SCHEDULE"):
    STRIPE_WEBHOOKS["RETRY_SCHEDULE"] = [
        float(s) for s in os.environ["BENCH_RETRY_SCHEDULE"].split(",") if s.strip()
    ]
if os.environ.get("BENCH_RETRY_JITTER"):
    STRIPE_WEBHOOKS["RETRY_JITTER"] = float(os.environ["BENCH_RETRY_JITTER"])
if os.environ.get("BENCH_REQUEUE_AFTER"):
    STRIPE_WEBHOOKS["REQUEUE_AFTER"] = float(os.environ["BENCH_REQUEUE_AFTER"])
if os.environ.get("BENCH_STRIPE_WEBHOOKS"):
    STRIPE_WEBHOOKS.update(json.loads(os.environ["BENCH_STRIPE_WEBHOOKS"]))
