"""`manage.py webhooks_requeue`: run the sweeper once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webhook_ingest.conf import webhook_settings
from webhook_worker import sweeper


class Command(BaseCommand):
    help = (
        "Run the sweeper once: publish retries waiting in the database that are due, and "
        "re-enqueue pending, retrying and processing events more than REQUEUE_AFTER "
        "seconds past due (lost broker messages, dead workers). Safe to run while beat "
        "runs it too: each event is enqueued once. Exits 1 if the broker is unreachable."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = sweeper.sweep()
        after = webhook_settings.REQUEUE_AFTER
        self.stdout.write(
            f"Published {result.retries} due retr{'y' if result.retries == 1 else 'ies'}; "
            f"re-enqueued {result.stale} stale event(s) (over {after:g}s past due)."
        )
        if result.broker_unreachable:
            raise CommandError(
                "The broker is unreachable: the events not enqueued are marked for the "
                "sweeper's next run."
            )
