"""Celery tasks: process one event, and sweep (due retries, events the broker lost).

Messages carry the event id (plus its type, for monitoring, and what
triggered them), never the event itself: the database row is the truth.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Retry
from celery.signals import task_postrun
from django.db import DatabaseError, close_old_connections

from webhook_ingest.conf import webhook_settings

from . import dispatch, reconcile, sweeper
from .celery import PROCESS_EVENT, RECONCILE, SWEEP
from .enqueue import task_kwargs
from .models import WebhookAttempt
from .observability import log_fields
from .retry import retry_delay

logger = logging.getLogger(__name__)

# Database unreachable: retry the message this many times (at the first
# RETRY_SCHEDULE delay, at most MAX_BROKER_DELAY), then leave the event to
# the sweeper.
MAX_INFRASTRUCTURE_RETRIES = 30


class EventTask(Task):
    """Shows the Stripe event type as the task name in Flower and worker logs."""

    def shadow_name(self, args: Any, kwargs: Any, options: Any) -> str | None:  # type: ignore[override]
        event_type = (kwargs or {}).get("event_type")
        return f"process_event[{event_type}]" if event_type else None


@shared_task(
    bind=True,
    base=EventTask,
    name=PROCESS_EVENT,
    # At-least-once: ack only after the attempt finished, requeue if the
    # worker process dies mid-attempt. dispatch makes the repeats harmless.
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    serializer="json",
    max_retries=None,  # RETRY_SCHEDULE decides, in dispatch
)
def process_event(
    self: Task, event_id: str, trigger: str = "delivery", event_type: str = ""
) -> str:
    """Run the handlers registered for the stored event `event_id`."""
    retry_kwargs = task_kwargs(event_type, WebhookAttempt.Trigger.RETRY)
    try:
        result = dispatch.process(
            event_id,
            trigger=trigger,
            worker=f"{self.request.hostname or 'local'} pid {os.getpid()}",
            task_id=self.request.id or "",
        )
    except DatabaseError as exc:
        if self.request.retries >= MAX_INFRASTRUCTURE_RETRIES:
            raise
        logger.warning(
            "database error processing %s (%s); retrying",
            event_id, exc, exc_info=exc,
            extra=log_fields(None, None, event_id=event_id, event_type=event_type, trigger=trigger),
        )  # fmt: skip
        countdown = min(retry_delay(1) or 10, webhook_settings.MAX_BROKER_DELAY)
        raise self.retry(countdown=countdown, exc=exc, kwargs=retry_kwargs) from exc
    error = result.error if isinstance(result.error, Exception) else None
    if result.outcome == "retry" and result.due_at is not None:
        # The retry waits in the database; the sweeper publishes it when due.
        # Shown as a retry in Flower, without a message in the broker.
        raise Retry(f"retry at {result.due_at.isoformat()} (scheduled)", exc=error)
    if result.outcome == "retry":
        raise self.retry(countdown=result.retry_in, exc=error, kwargs=retry_kwargs)
    if result.outcome == "failed" and result.error is not None:
        # Dead-lettered: show it as FAILURE in Flower too. Already recorded.
        raise result.error
    return result.outcome


@task_postrun.connect(dispatch_uid="webhook_worker.tasks.drop_broken_connections")
def drop_broken_connections(sender: Task | None = None, **kwargs: Any) -> None:
    """After each of our tasks, close the database connections that failed or are too old.

    Celery's Django fixup keeps connections across tasks (CELERY_DB_REUSE_MAX)
    without looking at them, so a connection the server dropped (a restart, a
    failover, an idle timeout) would fail every later task of the process.
    This is what Django does around each request: a connection that saw an
    error and no longer answers, or is older than CONN_MAX_AGE, is closed, and
    the next task opens a new one.
    """
    if sender is None or not (sender.name or "").startswith("webhook_worker."):
        return
    if getattr(sender.request, "is_eager", False):
        return  # inside the caller's request or transaction: not ours to close
    close_old_connections()


@shared_task(name=SWEEP, ignore_result=True)
def requeue_stale() -> int:
    """Publish due retries and re-enqueue events the broker lost (run by beat)."""
    return sweeper.sweep().total


@shared_task(name=RECONCILE, ignore_result=True)
def reconcile_due() -> int:
    """Run the reconciliations that are due (`RECONCILE_EVERY`); run by beat."""
    return reconcile.run_due()
