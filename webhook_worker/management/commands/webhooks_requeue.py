"""`manage.py webhooks_requeue`: run the sweeper once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from webhook_ingest.conf import webhook_settings
from webhook_worker import sweeper


class Command(BaseCommand):
    help = (
        "Run the sweeper once: re-enqueue pending, retrying and processing events more "
        "than REQUEUE_AFTER seconds past due (lost broker messages, dead workers). "
        "Safe to run while beat runs it too: each stale event is enqueued once."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        stale = sweeper.stale_events().count()
        count = sweeper.requeue_stale()
        after = webhook_settings.REQUEUE_AFTER
        if count:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Re-enqueued {count} stale event(s) (over {after:g}s past due)."
                )
            )
        else:
            self.stdout.write(f"No stale events (none over {after:g}s past due).")
        if stale > count:
            self.stdout.write(
                self.style.WARNING(
                    f"{stale - count} stale event(s) were not enqueued: another sweeper "
                    "had them, or the broker is unreachable."
                )
            )
