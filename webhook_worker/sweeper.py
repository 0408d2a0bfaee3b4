"""Find events the broker lost and enqueue them again.

An event is stale when it is unfinished and more than REQUEUE_AFTER past
its due time: `pending` never reached a worker, `retrying` lost its retry
message, `processing` lost its worker. Rows are claimed with
`SELECT ... FOR UPDATE SKIP LOCKED` and their due time moved to now, so any
number of sweepers can run at once and each stale event is enqueued once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import WebhookEvent

from .enqueue import enqueue_event, mark_for_sweep
from .models import WebhookAttempt
from .statements import LOCK_NAMESPACE

logger = logging.getLogger(__name__)

BATCH_SIZE = 500


# A `processing` event whose advisory lock is held has a live worker (a slow
# handler), not a lost one: leave it alone.
def _not_running_sql() -> str:
    table = WebhookEvent._meta.db_table
    return (
        "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' "
        f"AND l.classid = {LOCK_NAMESPACE} AND l.objsubid = 2 "
        f'AND l.objid = hashtext("{table}"."id")::oid)'
    )


def stale_events(now: datetime | None = None) -> QuerySet[WebhookEvent]:
    """Unfinished events more than REQUEUE_AFTER past due, without a live worker."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=webhook_settings.REQUEUE_AFTER)
    return WebhookEvent.objects.filter(status__in=WebhookEvent.UNFINISHED, due_at__lt=cutoff).extra(
        where=[_not_running_sql()]
    )


def requeue_stale(now: datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Enqueue every stale event once; returns how many were enqueued."""
    now = now or timezone.now()
    total = 0
    while True:
        with transaction.atomic():
            rows = list(
                stale_events(now)
                .select_for_update(skip_locked=True)
                .order_by("due_at")
                .values_list("pk", "type")[:batch_size]
            )
            if not rows:
                break
            # Due "now": the next run will not pick them again for REQUEUE_AFTER.
            WebhookEvent.objects.filter(pk__in=[pk for pk, _ in rows]).update(due_at=now)
        for index, (pk, event_type) in enumerate(rows):
            if not enqueue_event(pk, event_type, trigger=WebhookAttempt.Trigger.SWEEPER):
                # Broker down: leave the rest marked for the next run.
                mark_for_sweep([p for p, _ in rows[index + 1 :]])
                logger.warning("sweeper stopped: broker unreachable; %d enqueued", total)
                return total
            total += 1
        if len(rows) < batch_size:
            break
    if total:
        logger.info("sweeper re-enqueued %d stale event(s)", total)
    return total
