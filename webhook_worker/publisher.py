"""The web process's publisher thread: stored events published in batches, off the request.

`hand_over` (webhook_worker/enqueue.py) gives it each event the webhook view
has committed; the response never waits for the broker.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from contextlib import nullcontext
from typing import Any

from celery.utils.nodenames import anon_nodename
from django.db import connections
from kombu import Connection

from .enqueue import _publish, mark_for_sweep
from .messages import plain_messages

logger = logging.getLogger(__name__)

# Most events one batch publishes.
BATCH_LIMIT = 500
# At most one batch per this many seconds. An event arriving alone is
# published at once; under a burst each publish carries what arrived in the
# meantime. A batch's fixed cost under load (the Redis command, the thread's
# wake-up) is several times one message's: at 0.02 s the thread spent about a
# third of the CPU per event it spent publishing as soon as it could
# (docs/benchmarks.md), and an event waits at most this long for its publish.
PUBLISH_INTERVAL = 0.02
# How long a process's exit waits for the events handed over to be published.
EXIT_FLUSH_SECONDS = 10.0


class BackgroundPublisher:
    """One thread per process that publishes the events handed to it, in batches.

    `submit` only appends to a queue. The thread takes everything waiting
    (at most BATCH_LIMIT) and publishes it at once, then goes back to
    waiting. On Redis it builds the messages itself (webhook_worker/messages.py)
    and pushes the batch in one command on a connection of its own; elsewhere,
    or when something hooks Celery's publishing, it calls `apply_async` for
    each, on one producer inside kombu's `Producer.batch()` (one Redis pipeline;
    transports without batching publish message by message). Under a burst the
    batches grow by themselves; an event arriving alone is published at once.
    A batch that cannot be published (broker down) is marked for the sweeper,
    as a failed inline publish is.

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
        # The thread's own broker connection, for the batches it builds itself.
        self._connection: Connection | None = None

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
            self._connection = None  # the parent's socket is not this process's
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
                        self._mark_for_sweep([event_id for event_id, _ in rest])
            except Exception:  # never let the thread die: later events need it
                logger.exception("the webhook publisher failed on %d event(s)", len(batch))

    def _publish_batch(self, batch: list[tuple[str, str]]) -> bool:
        """Publish `batch`; False if the broker could not take it (marked for the sweeper)."""
        from .tasks import process_event

        app = process_event.app
        # Two tries: a connection the broker dropped fails the first.
        for _ in range(2):
            try:
                if self._connection is None:
                    self._connection = app.connection_for_write()
                plain = plain_messages(app, self._connection.transport)
                if plain is not None:
                    channel: Any = self._connection.default_channel
                    reply_to, origin = app.thread_oid, anon_nodename()
                    messages = [
                        plain.build(channel, event_id, event_type, reply_to, origin)
                        for event_id, event_type in batch
                    ]
                    channel.put_many(plain.queue, messages)
                    return True
                with app.producer_or_acquire() as producer:
                    grouped = producer.batch() if hasattr(producer, "batch") else nullcontext()
                    with grouped:
                        for event_id, event_type in batch:
                            _publish(event_id, event_type, producer=producer)
                return True
            except Exception as exc:  # any broker/transport failure: the rows are safe
                error = exc
                self._drop_connection()
        logger.warning(
            "could not enqueue %d event(s) (%s: %s); the sweeper will enqueue them",
            len(batch), type(error).__name__, error,
        )  # fmt: skip
        self._mark_for_sweep([event_id for event_id, _ in batch])
        return False

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.release()
            except Exception:  # already broken; a new one is opened next time
                logger.debug("closing the publisher's broker connection failed", exc_info=True)

    @staticmethod
    def _mark_for_sweep(event_ids: list[str]) -> None:
        try:
            for start in range(0, len(event_ids), BATCH_LIMIT):
                mark_for_sweep(event_ids[start : start + BATCH_LIMIT])
        finally:
            connections.close_all()  # this thread's; it rarely needs one


def _take(
    pending: queue.SimpleQueue[tuple[str, str] | None],
    limit: int | None = None,
    not_before: float = 0.0,
) -> tuple[list[tuple[str, str]], bool]:
    """Take queued events, and whether the stop signal (None) was among them.

    With a `limit`: wait for the first, then, once the monotonic clock has
    reached `not_before`, take what else is queued, at most `limit` in all,
    and stop at the signal. Without: take everything queued now, without waiting.
    """
    items: list[tuple[str, str]] = []
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


@atexit.register
def _flush_at_exit() -> None:
    if not publisher.close(EXIT_FLUSH_SECONDS):
        logger.warning("exiting with events not yet published; the sweeper will enqueue them")
