"""`/webhooks/metrics` in Prometheus' text format: the database figures of
`metrics.snapshot()` at scrape time, plus the ingest rejections counted in
the web processes (across processes with PROMETHEUS_MULTIPROC_DIR)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime

from django.db import DatabaseError
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from webhook_ingest.models import WebhookEvent

from .metrics import MULTIPROCESS_ENV, REJECTIONS, Snapshot, broker_reachable, snapshot
from .models import WebhookAttempt


class DatabaseCollector:
    """Collects the database figures at scrape time."""

    def __init__(self, broker: bool) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        try:
            snap: Snapshot | None = snapshot()
        except DatabaseError:
            snap = None
        up = GaugeMetricFamily(
            "webhooks_up",
            "1 if the component is reachable from this web process.",
            labels=["component"],
        )
        up.add_metric(["database"], 0 if snap is None else 1)
        up.add_metric(["broker"], 1 if self.broker else 0)
        yield up
        if snap is None:
            return
        events = GaugeMetricFamily(
            "webhooks_events",
            "Stored events by status and type category (the type's first segment).",
            labels=["status", "category"],
        )
        for (status, category), n in sorted(snap.events.items()):
            events.add_metric([status, category], n)
        yield events
        totals = GaugeMetricFamily(
            "webhooks_events_by_status", "Stored events by status.", labels=["status"]
        )
        for status, n in snap.by_status().items():
            totals.add_metric([status], n)
        yield totals
        attempts = GaugeMetricFamily(
            "webhooks_attempts",
            "Recorded attempts by outcome (running, succeeded, retry, failed, lost) and trigger.",
            labels=["outcome", "trigger"],
        )
        for (outcome, trigger), n in sorted(snap.attempts.items()):
            attempts.add_metric([outcome, trigger], n)
        yield attempts
        failures = GaugeMetricFamily(
            "webhooks_attempt_failures",
            "Recorded attempts that failed (outcome retry, failed or lost).",
        )
        failures.add_metric(
            [],
            sum(n for (outcome, _), n in snap.attempts.items() if outcome in FAILED_OUTCOMES),
        )
        yield failures
        age = GaugeMetricFamily(
            "webhooks_oldest_unfinished_age_seconds",
            "Age (since received) of the oldest pending, processing or retrying event; 0 if none.",
            labels=["status"],
        )
        for status in WebhookEvent.UNFINISHED:
            age.add_metric([status], snap.oldest_age.get(status, 0.0))
        yield age
        stale = GaugeMetricFamily(
            "webhooks_stale_events",
            "Unfinished events more than REQUEUE_AFTER past due: the sweeper's backlog.",
        )
        stale.add_metric([], snap.stale)
        yield stale
        yield from _origin_and_skip_metrics(snap)
        yield from _reconciliation_metrics(snap)


def _origin_and_skip_metrics(snap: Snapshot) -> Iterator[Metric]:
    origins = GaugeMetricFamily(
        "webhooks_events_by_origin",
        "Stored events by payload style (snapshot, thin) and source (delivery, backfill, "
        "reconciliation).",
        labels=["style", "source"],
    )
    for (style, source), n in sorted(snap.origins.items()):
        origins.add_metric([style, source], n)
    yield origins
    skips = GaugeMetricFamily(
        "webhooks_skipped_attempts",
        "Recorded attempts that skipped handlers, by reason (superseded, twin).",
        labels=["reason"],
    )
    for reason in (r for r in WebhookAttempt.Skip.values if r):
        skips.add_metric([reason], snap.skips.get(reason, 0))
    yield skips


def _reconciliation_metrics(snap: Snapshot) -> Iterator[Metric]:
    if not snap.reconciliation:
        return
    age = GaugeMetricFamily(
        "webhooks_reconcile_checkpoint_age_seconds",
        "Age of the reconciliation checkpoint: every event created before it was recorded.",
        labels=["endpoint"],
    )
    ok = GaugeMetricFamily(
        "webhooks_reconcile_last_run_ok",
        "1 if the endpoint's last reconciliation run finished, 0 if it stopped or never ran.",
        labels=["endpoint"],
    )
    started = GaugeMetricFamily(
        "webhooks_reconcile_last_run_timestamp_seconds",
        "Unix time the endpoint's last reconciliation run started.",
        labels=["endpoint"],
    )
    counts = GaugeMetricFamily(
        "webhooks_reconcile_last_run_events",
        "Events the last reconciliation run found, recorded (missing until then) and found "
        "already present.",
        labels=["endpoint", "count"],
    )
    for name, report in sorted(snap.reconciliation.items()):
        run = report.get("last_run")
        ok.add_metric([name], 1 if run and run["state"] == "finished" and not run["error"] else 0)
        if run is None:
            continue
        age.add_metric([name], report["checkpoint_age_seconds"])
        started.add_metric([name], datetime.fromisoformat(run["started_at"]).timestamp())
        for key in ("found", "recorded", "already_present"):
            counts.add_metric([name, key], run[key])
    yield from (age, ok, started, counts)


FAILED_OUTCOMES = (
    WebhookAttempt.Outcome.RETRY,
    WebhookAttempt.Outcome.FAILED,
    WebhookAttempt.Outcome.LOST,
)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROCESS_ENV))


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition and its content type."""
    registry = CollectorRegistry()
    if multiprocess_enabled():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(REJECTIONS)
    registry.register(DatabaseCollector(broker=broker_reachable()))
    return generate_latest(registry), CONTENT_TYPE_LATEST
