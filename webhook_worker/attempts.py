"""The outcome of an attempt, and recording one that failed.

A failed attempt is recorded after its handlers' writes rolled back, in a
transaction of its own, so it stays visible: the error, its traceback, and
the event's next state (`retrying` with a due time, or `failed`).
"""

from __future__ import annotations

import logging
import time
import traceback as tb
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import WebhookEvent

from .models import WebhookAttempt
from .observability import log_fields
from .retry import retry_delay
from .webhooks import PermanentFailure

logger = logging.getLogger(__name__)

Status = WebhookEvent.Status
Outcome = WebhookAttempt.Outcome

MAX_ERROR_MESSAGE = 10_000
MAX_TRACEBACK = 100_000

WORKER_LOST_MESSAGE = (
    "The worker running this attempt stopped before it finished "
    "(killed, crashed, or lost its database connection)."
)


@dataclass(frozen=True)
class AttemptResult:
    """What happened, and whether the caller should schedule a retry."""

    outcome: str  # succeeded | retry | failed | skipped | missing | busy | waiting
    retry_in: float | None = None
    # Set when the retry waits in the database (longer than MAX_BROKER_DELAY).
    due_at: datetime | None = None
    error: BaseException | None = None
    detail: str = ""


@dataclass(frozen=True)
class ClaimedAttempt:
    """The attempt row the claim inserted: what the rest of the attempt refers to.

    Not a `WebhookAttempt` instance: the row is written by the claim and
    finished by an UPDATE; nothing needs the model here.
    """

    pk: int
    number: int
    # Set when ordering let the event run ahead of an earlier one (ordering.Turn).
    note: str = ""


class WorkerLost(Exception):
    """The worker running an earlier attempt died; used as the error of a dead-lettered event."""


def error_class_name(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def record_failure(
    connection: BaseDatabaseWrapper,
    event: WebhookEvent,
    attempt: ClaimedAttempt,
    exc: Exception,
    started: float,
    trigger: str = "",
    handler: str = "",
) -> AttemptResult:
    """Record the failed attempt and the event's next state, and log it with `exc_info`.

    A retried attempt is a WARNING (with Sentry's logging integration, a
    breadcrumb), a dead-lettered event an ERROR (a Sentry issue).
    """
    duration_ms = (time.perf_counter() - started) * 1000
    if isinstance(exc, DatabaseError) and not connection.in_atomic_block:
        # The handlers' connection may be the casualty (killed, server
        # restarted); record the failure on a fresh one. (Inside a caller's
        # transaction, a test's, the connection is not ours to close.)
        connection.close_if_unusable_or_obsolete()
    delay = None if isinstance(exc, PermanentFailure) else retry_delay(attempt.number)
    now = timezone.now()
    due_at = now if delay is None else now + timedelta(seconds=delay)
    # A retry longer than MAX_BROKER_DELAY waits here, not in the broker.
    scheduled = delay is not None and delay > webhook_settings.MAX_BROKER_DELAY
    error_class = error_class_name(exc)
    message = str(exc)[:MAX_ERROR_MESSAGE]
    with transaction.atomic(using=connection.alias):
        updated = WebhookEvent.objects.filter(
            pk=event.pk, status=Status.PROCESSING, attempts=attempt.number
        ).update(
            status=Status.FAILED if delay is None else Status.RETRYING,
            due_at=due_at,
            scheduled=scheduled,
            last_error=f"{error_class}: {message}"[:MAX_ERROR_MESSAGE],
        )
        # Only while the attempt is still open: a worker that took the event
        # over (possible once the finish released the lock, if the commit
        # then failed) has closed it as lost, and that record stands.
        WebhookAttempt.objects.filter(pk=attempt.pk, outcome=Outcome.RUNNING).update(
            outcome=Outcome.FAILED if delay is None else Outcome.RETRY,
            finished_at=now,
            duration_ms=duration_ms,
            error_class=error_class[:255],
            error_message=message,
            traceback="".join(tb.format_exception(exc))[-MAX_TRACEBACK:],
            note=attempt.note,
        )
    if not updated:
        return AttemptResult("skipped", detail="taken over by a later attempt")
    fields = {"trigger": trigger, "handler": handler, "error_class": error_class}
    if delay is None:
        logger.error(
            "event %s (%s) attempt %d failed for good in %s (%s: %s); dead-lettered",
            event.pk, event.type, attempt.number, handler, error_class, message,
            exc_info=exc, extra=log_fields(event, attempt.number, outcome=Outcome.FAILED, **fields),
        )  # fmt: skip
        return AttemptResult("failed", error=exc)
    logger.warning(
        "event %s (%s) attempt %d failed in %s (%s: %s); retrying in %.1fs",
        event.pk, event.type, attempt.number, handler, error_class, message, delay,
        exc_info=exc, extra=log_fields(event, attempt.number, outcome=Outcome.RETRY, **fields),
    )  # fmt: skip
    return AttemptResult("retry", retry_in=delay, error=exc, due_at=due_at if scheduled else None)
