"""Enqueue the events the webhook view accepted, from a thread of the web process, in batches.

`enqueue_accepted` receives `webhook_ingest.signals.event_ready` (connected
in apps.py) once a delivery's event is committed. It hands the event to this
process's publisher thread, and the response goes out without waiting for
the broker.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import queue
import threading
import time
from contextlib import nullcontext
from typing import Any

from celery import current_app
from django.db import connections

from webhook_ingest.conf import webhook_settings

from .enqueue import enqueue, enqueue_or_mark, mark_for_sweep

logger = logging.getLogger(__name__)

# Most events one batch publishes.
BATCH_LIMIT = 500
# At most one batch per this many seconds. An event arriving alone is
# published at once; under a burst each batch carries what arrived in the
# meantime, and an event waits at most this long (docs/benchmarks.md).
PUBLISH_INTERVAL = 0.02
# How long a process's exit waits for the events handed over to be published.
EXIT_FLUSH_SECONDS = 10.0

# (event id, event type, the context it was handed over in), or the stop signal
Event = tuple[str, str, contextvars.Context]
Item = Event | None


class BackgroundPublisher:
    """One thread per process that enqueues the events handed to it, in batches.

    `enqueue` only appends to a queue. The thread takes everything waiting
    (at most BATCH_LIMIT) and publishes it with Celery's `apply_async`, on
    one producer from Celery's pool, inside kombu's `Producer.batch()` where
    kombu has it (one Redis pipeline per batch; other transports publish
    message by message). A batch the broker cannot take is marked for the
    sweeper, with everything queued behind it.

    Each event is published in a copy of the context it was handed over in
    (`contextvars`): the request's, for a delivery. Whatever a publish
    reads from the current context (OpenTelemetry's and Sentry's trace, which
    their Celery integrations put in the message headers) is the request's,
    as if it had published the event itself.

    The thread starts on first use in each process (gunicorn forks workers
    after import), and the process's exit waits up to EXIT_FLUSH_SECONDS for
    what is queued. If the process dies first (SIGKILL, OOM), the events it
    held are stored and unpublished: the sweeper enqueues them REQUEUE_AFTER
    later, as it does for a message the broker lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def enqueue(self, event_id: str, event_type: str) -> None:
        if self._pid != os.getpid():
            self._start()
        self._queue.put((event_id, event_type, contextvars.copy_context()))

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            # After a fork the parent's thread is gone, and so is whatever it
            # had not published: this process starts with its own queue.
            self._queue = queue.SimpleQueue()
            self._thread = threading.Thread(
                target=self._run, args=(self._queue,), name="webhook-publisher", daemon=True
            )
            self._thread.start()
            self._pid = os.getpid()

    def close(self, timeout: float | None = None) -> bool:
        """Publish what was handed over, then stop the thread; False if `timeout` ran out."""
        with self._lock:
            thread = self._thread if self._pid == os.getpid() else None
            self._thread = self._pid = None
            if thread is None:
                return True
            self._queue.put(None)
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self, pending: queue.SimpleQueue[Item]) -> None:
        stop = False
        published = 0.0
        while not stop:
            batch, stop = _take(pending, BATCH_LIMIT, published + PUBLISH_INTERVAL)
            if not batch:
                continue
            published = time.monotonic()
            try:
                if not self._publish_batch(batch):
                    # The broker is unreachable: what queued up meanwhile goes
                    # to the sweeper too, instead of waiting its turn to fail
                    # (a long outage would otherwise grow the queue).
                    rest, stopped = _take(pending)
                    stop = stop or stopped
                    if rest:
                        logger.warning(
                            "broker unreachable: %d more event(s) left to the sweeper", len(rest)
                        )
                        _mark_for_sweep([event_id for event_id, _, _ in rest])
            except Exception:  # never let the thread die: later events need it
                logger.exception("the webhook publisher failed on %d event(s)", len(batch))

    @staticmethod
    def _publish_batch(batch: list[Event]) -> bool:
        """Publish `batch`; False if the broker could not take it (marked for the sweeper)."""
        # Two tries: a pooled connection the broker dropped fails the first.
        for _ in range(2):
            try:
                with current_app.producer_or_acquire() as producer:
                    grouped: Any = producer.batch() if hasattr(producer, "batch") else nullcontext()
                    with grouped:
                        for event_id, event_type, context in batch:
                            context.run(enqueue, event_id, event_type, producer=producer)
                return True
            except Exception as exc:  # any broker/transport failure: the rows are safe
                error = exc
        logger.warning(
            "could not enqueue %d event(s) (%s: %s); the sweeper will enqueue them",
            len(batch), type(error).__name__, error,
        )  # fmt: skip
        _mark_for_sweep([event_id for event_id, _, _ in batch])
        return False


def _mark_for_sweep(event_ids: list[str]) -> None:
    try:
        for start in range(0, len(event_ids), BATCH_LIMIT):
            mark_for_sweep(event_ids[start : start + BATCH_LIMIT])
    finally:
        connections.close_all()  # this thread's; it rarely needs one


def _take(
    pending: queue.SimpleQueue[Item], limit: int | None = None, not_before: float = 0.0
) -> tuple[list[Event], bool]:
    """Take queued events, and whether the stop signal (None) was among them.

    With a `limit`: wait for the first, then, once the monotonic clock has
    reached `not_before`, take what else is queued, at most `limit` in all,
    and stop at the signal. Without: take everything queued now, without waiting.
    """
    items: list[Event] = []
    stop = False
    while limit is None or len(items) < limit:
        try:
            if limit is not None and not items:
                item = pending.get()
                delay = not_before - time.monotonic()
                if item is not None and delay > 0:
                    time.sleep(delay)
            else:
                item = pending.get_nowait()
        except queue.Empty:
            break
        if item is None:
            stop = True
            if limit is not None:
                break
        else:
            items.append(item)
    return items, stop


publisher = BackgroundPublisher()


def enqueue_accepted(sender: Any, event_id: str, event_type: str, **kwargs: Any) -> None:
    """Receiver of `event_ready`: enqueue a just-committed event without making the view wait.

    Inline instead when `ENQUEUE_IN_BACKGROUND` is off, or when Celery runs
    tasks eagerly (the task then runs before this returns).
    """
    if not webhook_settings.ENQUEUE_IN_BACKGROUND or current_app.conf.task_always_eager:
        enqueue_or_mark(event_id, event_type)
    else:
        publisher.enqueue(event_id, event_type)


@atexit.register
def _flush_at_exit() -> None:
    if not publisher.close(EXIT_FLUSH_SECONDS):
        logger.warning("exiting with events not yet published; the sweeper will enqueue them")
