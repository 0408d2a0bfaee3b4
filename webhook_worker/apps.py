from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class WebhookWorkerConfig(AppConfig):
    name = "webhook_worker"
    verbose_name = "Stripe webhook processing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks, and the receiver counting ingest rejections.
        from . import checks, metrics  # noqa: F401

        # Import every installed app's webhooks.py, in web and worker processes
        # alike, so handlers are registered before the first event arrives.
        autodiscover_modules("webhooks")
