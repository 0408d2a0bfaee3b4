"""Retry policy: how long to wait before the next attempt, and when to stop."""

from __future__ import annotations

import random

from webhook_ingest.conf import webhook_settings


def retry_delay(
    failed_attempt: int,
    schedule: tuple[float, ...] | None = None,
    jitter: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait after attempt number `failed_attempt` (1-based) failed.

    None when that was the last attempt allowed. Each delay is spread by
    +/- `RETRY_JITTER` so a burst of failures does not retry in lockstep.
    """
    if schedule is None:
        schedule = webhook_settings.RETRY_SCHEDULE
    if jitter is None:
        jitter = webhook_settings.RETRY_JITTER
    if failed_attempt < 1 or failed_attempt > len(schedule):
        return None
    base = float(schedule[failed_attempt - 1])
    spread = (rng or random).uniform(-jitter, jitter)
    return max(0.0, base * (1 + spread))
