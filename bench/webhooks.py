"""The benchmark's handler: a no-op, or a sleep of BENCH_HANDLER_SLEEP seconds.

Imported at startup in every process (handler discovery), so it also holds
the variants that are not settings. BENCH_PUBLISH replaces the ingest view's
Celery publish, to measure what the publish costs under load (ingest only:
the messages, if any, are never consumed):

- `none`: no publish at all;
- `lpush`: the floor's publish, one LPUSH of a ready-made Celery message
  with redis-py (bench/floor_wsgi.py);
- `producer`: `apply_async()` as ours, on a producer kept by each thread
  instead of one taken from Celery's pool for every publish.
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


_PUBLISH = os.environ.get("BENCH_PUBLISH", "")
if _PUBLISH:
    # Imported here, once, not in the publish being measured.
    import threading

    import redis

    import webhook_ingest.views
    from bench.floor_wsgi import celery_message
    from webhook_worker.tasks import process_event

    _broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    _local = threading.local()

    def _no_publish(event_id: str, event_type: str) -> bool:
        return True

    def _lpush(event_id: str, event_type: str) -> bool:
        _broker.lpush("celery", celery_message(process_event.name, [event_id], "celery"))
        return True

    def _thread_producer(event_id: str, event_type: str) -> bool:
        app = process_event.app
        if getattr(_local, "producer", None) is None:
            _local.producer = app.amqp.Producer(app.connection_for_write())
        args, kwargs = (event_id,), {"trigger": "delivery", "event_type": event_type}
        process_event.apply_async(
            args=args,
            kwargs=kwargs,
            argsrepr=repr(args),
            kwargsrepr=repr(kwargs),
            declare=[],
            producer=_local.producer,
        )
        return True

    webhook_ingest.views.enqueue_event = {  # type: ignore[assignment]
        "none": _no_publish,
        "lpush": _lpush,
        "producer": _thread_producer,
    }[_PUBLISH]
