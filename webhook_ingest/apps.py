from __future__ import annotations

from django.apps import AppConfig


class WebhookIngestConfig(AppConfig):
    name = "webhook_ingest"
    verbose_name = "Stripe webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
