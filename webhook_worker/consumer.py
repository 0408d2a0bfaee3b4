"""Celery's worker consumer, sending task events in batches instead of one by one.

With task events on (Flower's live view), a worker publishes three events per
task: received, started, succeeded. Celery already buffers them, but flushes
the buffer on the next turn of the event loop, which at prefetch 1 means one
broker round trip per event, in the worker's main process, between tasks: a
third of what that process does. Flushing at most every EVENT_FLUSH_INTERVAL
seconds (or when Celery's buffer of 24 fills) sends them as a few "task.multi"
batches, which Flower and `celery events` unpack as usual. Events are
best-effort monitoring; the attempt log in the database is the record.

Selected by the reference settings:

    CELERY_WORKER_CONSUMER = "webhook_worker.consumer:Consumer"
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

# celery-types describes only part of the consumer's (semi-internal) surface.
_Base: Any = CeleryConsumer
# Flower shows a task's state this much later, at most.
EVENT_FLUSH_INTERVAL = 0.1


class Consumer(_Base):
    """Flushes buffered task events on a short timer rather than on every loop turn."""

    _event_flush_scheduled = False

    def on_send_event_buffered(self) -> None:
        if self.hub is None:
            super().on_send_event_buffered()
        elif not self._event_flush_scheduled:
            self._event_flush_scheduled = True
            self.hub.call_later(EVENT_FLUSH_INTERVAL, self._flush_batched_events)

    def _flush_batched_events(self) -> None:
        self._event_flush_scheduled = False
        self._flush_events()

    def shutdown(self) -> None:
        # Send what is still buffered before the event dispatcher closes.
        self._flush_events()
        super().shutdown()
