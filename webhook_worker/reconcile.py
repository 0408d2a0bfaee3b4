"""Reconciliation: the backfill's scan, run by beat for each endpoint with `RECONCILE_EVERY`.

Each endpoint keeps one `EventScan` row (kind `reconciliation`) from run to
run. A run scans from its checkpoint (less OVERLAP, for events Stripe lists
a little late) up to SETTLE before now, records what is missing (source
`reconciliation`) and moves the checkpoint forward; a run that stopped
halfway is continued from its cursor by the next. The first run looks back
FIRST_LOOKBACK. An event Stripe failed to deliver is therefore recorded by
the first run that starts more than SETTLE after it was created: within
`RECONCILE_EVERY` + SETTLE + one beat tick, as long as the checkpoint is
younger than Stripe's 30 days.

The beat entry (`webhook_worker.reconcile`, every RECONCILE_TICK seconds,
scheduled by `configure_celery`) starts the runs that are due; it costs one
query when none is.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from webhook_ingest.conf import Endpoint, webhook_settings
from webhook_ingest.exceptions import MissingApiKey

from .backfill import ScanBusy, run_scan, scan_lock, window_start
from .models import EventScan

logger = logging.getLogger(__name__)

SETTLE = timedelta(minutes=1)
OVERLAP = timedelta(minutes=5)
FIRST_LOOKBACK = timedelta(days=3)

RECONCILIATION = EventScan.Kind.RECONCILIATION


def reconciled_endpoints() -> list[Endpoint]:
    return [e for e in webhook_settings.ENDPOINTS.values() if e.reconcile_every is not None]


def due_endpoints(now: datetime) -> list[Endpoint]:
    """The endpoints whose last reconciliation started at least RECONCILE_EVERY ago."""
    endpoints = reconciled_endpoints()
    if not endpoints:
        return []
    started = dict(
        EventScan.objects.filter(kind=RECONCILIATION, endpoint__in=[e.name for e in endpoints])
        .values_list("endpoint", "started_at")
    )  # fmt: skip
    return [
        e
        for e in endpoints
        if e.name not in started
        or now - started[e.name] >= timedelta(seconds=e.reconcile_every or 0)
    ]


def reconcile(endpoint: Endpoint, now: datetime | None = None) -> EventScan:
    """One run for `endpoint`; raises what the scan raised (the row says so too)."""
    now = now or timezone.now()
    with scan_lock(RECONCILIATION, endpoint.name):
        scan = EventScan.objects.filter(kind=RECONCILIATION, endpoint=endpoint.name).first()
        if scan is None:
            start = window_start(now - FIRST_LOOKBACK, now)
            scan = EventScan(
                kind=RECONCILIATION, endpoint=endpoint.name, since=start, checkpoint=start
            )
        elif not (scan.state == EventScan.State.INTERRUPTED and scan.cursor):
            start = window_start(scan.checkpoint - OVERLAP, now)
            scan.since = scan.checkpoint = start
            scan.cursor, scan.slice_end = "", None
        scan.found = scan.recorded = scan.already_present = scan.pages = 0
        scan.started_at = scan.updated_at = now
        scan.finished_at = None
        scan.save()
        return run_scan(scan, endpoint, now - SETTLE)


def run_due(now: datetime | None = None) -> int:
    """Run every due reconciliation, one endpoint after another; how many ran to the end."""
    now = now or timezone.now()
    finished = 0
    for endpoint in due_endpoints(now):
        try:
            scan = reconcile(endpoint, now)
        except ScanBusy:
            continue
        except MissingApiKey as exc:
            logger.error("reconciliation of endpoint %r cannot run: %s", endpoint.name, exc)
            _record_error(endpoint, now, str(exc))
            continue
        except Exception:
            logger.exception("reconciliation of endpoint %r stopped", endpoint.name)
            continue
        finished += 1
        if scan.recorded:
            logger.warning(
                "reconciliation of endpoint %r recorded %d event(s) that were never delivered",
                endpoint.name, scan.recorded,
            )  # fmt: skip
    return finished


def _record_error(endpoint: Endpoint, now: datetime, error: str) -> None:
    """Leave the error where health and metrics read it, the checkpoint unchanged."""
    start = window_start(now - FIRST_LOOKBACK, now)
    EventScan.objects.update_or_create(
        kind=RECONCILIATION,
        endpoint=endpoint.name,
        defaults={"state": EventScan.State.INTERRUPTED, "last_error": error, "updated_at": now},
        create_defaults={
            "since": start, "checkpoint": start, "started_at": now, "updated_at": now,
            "state": EventScan.State.INTERRUPTED, "last_error": error,
        },
    )  # fmt: skip


def status(now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Per reconciled endpoint: its checkpoint and its last run, for health and metrics."""
    now = now or timezone.now()
    endpoints = reconciled_endpoints()
    rows = {
        s.endpoint: s
        for s in EventScan.objects.filter(
            kind=RECONCILIATION, endpoint__in=[e.name for e in endpoints]
        )
    }
    report: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        scan = rows.get(endpoint.name)
        if scan is None:
            report[endpoint.name] = {"every_seconds": endpoint.reconcile_every, "last_run": None}
            continue
        report[endpoint.name] = {
            "every_seconds": endpoint.reconcile_every,
            "checkpoint": scan.checkpoint.isoformat(),
            "checkpoint_age_seconds": round((now - scan.checkpoint).total_seconds(), 3),
            "last_run": {
                "state": scan.state,
                "started_at": scan.started_at.isoformat(),
                "finished_at": scan.finished_at.isoformat() if scan.finished_at else None,
                "found": scan.found,
                "recorded": scan.recorded,
                "already_present": scan.already_present,
                "error": scan.last_error,
            },
        }
    return report
