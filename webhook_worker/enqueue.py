"""Publish "process this event" to the broker. The only entry point ingest uses.

The broker is a wake-up call, not the record: when a publish fails the event
is already in the database, so we mark it due for the sweeper and carry on.

The webhook view does not publish itself: once its INSERT has committed it
hands the event to this process's `BackgroundPublisher` (`hand_over`), whose
thread publishes whatever has accumulated in one batch, and the response goes
out without waiting for the broker. Everything else (the sweeper, retries
from the admin or `webhooks_retry`) publishes inline with `enqueue_event`.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from contextlib import nullcontext
from functools import cache
from typing import Any

from celery import Celery
from django.db import DatabaseError, connections

from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import SWEEP_NOW, WebhookEvent

logger = logging.getLogger(__name__)

# Publishing happens inside the webhook request: one quick retry for a
# dropped pooled connection, then give up and let the sweeper publish later.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.1,
}

# Most events one background batch publishes (one Redis pipeline).
BATCH_LIMIT = 500
# How long a process's exit waits for the events handed over to be published.
EXIT_FLUSH_SECONDS = 10.0


def enqueue_event(
    event_id: str,
    event_type: str,
    trigger: str = "delivery",
    countdown: float | None = None,
) -> bool:
    """Ask a worker to process the event; False (and logged) if the broker is unreachable."""
    try:
        _publish(event_id, event_type, trigger, countdown)
    except Exception as exc:  # any broker/transport failure: the row is safe
        logger.warning(
            "could not enqueue event %s (%s: %s); the sweeper will enqueue it",
            event_id, type(exc).__name__, exc,
        )  # fmt: skip
        mark_for_sweep([event_id])
        return False
    return True


def _publish(
    event_id: str,
    event_type: str,
    trigger: str = "delivery",
    countdown: float | None = None,
    producer: Any = None,
) -> None:
    from .tasks import process_event

    args = (event_id,)
    kwargs = {"trigger": trigger, "event_type": event_type}
    options: dict[str, Any] = {
        "retry": True,
        "retry_policy": PUBLISH_RETRY_POLICY,
        # What Flower shows: for these plain strings repr() gives what
        # Celery's saferepr() would, at a fraction of its cost.
        "argsrepr": repr(args),
        "kwargsrepr": repr(kwargs),
    }
    if countdown is not None:
        options["countdown"] = countdown
    if not _publish_declares_queue(process_event.app):
        options["declare"] = []
    if producer is not None:
        options["producer"] = producer
    process_event.apply_async(args=args, kwargs=kwargs, **options)


def hand_over(event_id: str, event_type: str) -> None:
    """Enqueue a just-committed event without making the caller wait for the broker.

    Inline instead when `ENQUEUE_IN_BACKGROUND` is off, or when Celery runs
    tasks eagerly (tests that expect the task to have run on return).
    """
    from .tasks import process_event

    if not webhook_settings.ENQUEUE_IN_BACKGROUND or process_event.app.conf.task_always_eager:
        enqueue_event(event_id, event_type)
        return
    publisher.submit(event_id, event_type)


class BackgroundPublisher:
    """One thread per process that publishes the events handed to it, in batches.

    `submit` only appends to a queue. The thread takes everything waiting
    (at most BATCH_LIMIT), publishes it with `apply_async` on one producer
    inside kombu's `Producer.batch()` (one Redis pipeline for the batch;
    transports without batching publish message by message), and goes back
    to waiting. Under a burst the batches grow by themselves; an event
    arriving alone is published at once. A batch that cannot be published
    (broker down) is marked for the sweeper, as a failed inline publish is.

    The thread starts on first use in each process (gunicorn forks workers
    after import), and the process's exit waits up to EXIT_FLUSH_SECONDS for
    what is queued. If the process dies first (SIGKILL, OOM), the events it
    held are stored and unpublished: the sweeper enqueues them REQUEUE_AFTER
    later, as it does for a message the broker lost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def submit(self, event_id: str, event_type: str) -> None:
        if self._pid != os.getpid():
            self._start()
        self._queue.put((event_id, event_type))

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

    def _run(self, pending: queue.SimpleQueue[tuple[str, str] | None]) -> None:
        stop = False
        while not stop:
            batch, stop = _take(pending, BATCH_LIMIT)
            if not batch:
                continue
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
                        self._mark_for_sweep([event_id for event_id, _ in rest])
            except Exception:  # never let the thread die: later events need it
                logger.exception("the webhook publisher failed on %d event(s)", len(batch))

    def _publish_batch(self, batch: list[tuple[str, str]]) -> bool:
        """Publish `batch`; False if the broker could not take it (marked for the sweeper)."""
        from .tasks import process_event

        app = process_event.app
        # Two tries: a pooled connection the broker dropped fails the first.
        for _ in range(2):
            try:
                with app.producer_or_acquire() as producer:
                    grouped = producer.batch() if hasattr(producer, "batch") else nullcontext()
                    with grouped:
                        for event_id, event_type in batch:
                            _publish(event_id, event_type, producer=producer)
                return True
            except Exception as exc:  # any broker/transport failure: the rows are safe
                error = exc
        logger.warning(
            "could not enqueue %d event(s) (%s: %s); the sweeper will enqueue them",
            len(batch), type(error).__name__, error,
        )  # fmt: skip
        self._mark_for_sweep([event_id for event_id, _ in batch])
        return False

    @staticmethod
    def _mark_for_sweep(event_ids: list[str]) -> None:
        try:
            for start in range(0, len(event_ids), BATCH_LIMIT):
                mark_for_sweep(event_ids[start : start + BATCH_LIMIT])
        finally:
            connections.close_all()  # this thread's; it rarely needs one


