"""`manage.py webhooks_prune`: delete old finished events."""

from __future__ import annotations

from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from webhook_ingest.models import WebhookEvent
from webhook_worker.prune import BATCH_SIZE, PRUNABLE, prunable, prune_events


class Command(BaseCommand):
    help = (
        "Delete events received more than --older-than days ago, with their attempt "
        "history. Only succeeded events unless --status says otherwise (failed events "
        "wait for a person; unfinished events are never pruned). Deletes in batches, "
        "each in its own short transaction, so ingest and workers are never blocked."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            required=True,
            metavar="DAYS",
            help="prune events received more than this many days ago",
        )
        parser.add_argument(
            "--status",
            action="append",
            choices=PRUNABLE,
            help="status to prune; repeat for several (default: succeeded)",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=BATCH_SIZE,
            help=f"events deleted per transaction (default {BATCH_SIZE})",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than"]
        if days < 0:
            raise CommandError("--older-than must be 0 or more days.")
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        statuses = prunable(options["status"] or [WebhookEvent.Status.SUCCEEDED])
        cutoff = timezone.now() - timedelta(days=days)
        what = " or ".join(sorted(statuses))
        if options["dry_run"]:
            count = WebhookEvent.objects.filter(status__in=statuses, received_at__lt=cutoff).count()
            self.stdout.write(
                f"Dry run: {count} {what} event(s) received before {cutoff:%Y-%m-%d %H:%M} UTC "
                "would be deleted."
            )
            return
        verbose = options["verbosity"] > 1
        deleted = prune_events(
            cutoff,
            statuses,
            batch_size=options["batch_size"],
            progress=(lambda n: self.stdout.write(f"  deleted {n}…")) if verbose else None,
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Deleted {deleted} {what} event(s) received before "
                f"{cutoff:%Y-%m-%d %H:%M} UTC, with their attempts."
            )
        )
