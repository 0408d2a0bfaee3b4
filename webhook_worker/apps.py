from __future__ import annotations

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules


class WebhookWorkerConfig(AppConfig):
    name = "webhook_worker"
    verbose_name = "Stripe webhook processing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Modules that need the app registry, imported once it is ready:
        # checks and metrics register themselves (system checks, the receiver
        # counting ingest rejections), tasks registers the Celery tasks in web
        # processes too, and the publisher takes the events ingest accepts.
        from webhook_ingest.models import WebhookEvent
        from webhook_ingest.signals import event_ready

        from . import checks, metrics, tasks  # noqa: F401
        from .publisher import enqueue_accepted

        event_ready.connect(
            enqueue_accepted, sender=WebhookEvent, dispatch_uid="webhook_worker.enqueue"
        )
        # Import every installed app's webhooks.py, in web and worker processes
        # alike, so handlers are registered before the first event arrives.
        autodiscover_modules("webhooks")