def _take(
    pending: queue.SimpleQueue[tuple[str, str] | None], limit: int | None = None
) -> tuple[list[tuple[str, str]], bool]:
    """Take queued events, and whether the stop signal (None) was among them.

    With a `limit`: wait for the first, take at most `limit`, and stop at the
    signal. Without: take everything queued now, without waiting.
    """
    items: list[tuple[str, str]] = []
    stop = False
    while limit is None or len(items) < limit:
        try:
            item = pending.get() if limit is not None and not items else pending.get_nowait()
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


@atexit.register
def _flush_at_exit() -> None:
    if not publisher.close(EXIT_FLUSH_SECONDS):
        logger.warning("exiting with events not yet published; the sweeper will enqueue them")


@cache
def _publish_declares_queue(app: Celery) -> bool:
    """Whether a publish must declare its queue first; False only where nothing depends on it.

    Celery declares the task's queue with every publish, and kombu, to find
    the declaration in its per-connection cache, first copies the queue, its
    exchange and bindings: about a tenth of a publish's CPU. On Redis, with
    Celery's default direct routing, a publish is a push onto the queue's
    list, which creates it, and the worker declares the queues it consumes,
    so the declaration does nothing a message needs. Anywhere else (RabbitMQ
    drops a message for a queue nobody declared; routes or exchanges of the
    project's own) every publish declares, as Celery does.
    """
    conf = app.conf
    if conf.task_routes or conf.task_queues or conf.task_default_exchange_type != "direct":
        return True
    with app.connection_for_write() as conn:
        return conn.transport.driver_type != "redis"


def mark_for_sweep(event_ids: list[str]) -> None:
    """Make the sweeper's next run pick these events up instead of waiting REQUEUE_AFTER."""
    try:
        WebhookEvent.objects.filter(pk__in=event_ids, status__in=WebhookEvent.UNFINISHED).update(
            due_at=SWEEP_NOW
        )
    except DatabaseError:
        logger.exception("could not mark events for the sweeper: %s", event_ids[:10])
