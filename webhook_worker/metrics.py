"""Figures for `/webhooks/health/` and `/webhooks/metrics`.

Two kinds:

- From the database, read at scrape time: events by status and type
  category and attempts by outcome and trigger (exact counts, kept by
  triggers in `EventCount` and `AttemptCount`), the age of the oldest
  unfinished event per status, and how many events are overdue for the
  sweeper. None of them reads the events table in full, so a scrape costs
  the same however many events are stored. The database is
  the truth, so every web process reports the same figures and nothing is
  lost when a process restarts.
- Ingest rejections, counted in the web processes as they happen
  (`webhook_ingest.signals.delivery_rejected`). With several processes
  (gunicorn workers) set `PROMETHEUS_MULTIPROC_DIR` to an empty directory
  before they start: each process writes its counts there and a scrape
  adds them up. Without it, each process counts for itself and a scrape
  shows only the process that answered.

Neither exposes payloads, ids or anything a sender controls beyond the
configured endpoint names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from celery import current_app
from django.db.models import Sum
from django.dispatch import receiver
from django.utils import timezone
from prometheus_client import Counter

from webhook_ingest import counts
from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import WebhookEvent
from webhook_ingest.signals import delivery_rejected

from . import reconcile
from .models import AttemptCount
from .sweeper import stale_events

logger = logging.getLogger(__name__)

Status = WebhookEvent.Status

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Not in the default registry: each scrape builds its own (see `render`).
REJECTIONS = Counter(
    "webhooks_ingest_rejections",
    "Webhook deliveries refused by the ingest view, by endpoint and reason.",
    ["endpoint", "reason"],
    registry=None,
)

UNKNOWN_ENDPOINT = "(unknown)"


@receiver(delivery_rejected, dispatch_uid="webhook_worker.metrics.count_rejection")
def count_rejection(sender: Any, endpoint: str, reason: str, **kwargs: Any) -> None:
    # The endpoint comes from the URL: only configured names become label
    # values, or anyone could grow the series without bound.
    try:
        if webhook_settings.endpoint(endpoint) is None:
            endpoint = UNKNOWN_ENDPOINT
        REJECTIONS.labels(endpoint=endpoint, reason=reason).inc()
    except Exception:  # counting must never turn a 4xx answer into a 500
        logger.exception("could not count a rejected delivery")


@dataclass
class Snapshot:
    """The database-derived figures at one moment."""

    # (status, category) -> events
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    # (style, source) -> events
    origins: dict[tuple[str, str], int] = field(default_factory=dict)
    # (outcome, trigger) -> attempts
    attempts: dict[tuple[str, str], int] = field(default_factory=dict)
    # why handlers were skipped (superseded, twin) -> attempts
    skips: dict[str, int] = field(default_factory=dict)
    # reconciled endpoint -> its checkpoint and last run (reconcile.status)
    reconciliation: dict[str, dict[str, Any]] = field(default_factory=dict)
    # unfinished status -> age in seconds of its oldest event (by received_at)
    oldest_age: dict[str, float] = field(default_factory=dict)
    stale: int = 0

    def by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(Status.values, 0)
        for (status, _), n in self.events.items():
            counts[status] = counts.get(status, 0) + n
        return counts

    @property
    def oldest_unfinished_age(self) -> float | None:
        return max(self.oldest_age.values(), default=None)


def snapshot(with_attempts: bool = True) -> Snapshot:
    """Read the figures; raises DatabaseError when the database is unreachable.

    Counts come from the count tables the triggers keep, ages from one index
    probe per unfinished status: no figure reads the events or attempts
    tables in full.
    """
    now = timezone.now()
    snap = Snapshot()
    for (status, event_type, _, style, source), n in counts.by_key().items():
        key = (status, event_type.split(".", 1)[0])
        snap.events[key] = snap.events.get(key, 0) + n
        snap.origins[(style, source)] = snap.origins.get((style, source), 0) + n
    for status, first in WebhookEvent.objects.oldest_unfinished().items():
        snap.oldest_age[status] = max(0.0, (now - first).total_seconds())
    snap.stale = stale_events(now).count()
    if with_attempts:
        attempts = (
            AttemptCount.objects.values_list("outcome", "trigger", "skipped")
            .annotate(total=Sum("n"))
            .filter(total__gt=0)
        )
        for outcome, trigger, skipped, n in attempts:
            snap.attempts[(outcome, trigger)] = snap.attempts.get((outcome, trigger), 0) + n
            if skipped:
                snap.skips[skipped] = snap.skips.get(skipped, 0) + n
    snap.reconciliation = reconcile.status(now)
    return snap


def broker_reachable(timeout: int = 2) -> bool:
    """Whether the broker of the project's Celery app (the one events are enqueued on) answers."""
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception:
        return False
    return True
