from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from django.apps import AppConfig
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


class DjStripeBridgeConfig(AppConfig):
    name = "webhook_worker.contrib.djstripe"
    # Not "djstripe": that is dj-stripe's own label.
    label = "webhooks_djstripe"
    verbose_name = "Stripe webhooks: dj-stripe sync"

    def ready(self) -> None:
        # The checks first: they name an unsupported dj-stripe. The receiver
        # imports dj-stripe's models, so it is imported once the registry is ready.
        from webhook_ingest.models import WebhookEvent
        from webhook_worker.signals import pre_handlers

        from .checks import check_djstripe_bridge

        checks.register(check_djstripe_bridge)

        try:
            from .sync import sync_event
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"webhook_worker.contrib.djstripe needs dj-stripe 2.10 or 2.11 ({installed()}): "
                f'pip install "django-queued-webhooks[djstripe]". ({exc})'
            ) from exc
        pre_handlers.connect(
            sync_event, sender=WebhookEvent, dispatch_uid="webhook_worker.contrib.djstripe"
        )


def installed() -> str:
    """dj-stripe's installed version, as a phrase."""
    try:
        return f"dj-stripe {version('dj-stripe')} is installed"
    except PackageNotFoundError:
        return "dj-stripe is not installed"
