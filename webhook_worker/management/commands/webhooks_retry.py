"""`manage.py webhooks_retry`: queue events for a manual attempt."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import datetime, time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from webhook_ingest.models import WebhookEvent
from webhook_worker.actions import retry_events


def parse_since(value: str) -> datetime:
    """An ISO date or datetime; naive values are in the current time zone."""
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise ValueError(value)
        moment = datetime.combine(day, time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def type_filter(prefix: str) -> Q:
    """Types matching `prefix` by dotted segments, as handlers match: customer -> customer.*."""
    return Q(type=prefix) | Q(type__startswith=f"{prefix}.")


class Command(BaseCommand):
    help = (
        "Queue webhook events for a manual attempt: the given event ids, or every "
        "failed event (--failed, narrowed by --since and --type). Failed, pending and "
        "retrying events are retried; succeeded events only with --include-succeeded; "
        "processing events are left to their worker. Attempts keep counting, so an "
        "event that used all its attempts gets one more and is failed again if it fails."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("ids", nargs="*", metavar="EVENT_ID", help="Stripe event ids (evt_…)")
        parser.add_argument(
            "--failed", action="store_true", help="retry every failed (dead-lettered) event"
        )
        parser.add_argument(
            "--since",
            metavar="ISO",
            help="with --failed: only events received at or after this date or datetime",
        )
        parser.add_argument(
            "--type",
            metavar="PREFIX",
            help="with --failed: only this type or type prefix (customer, invoice.paid, …)",
        )
        parser.add_argument(
            "--include-succeeded",
            action="store_true",
            help="also re-run succeeded events among the given ids (their handlers run again)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="show what would be retried, change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ids: list[str] = options["ids"]
        if bool(ids) == bool(options["failed"]):
            raise CommandError("Give event ids, or --failed (not both).")
        if ids and (options["since"] or options["type"]):
            raise CommandError("--since and --type go with --failed.")
        if options["failed"]:
            events = WebhookEvent.objects.filter(status=WebhookEvent.Status.FAILED)
            if options["since"]:
                try:
                    events = events.filter(received_at__gte=parse_since(options["since"]))
                except ValueError:
                    raise CommandError(
                        f"--since {options['since']!r} is not an ISO date or datetime "
                        "(e.g. 2025-01-31 or 2025-01-31T12:00:00Z)."
                    ) from None
            if options["type"]:
                events = events.filter(type_filter(options["type"]))
            ids = list(events.order_by("received_at").values_list("pk", flat=True))
            if not ids:
                self.stdout.write("No failed events match.")
                return
        if options["dry_run"]:
            found = dict(WebhookEvent.objects.filter(pk__in=ids).values_list("pk", "status"))
            for pk in ids:
                self.stdout.write(f"{pk}  {found.get(pk, 'unknown id')}")
            self.stdout.write(f"Dry run: {len(ids)} event(s) selected, nothing changed.")
            unknown = [pk for pk in ids if pk not in found]
            if unknown:
                raise CommandError(f"{len(unknown)} unknown event id(s): {', '.join(unknown[:10])}")
            return
        summary = retry_events(
            ids, include_succeeded=options["include_succeeded"], source="command"
        )
        for pk in summary.queued:
            self.stdout.write(f"queued   {pk}")
        for label, pks in (
            ("succeeded, skipped (use --include-succeeded)", summary.skipped_succeeded),
            ("processing, skipped", summary.skipped_processing),
            ("locked, skipped", summary.skipped_busy),
            ("unknown id", summary.missing),
        ):
            for pk in pks:
                self.stdout.write(f"{pk}: {label}")
        not_queued = len(ids) - len(summary.queued) + len(summary.broker_unavailable)
        if not_queued:
            # Not what was asked: exit 1, so that scripts notice.
            raise CommandError(summary.describe().capitalize() + ".")
        self.stdout.write(self.style.SUCCESS(summary.describe().capitalize() + "."))
