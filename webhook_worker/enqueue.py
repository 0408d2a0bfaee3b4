"""Enqueue "process this event" for a Celery worker, through Celery's own `apply_async`.

The broker is a wake-up call, not the record: when an enqueue fails the event
is already in the database, so it is marked for the sweeper and nothing else
happens. Every message carries the event id, its type (for Flower) and what
triggered it, never the event itself.

The task is looked up by name in the project's Celery app, so this module
does not import the tasks module (which imports the sweeper, which enqueues).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import current_app
from django.db import DatabaseError

from webhook_ingest.models import WebhookEvent

from .celery import PROCESS_EVENT
from .observability import log_fields

logger = logging.getLogger(__name__)

# A due time far in the past: the sweeper's next run picks such an event up at
# once instead of waiting REQUEUE_AFTER (its enqueue failed).
SWEEP_AT_NEXT_RUN = datetime(2000, 1, 1, tzinfo=UTC)

# An enqueue gives one quick retry to a dropped pooled connection, then gives
# up and leaves the event to the sweeper.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.1,
    "interval_max": 0.1,
}


def task_kwargs(event_type: str, trigger: str) -> dict[str, str]:
    """The keyword arguments of a `process_event` message (the event id is its one arg)."""
    return {"trigger": trigger, "event_type": event_type}


def enqueue(
    event_id: str,
    event_type: str,
    trigger: str = "delivery",
    countdown: float | None = None,
    producer: Any = None,
) -> None:
    """Publish one `process_event` message; raises what the broker raised."""
    args, kwargs = (event_id,), task_kwargs(event_type, trigger)
    options: dict[str, Any] = {
        "retry": True,
        "retry_policy": PUBLISH_RETRY_POLICY,
        # What Flower shows; for these plain strings, what Celery would compute.
        "argsrepr": repr(args),
        "kwargsrepr": repr(kwargs),
    }
    if countdown is not None:
        options["countdown"] = countdown
    if producer is not None:
        options["producer"] = producer
    current_app.tasks[PROCESS_EVENT].apply_async(args=args, kwargs=kwargs, **options)


def enqueue_or_mark(
    event_id: str, event_type: str, trigger: str = "delivery", countdown: float | None = None
) -> bool:
    """Enqueue the event; False (logged, and marked for the sweeper) if the broker failed."""
    try:
        enqueue(event_id, event_type, trigger, countdown)
    except Exception as exc:  # any broker/transport failure: the row is safe
        logger.warning(
            "could not enqueue event %s (%s: %s); the sweeper will enqueue it",
            event_id, type(exc).__name__, exc,
            extra=log_fields(None, None, event_id=event_id, event_type=event_type, trigger=trigger),
        )  # fmt: skip
        mark_for_sweep([event_id])
        return False
    return True


def mark_for_sweep(event_ids: list[str]) -> None:
    """Make the sweeper's next run pick these events up instead of waiting REQUEUE_AFTER."""
    try:
        WebhookEvent.objects.filter(pk__in=event_ids, status__in=WebhookEvent.UNFINISHED).update(
            due_at=SWEEP_AT_NEXT_RUN, scheduled=False
        )
    except DatabaseError:
        logger.exception("could not mark events for the sweeper: %s", event_ids[:10])
