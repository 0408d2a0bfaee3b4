"""Operator actions on stored events, shared by the admin and the management commands.

Manual retry semantics, in one place:

- `failed`, `pending` and `retrying` events become `pending`, due now, and a
  message with trigger "manual" is published once the change committed; the
  worker runs a manual attempt even when a scheduled retry is not due yet.
- `succeeded` events are run again only when explicitly asked
  (`include_succeeded=True`): their handlers run a second time.
- `processing` events are left alone: a worker has them, or the sweeper will
  recover them if that worker died.
- Attempts keep counting. Max attempts counts every attempt, so a manual retry
  of an event that already used all of them gets exactly one attempt: if it
  fails, the event goes straight back to `failed`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from webhook_ingest.models import WebhookEvent

from .enqueue import enqueue_or_mark
from .models import WebhookAttempt
from .signals import event_retried

logger = logging.getLogger(__name__)

Status = WebhookEvent.Status

RETRYABLE = (Status.FAILED, Status.PENDING, Status.RETRYING)

# Rows locked and updated per transaction.
BATCH_SIZE = 500


@dataclass
class RetrySummary:
    """What `retry_events` did with the ids it was given."""

    # Set to pending and published (or to be published when the transaction commits).
    queued: list[str] = field(default_factory=list)
    # The broker refused the publish; the sweeper will enqueue these.
    broker_unavailable: list[str] = field(default_factory=list)
    skipped_succeeded: list[str] = field(default_factory=list)
    skipped_processing: list[str] = field(default_factory=list)
    # Locked by another transaction right now (a worker or a concurrent retry).
    skipped_busy: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for a person: '3 events queued for retry; 1 succeeded event skipped'."""
        parts = [f"{_n(len(self.queued))} queued for retry"]
        if self.broker_unavailable:
            parts[0] += (
                f" ({len(self.broker_unavailable)} not published: the broker is unreachable; "
                "the sweeper will enqueue them)"
            )
        if self.skipped_succeeded:
            parts.append(
                f"{_n(len(self.skipped_succeeded), 'succeeded event')} skipped "
                "(re-run them only on purpose)"
            )
        if self.skipped_processing:
            parts.append(
                f"{_n(len(self.skipped_processing), 'processing event')} skipped "
                "(a worker has them)"
            )
        if self.skipped_busy:
            parts.append(f"{_n(len(self.skipped_busy), 'locked event')} skipped (try again)")
        if self.missing:
            parts.append(f"{_n(len(self.missing), 'unknown id')}")
        return "; ".join(parts)


def _n(count: int, noun: str = "event") -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def retry_events(
    ids: Iterable[str],
    *,
    include_succeeded: bool = False,
    source: str = "",
    user: Any = None,
) -> RetrySummary:
    """Queue the events `ids` for a manual attempt; see the module docstring.

    Rows are claimed with `SELECT ... FOR UPDATE SKIP LOCKED`, so a retry never
    waits on (or races) a worker or another retry. Messages are published
    after the transaction commits; when this runs inside an outer transaction
    they go out when that one commits. Each queued event is announced first
    (`webhook_worker.signals.event_retried`, with `source` and `user`).
    """
    by = {"source": source, "user": user}
    wanted = list(dict.fromkeys(ids))
    summary = RetrySummary()
    allowed: set[str] = {*RETRYABLE, *([Status.SUCCEEDED] if include_succeeded else [])}
    for start in range(0, len(wanted), BATCH_SIZE):
        _retry_batch(wanted[start : start + BATCH_SIZE], allowed, summary, by)
    logger.info("manual retry: %s", summary.describe(), extra={"webhook_source": source})
    return summary


def _retry_batch(
    batch: list[str], allowed: set[str], summary: RetrySummary, by: dict[str, Any]
) -> None:
    with transaction.atomic(using=WebhookEvent.objects.db_for_write()):
        locked = dict(
            WebhookEvent.objects.select_for_update(skip_locked=True)
            .filter(pk__in=batch)
            .values_list("pk", "status")
        )
        unlocked = [pk for pk in batch if pk not in locked]
        existing = set(WebhookEvent.objects.filter(pk__in=unlocked).values_list("pk", flat=True))
        queue: list[tuple[str, str]] = []
        for pk in batch:
            status = locked.get(pk)
            if status is None:
                (summary.skipped_busy if pk in existing else summary.missing).append(pk)
            elif status == Status.PROCESSING:
                summary.skipped_processing.append(pk)
            elif status not in allowed:
                summary.skipped_succeeded.append(pk)
            else:
                queue.append((pk, status))
        ids = [pk for pk, _ in queue]
        WebhookEvent.objects.filter(pk__in=ids).update(
            status=Status.PENDING, due_at=timezone.now(), scheduled=False
        )
        types = dict(WebhookEvent.objects.filter(pk__in=ids).values_list("pk", "type"))
        summary.queued.extend(ids)
        transaction.on_commit(
            lambda: _enqueue([(pk, types[pk], status) for pk, status in queue], summary, by),
            using=WebhookEvent.objects.db_for_write(),
        )


def _enqueue(events: list[tuple[str, str, str]], summary: RetrySummary, by: dict[str, Any]) -> None:
    for pk, event_type, previous_status in events:
        event_retried.send_robust(
            WebhookEvent, event_id=pk, event_type=event_type, previous_status=previous_status, **by
        )
        if not enqueue_or_mark(pk, event_type, trigger=WebhookAttempt.Trigger.MANUAL):
            summary.broker_unavailable.append(pk)
