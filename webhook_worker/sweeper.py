"""The sweeper, run by beat every minute: publish due retries, and find events the broker lost.

1. Due retries. A retry longer than MAX_BROKER_DELAY waits in the database
   (`retrying`, `scheduled`, with its due time) instead of in the broker; so
   does an event waiting for its turn under ORDERING (`pending`, `scheduled`).
   Each run publishes those that are due, without a countdown: a retry
   starts within one sweep interval of its due time, and a burst of due
   retries waits in the broker's queue, never in a worker's memory.
2. Stale events. An event is stale when it is unfinished and more than
   REQUEUE_AFTER past its due time: `pending` never reached a worker,
   `retrying` lost its retry message, `processing` lost its worker (its
   advisory lock is free). Each is enqueued again.

With OpenTelemetry set up, each is published inside a span `webhook.requeue`
linked to the trace of the event's delivery (observability.requeue_span).

Rows are claimed with `SELECT ... FOR UPDATE SKIP LOCKED` and updated in the
same transaction, so any number of sweepers can run at once and each event
is enqueued once.

3. Counts. The count rows of database sessions that have ended are folded
   into one per key (`webhook_ingest.counts.fold_ended_sessions`), so the
   count tables stay about a row per key and live session.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from webhook_ingest import counts
from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import EventCount, WebhookEvent

from .attempt_sql import lock_free_sql
from .enqueue import enqueue_or_mark, mark_for_sweep
from .models import AttemptCount, WebhookAttempt
from .observability import requeue_span

logger = logging.getLogger(__name__)

Status = WebhookEvent.Status
BATCH_SIZE = 500


def stale_events(now: datetime | None = None) -> QuerySet[WebhookEvent]:
    """Unfinished events more than REQUEUE_AFTER past due, without a live worker."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=webhook_settings.REQUEUE_AFTER)
    no_live_worker = RawSQL(lock_free_sql(), [], output_field=BooleanField())
    return WebhookEvent.objects.filter(
        no_live_worker, status__in=WebhookEvent.UNFINISHED, due_at__lt=cutoff
    )


def due_retries(now: datetime | None = None) -> QuerySet[WebhookEvent]:
    """Retries (and, with ORDERING, waiting events) kept in the database that are due."""
    now = now or timezone.now()
    return WebhookEvent.objects.filter(
        status__in=(Status.RETRYING, Status.PENDING), scheduled=True, due_at__lte=now
    )


@dataclass(frozen=True)
class SweepResult:
    """What one run of the sweeper enqueued, and whether the broker refused anything."""

    retries: int = 0
    stale: int = 0
    broker_unreachable: bool = False

    @property
    def total(self) -> int:
        return self.retries + self.stale


def sweep(now: datetime | None = None, batch_size: int = BATCH_SIZE) -> SweepResult:
    """One run: publish due retries, then re-enqueue stale events."""
    now = now or timezone.now()
    retries, ok = _claim_and_enqueue(
        due_retries(now), now, batch_size, WebhookAttempt.Trigger.RETRY
    )
    stale, stale_ok = _claim_and_enqueue(
        stale_events(now), now, batch_size, WebhookAttempt.Trigger.SWEEPER
    )
    for model in (EventCount, AttemptCount):
        counts.fold_ended_sessions(model)
    result = SweepResult(retries, stale, not (ok and stale_ok))
    if result.total:
        logger.info("sweeper: %d due retr(ies) published, %d stale event(s) re-enqueued",
                    retries, stale)  # fmt: skip
    return result


def _claim_and_enqueue(
    queryset: QuerySet[WebhookEvent], now: datetime, batch_size: int, trigger: str
) -> tuple[int, bool]:
    """Claim the rows of `queryset` in batches and enqueue each once.

    Returns how many were enqueued, and False if the broker refused one (the
    rest are then left marked for the next run). A claimed row is no longer
    `scheduled` and is due `now`, so the next run does not pick it again for
    REQUEUE_AFTER.
    """
    total = 0
    while True:
        with transaction.atomic(using=WebhookEvent.objects.db_for_write()):
            rows = list(
                queryset.select_for_update(skip_locked=True)
                .order_by("due_at")
                .values_list("pk", "type", "traceparent")[:batch_size]
            )
            if not rows:
                break
            WebhookEvent.objects.filter(pk__in=[pk for pk, *_ in rows]).update(
                due_at=now, scheduled=False
            )
        for index, (pk, event_type, traceparent) in enumerate(rows):
            with requeue_span(pk, event_type, trigger, traceparent):
                enqueued = enqueue_or_mark(pk, event_type, trigger=trigger)
            if not enqueued:
                mark_for_sweep([p for p, *_ in rows[index + 1 :]])
                logger.warning("sweeper stopped: broker unreachable; %d enqueued", total)
                return total, False
            total += 1
        if len(rows) < batch_size:
            break
    return total, True
