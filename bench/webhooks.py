"""The benchmark's handler: a no-op, or a sleep of BENCH_HANDLER_SLEEP seconds.

Imported at startup in every process (handler discovery), so it also holds
the variants that are not settings (the settings' are in bench/settings.py):

- BENCH_PUBLISH replaces what the ingest view does with a stored event, to
  measure what publishing costs under load (ingest only: the messages, if
  any, are never consumed):
  - `none`: no publish at all;
  - `lpush`: the floor's publish inside the request, one LPUSH of a
    ready-made Celery message with redis-py (bench/floor_wsgi.py);
  - `apply-async`: our publisher thread and its batches, every message sent
    with `apply_async()` (what it does where it cannot build the messages
    itself, and did everywhere before it could).
- BENCH_PUBLISH_INTERVAL sets the publisher's PUBLISH_INTERVAL (seconds).

Publishing inside the request, before the response, is the setting
ENQUEUE_IN_BACKGROUND=False (BENCH_ENQUEUE_IN_BACKGROUND=0).
"""

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


if os.environ.get("BENCH_PUBLISH_INTERVAL"):
    from webhook_worker import publisher

    publisher.PUBLISH_INTERVAL = float(os.environ["BENCH_PUBLISH_INTERVAL"])

_PUBLISH = os.environ.get("BENCH_PUBLISH", "")
if _PUBLISH == "apply-async":
    from webhook_worker import publisher

    # The publisher asks messages.plain_messages whether it may build them itself.
    publisher.plain_messages = lambda app, transport: None  # type: ignore[assignment]
elif _PUBLISH:
    # Imported here, once, not in the publish being measured.
    import redis

    import webhook_ingest.views
    from bench.floor_wsgi import celery_message
    from webhook_worker.tasks import process_event

    _broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])

    def _no_publish(event_id: str, event_type: str) -> None:
        return None

    def _lpush(event_id: str, event_type: str) -> None:
        _broker.lpush("celery", celery_message(process_event.name, [event_id], "celery"))

    webhook_ingest.views.hand_over = {"none": _no_publish, "lpush": _lpush}[_PUBLISH]
