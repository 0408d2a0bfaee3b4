"""`manage.py webhooks_backfill`: record events Stripe's Events API has and the database lacks."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import datetime, timedelta
from typing import Any

import stripe
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from webhook_ingest.conf import Endpoint, webhook_settings
from webhook_ingest.exceptions import MissingApiKey
from webhook_ingest.parsing import EVENT_TYPE_RE
from webhook_ingest.stripe_api import api_client
from webhook_worker.backfill import (
    PageReport,
    ScanBusy,
    run_scan,
    scan_lock,
    window_start,
)
from webhook_worker.models import EventScan

DEFAULT_HOURS = 72  # Stripe retries a failed delivery for three days


def parse_iso(value: str) -> datetime:
    """An ISO 8601 datetime with an offset (`Z` or `+01:00`); ValueError otherwise."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(value)
    return moment


class Command(BaseCommand):
    help = (
        "Record the events Stripe's Events API lists for an endpoint that are not stored "
        "yet (GET /v1/events for a snapshot endpoint, /v2/core/events for a thin one), and "
        "enqueue them: events missed while the endpoint was down or its secret was wrong. "
        "Events already stored are counted and left alone. Progress is saved after every "
        "page: run the same command again after an interruption and it resumes. Stripe "
        "keeps events for 30 days."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--endpoint",
            default="default",
            metavar="NAME",
            help="the endpoint the events belong to; its style picks the API (default: default)",
        )
        window = parser.add_mutually_exclusive_group()
        window.add_argument(
            "--since",
            metavar="ISO",
            help="events created at or after this ISO 8601 time with an offset "
            "(2025-01-31T00:00:00Z)",
        )
        window.add_argument(
            "--hours",
            type=float,
            metavar="N",
            help=f"events created in the last N hours (default: {DEFAULT_HOURS})",
        )
        parser.add_argument(
            "--type",
            metavar="PREFIX",
            default="",
            help="only this type or dotted prefix: invoice is invoice.*, not invoiceitem.*",
        )
        parser.add_argument(
            "--failed-only",
            action="store_true",
            help="only events some delivery of which failed (delivery_success=false; v1 only)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="list and count; record and enqueue nothing",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.show_pages = options["verbosity"] >= 1
        endpoint = self._endpoint(options["endpoint"], options["failed_only"])
        prefix: str = options["type"]
        if prefix and not EVENT_TYPE_RE.fullmatch(prefix):
            raise CommandError(f"--type {prefix!r} is not an event type or dotted prefix.")
        now = timezone.now()
        since = self._since(options, now)
        start = window_start(since, now)
        if start > since:
            self.stdout.write(
                f"Stripe keeps events for 30 days: scanning from {start:%Y-%m-%d %H:%M:%S}Z."
            )
        try:
            api_client(endpoint)
        except MissingApiKey as exc:
            raise CommandError(str(exc)) from None
        if options["dry_run"]:
            scan = EventScan(
                kind=EventScan.Kind.BACKFILL, endpoint=endpoint.name, type_prefix=prefix,
                failed_only=options["failed_only"], since=start, checkpoint=start,
                started_at=now, updated_at=now,
            )  # fmt: skip
            self._run(scan, endpoint, now, dry_run=True)
            return
        try:
            with scan_lock(EventScan.Kind.BACKFILL, endpoint.name):
                scan = self._resume_or_start(endpoint, prefix, options["failed_only"], start, now)
                self._run(scan, endpoint, now, dry_run=False)
        except ScanBusy as exc:
            raise CommandError(f"{exc}; try again once it has finished.") from None

    def _endpoint(self, name: str, failed_only: bool) -> Endpoint:
        endpoint = webhook_settings.endpoint(name)
        if endpoint is None:
            known = ", ".join(sorted(webhook_settings.ENDPOINTS))
            raise CommandError(f"No endpoint named {name!r}; configured: {known}.")
        if endpoint.is_thin and failed_only:
            raise CommandError(
                "--failed-only asks for delivery_success=false, which only the v1 Events API "
                f"has; endpoint {name!r} is thin (v2). Run without it: events already stored "
                "are counted as already present and left alone."
            )
        return endpoint

    def _since(self, options: dict[str, Any], now: datetime) -> datetime:
        if options["since"]:
            try:
                return parse_iso(options["since"])
            except ValueError:
                raise CommandError(
                    f"--since {options['since']!r} is not an ISO 8601 time with an offset "
                    "(e.g. 2025-01-31T00:00:00Z or 2025-01-31T01:00:00+01:00)."
                ) from None
        hours = DEFAULT_HOURS if options["hours"] is None else options["hours"]
        if hours <= 0:
            raise CommandError("--hours must be positive.")
        return now - timedelta(hours=hours)

    def _resume_or_start(
        self, endpoint: Endpoint, prefix: str, failed_only: bool, start: datetime, now: datetime
    ) -> EventScan:
        """The interrupted backfill with the same filters whose window holds `start`, or a new one.

        It is continued from its checkpoint: everything before that was
        recorded, so whatever is left of `start`'s window is all there is to do.
        """
        interrupted = (
            EventScan.objects.filter(
                kind=EventScan.Kind.BACKFILL,
                endpoint=endpoint.name,
                type_prefix=prefix,
                failed_only=failed_only,
                since__lte=start,
            )
            .exclude(state=EventScan.State.FINISHED)
            .order_by("-started_at")
            .first()
        )
        # It covers `start` if its scan had reached the slice holding it.
        if interrupted is not None and start <= (interrupted.slice_end or interrupted.checkpoint):
            self.stdout.write(
                f"Resuming the backfill started {interrupted.started_at:%Y-%m-%d %H:%M:%S}Z "
                f"from its checkpoint: events created from "
                f"{interrupted.checkpoint:%Y-%m-%d %H:%M:%S}Z on."
            )
            return interrupted
        return EventScan.objects.create(
            kind=EventScan.Kind.BACKFILL, endpoint=endpoint.name, type_prefix=prefix,
            failed_only=failed_only, since=start, checkpoint=start, started_at=now, updated_at=now,
        )  # fmt: skip

    def _run(self, scan: EventScan, endpoint: Endpoint, now: datetime, dry_run: bool) -> None:
        before = (scan.found, scan.recorded, scan.already_present)
        try:
            run_scan(scan, endpoint, now, dry_run=dry_run, progress=self._progress)
        except (stripe.StripeError, KeyboardInterrupt) as exc:
            self._summary(scan, before, dry_run)
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else scan.last_error
            raise CommandError(
                f"Stopped ({reason}) with the checkpoint at "
                f"{scan.checkpoint:%Y-%m-%d %H:%M:%S}Z; run the same command again to resume."
            ) from None
        self._summary(scan, before, dry_run)

    def _progress(self, scan: EventScan, page: PageReport) -> None:
        if not self.show_pages:
            return
        span = ""
        if page.newest is not None and page.oldest is not None:
            span = f" created {page.oldest:%Y-%m-%d %H:%M:%S} to {page.newest:%H:%M:%S}"
        self.stdout.write(
            f"page {page.number}: {page.found} event(s){span}; recorded {page.recorded}, "
            f"already present {page.already_present}"
        )

    def _summary(self, scan: EventScan, before: tuple[int, int, int], dry_run: bool) -> None:
        found, recorded, present = (
            scan.found - before[0], scan.recorded - before[1], scan.already_present - before[2]
        )  # fmt: skip
        line = f"found {found}, recorded {recorded}, already present {present}"
        if dry_run:
            line += f" (dry run: {found - present} would be recorded; nothing was changed)"
        self.stdout.write(self.style.SUCCESS(line))
