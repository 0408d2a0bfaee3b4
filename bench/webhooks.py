"""The benchmark's handler: a no-op, or a sleep of BENCH_HANDLER_SLEEP seconds.

Imported at startup in every process (handler discovery), so it also holds
the variants that are not settings. BENCH_PUBLISH replaces what the ingest
view does with a stored event (`hand_over`: a background publisher), to
measure what publishing costs under load (ingest only: the messages, if
any, are never consumed). Publishing inside the request with Celery, as
before the background publisher, is the setting ENQUEUE_IN_BACKGROUND=False
(BENCH_ENQUEUE_IN_BACKGROUND=0, bench/settings.py).

- `none`: no publish at all;
- `lpush`: the floor's publish inside the request, one LPUSH of a
  ready-made Celery message with redis-py (bench/floor_wsgi.py);
- `producer`: `apply_async()` inside the request, on a producer kept by
  each thread instead of one taken from Celery's pool for every publish;
- `batched-lean`: our background publisher's thread and batches, each message
  built by Celery's `create_task_message()` and sent by its
  `send_task_message()`, skipping what `apply_async()` and `send_task()`
  do around them (options, routing, settings look-ups, the result object);
- `batched-lpush`: the same thread, with the floor's ready-made messages in
  one redis-py pipeline per batch (the most such a publisher could save).
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
    import uuid
    from collections.abc import Callable

    import redis

    import webhook_ingest.views
    from bench.floor_wsgi import celery_message
    from webhook_worker.publisher import BackgroundPublisher
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

    Batch = list[tuple[str, str]]

    def _lean_batch(batch: Batch) -> None:
        app = process_event.app
        amqp, name = app.amqp, process_event.name
        with app.producer_or_acquire() as producer, producer.batch():
            for event_id, event_type in batch:
                args, kwargs = (event_id,), {"trigger": "delivery", "event_type": event_type}
                message = amqp.create_task_message(
                    str(uuid.uuid4()),
                    name,
                    args,
                    kwargs,
                    shadow=f"process_event[{event_type}]",
                    argsrepr=repr(args),
                    kwargsrepr=repr(kwargs),
                    ignore_result=True,
                )
                amqp.send_task_message(producer, name, message, declare=[], retry=False)

    def _lpush_batch(batch: Batch) -> None:
        pipe = _broker.pipeline(transaction=False)
        for event_id, _ in batch:
            pipe.lpush("celery", celery_message(process_event.name, [event_id], "celery"))
        pipe.execute()

    class _VariantPublisher(BackgroundPublisher):
        """Ours (queue, thread, batches), with each batch published another way."""

        def __init__(self, publish: Callable[[Batch], None]) -> None:
            super().__init__()
            self._publish_with = publish

        def _publish_batch(self, batch: Batch) -> bool:
            self._publish_with(batch)
            return True

    webhook_ingest.views.hand_over = {  # type: ignore[assignment]
        "none": _no_publish,
        "lpush": _lpush,
        "producer": _thread_producer,
        "batched-lean": _VariantPublisher(_lean_batch).submit,
        "batched-lpush": _VariantPublisher(_lpush_batch).submit,
    }[_PUBLISH]
