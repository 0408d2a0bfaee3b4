"""Delete old finished events and their attempts, in small batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from django.db import transaction

from webhook_ingest.models import WebhookEvent

from .models import WebhookAttempt

Status = WebhookEvent.Status

# Only finished events can be pruned: an unfinished one would be lost.
PRUNABLE = (Status.SUCCEEDED, Status.FAILED)
BATCH_SIZE = 1000


def prunable(statuses: Iterable[str]) -> set[str]:
    """The statuses as a set; ValueError for any that must never be pruned."""
    wanted = set(statuses)
    unknown = wanted - set(PRUNABLE)
    if unknown:
        raise ValueError(f"only {', '.join(PRUNABLE)} events can be pruned, not {sorted(unknown)}")
    return wanted


def prune_events(
    cutoff: datetime,
    statuses: Iterable[str] = (Status.SUCCEEDED,),
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete events received before `cutoff` in `statuses`; returns how many.

    Each batch is its own short transaction: lock up to `batch_size` rows
    (skipping any a worker or a retry holds), delete their attempts, then the
    events. The table is never locked for long, and ingest and workers carry on.
    """
    wanted = prunable(statuses)
    total = 0
    while True:
        with transaction.atomic():
            ids = list(
                WebhookEvent.objects.select_for_update(skip_locked=True)
                .filter(status__in=wanted, received_at__lt=cutoff)
                .order_by("received_at")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            WebhookAttempt.objects.filter(event_id__in=ids).delete()
            deleted, _ = WebhookEvent.objects.filter(pk__in=ids).delete()
        total += deleted
        if progress is not None:
            progress(total)
        if len(ids) < batch_size:
            break
    return total
