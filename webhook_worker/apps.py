from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class WebhookWorkerConfig(AppConfig):
    name = "webhook_worker"
    verbose_name = "Stripe webhook processing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The system checks, the receiver counting ingest rejections, and the
        # publisher: loaded with the app rather than by the first webhook,
        # whose response would wait for the import (~50 ms); its thread still
        # starts on first use.
        from . import checks, metrics, publisher  # noqa: F401

        # Import every installed app's webhooks.py, in web and worker processes
        # alike, so handlers are registered before the first event arrives.
        autodiscover_modules("webhooks")
