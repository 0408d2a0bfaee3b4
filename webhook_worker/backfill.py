"""Recover events from Stripe's Events API: what `webhooks_backfill` and reconciliation run.

A scan walks a window of `created` times forward, one slice at a time
(events listed newest first inside a slice, 100 a page). Each event that
matches is recorded through the same idempotent insert as a delivery
(`WebhookEvent.objects.record`), marked with its source (`backfill` or
`reconciliation`: it carries no signature), and enqueued; one already stored
is counted as already present and left alone.

Progress is saved in an `EventScan` row after every page: the checkpoint
(every event created before it is recorded), and within the slice being
listed, the cursor of the next page. A scan that stops (Ctrl-C, an API error,
a killed process) is resumed from there by the next one. Slices start at an
hour and double while they hold at most a page, so a quiet month costs a few
dozen requests.

Scans of one endpoint and kind take a Postgres advisory lock, so two never
run at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connections
from django.utils import timezone

from webhook_ingest.conf import Endpoint
from webhook_ingest.exceptions import InvalidBody
from webhook_ingest.models import WebhookEvent
from webhook_ingest.parsing import parse_event
from webhook_ingest.stripe_api import api_client
from webhook_ingest.thin import parse_thin_event

from .enqueue import enqueue_or_mark
from .events_api import Filters, Page, list_page
from .models import EventScan
from .observability import log_fields
from .stripe_events import encode_event

logger = logging.getLogger(__name__)

# Stripe keeps events this long; older ones cannot be listed.
RETENTION = timedelta(days=30)
FIRST_SLICE = timedelta(hours=1)
LONGEST_SLICE = timedelta(days=7)
# "WHK4": a scan's lock, with the hash of its kind and endpoint.
SCAN_LOCK = f"SELECT pg_try_advisory_lock({0x57484B34}::int4, hashtext(%s))"
SCAN_UNLOCK = f"SELECT pg_advisory_unlock({0x57484B34}::int4, hashtext(%s))"


class ScanBusy(Exception):
    """Another scan of this endpoint and kind is running."""


@dataclass(frozen=True)
class PageReport:
    """What one page held, for progress lines."""

    number: int
    newest: datetime | None
    oldest: datetime | None
    found: int
    recorded: int
    already_present: int


Progress = Callable[[EventScan, PageReport], None]


@contextmanager
def scan_lock(kind: str, endpoint: str) -> Iterator[None]:
    """Hold the scan lock of (kind, endpoint) for the block; ScanBusy if another holds it."""
    key = f"{kind}:{endpoint}"
    with connections[WebhookEvent.objects.db_for_write()].cursor() as cursor:
        cursor.execute(SCAN_LOCK, [key])
        if not cursor.fetchone()[0]:
            raise ScanBusy(f"another {kind} of endpoint {endpoint!r} is running")
        try:
            yield
        finally:
            cursor.execute(SCAN_UNLOCK, [key])


def run_scan(
    scan: EventScan,
    endpoint: Endpoint,
    until: datetime,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> EventScan:
    """Scan from the row's checkpoint (and cursor) up to `until`, saving progress as it goes.

    Raises what the API or the database raised; the row then keeps the
    checkpoint reached, and its state says `interrupted`. A dry run's row is
    not saved (nor is anything recorded).
    """
    client = api_client(endpoint)
    filters = Filters(endpoint.is_thin, scan.type_prefix, scan.failed_only)
    source = scan.kind  # backfill | reconciliation, as WebhookEvent.Source names them
    _save(scan, state=EventScan.State.RUNNING, last_error="")
    slice_length = FIRST_SLICE
    try:
        while scan.checkpoint < until:
            end = scan.slice_end or min(scan.checkpoint + slice_length, until)
            _save(scan, slice_end=end)
            pages_before = scan.pages
            while True:
                page = list_page(client, filters, scan.checkpoint, end, scan.cursor)
                report = _take(scan, page, endpoint, filters, source, dry_run)
                if progress is not None:
                    progress(scan, report)
                if not page.next_cursor:
                    break
                scan.cursor = page.next_cursor
                _save(scan)
            if scan.pages - pages_before <= 1 and slice_length < LONGEST_SLICE:
                slice_length *= 2
            scan.checkpoint, scan.cursor, scan.slice_end = end, "", None
            _save(scan)
    except (Exception, KeyboardInterrupt) as exc:
        _save(scan, state=EventScan.State.INTERRUPTED, last_error=_describe(exc))
        raise
    _save(scan, state=EventScan.State.FINISHED, finished_at=timezone.now())
    return scan


def _take(
    scan: EventScan,
    page: Page,
    endpoint: Endpoint,
    filters: Filters,
    source: str,
    dry_run: bool,
) -> PageReport:
    """Record (or, in a dry run, look up) the page's matching events; count them on the row."""
    wanted = [e for e in page.events if filters.matches(e)]
    parsed = []
    for event in wanted:
        body = encode_event(event)
        try:
            parsed.append((parse_thin_event(event) if filters.thin else parse_event(body), body))
        except InvalidBody as exc:
            fields = log_fields(None, None, event_id=event.get("id"), event_type=event.get("type"))
            logger.warning(
                "%s: skipped event %r: %s", source, event.get("id"), exc.detail, extra=fields
            )
    recorded = present = 0
    if dry_run:
        stored = set(
            WebhookEvent.objects.filter(pk__in=[p.id for p, _ in parsed]).values_list(
                "pk", flat=True
            )
        )
        present = len(stored)
    else:
        for item, body in parsed:
            if WebhookEvent.objects.record(item, body, endpoint.name, source=source):
                recorded += 1
                enqueue_or_mark(item.id, item.type, trigger=source)
            else:
                present += 1
    scan.pages += 1
    scan.found += len(parsed)
    scan.recorded += recorded
    scan.already_present += present
    times = [p.created for p, _ in parsed]
    return PageReport(
        scan.pages, max(times, default=None), min(times, default=None),
        len(parsed), recorded, present,
    )  # fmt: skip


def _save(scan: EventScan, **changes: Any) -> None:
    """Change the row, and store it unless it is a dry run's (never saved)."""
    for name, value in changes.items():
        setattr(scan, name, value)
    scan.updated_at = timezone.now()
    if scan.pk is not None:
        scan.save()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:2000]


def window_start(since: datetime, now: datetime) -> datetime:
    """`since`, moved up to the oldest time Stripe still lists events from, whole seconds."""
    oldest = now - RETENTION + timedelta(minutes=5)
    return max(since, oldest).replace(microsecond=0)
