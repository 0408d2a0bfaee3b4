"""System checks for the Celery side: the traps that leave events waiting forever, quietly."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from celery import current_app
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from webhook_ingest.conf import webhook_settings
from webhook_ingest.exceptions import WebhookConfigurationError

from .celery import PROCESS_EVENT, RECONCILE, SWEEP

# Transports that redeliver a message left unacknowledged this long (kombu's default).
VISIBILITY_TRANSPORTS = {"redis", "rediss", "sqs", "redis+socket", "sentinel"}
DEFAULT_VISIBILITY_TIMEOUT = 3600
# Brokers that live inside one process: web and worker never share a message.
IN_PROCESS_TRANSPORTS = {"memory", "filesystem"}

CELERY_SETUP_HINT = (
    "Define the project's Celery app in <project>/celery.py as Celery's 'First steps "
    "with Django' shows, call webhook_worker.celery.configure_celery(app) there, and "
    "import the app in <project>/__init__.py (see the README, 'Use it in your project')."
)


def _uses_fallback_app() -> bool:
    """True when no Celery app was created for this project (Celery's own fallback is in use).

    Celery creates that fallback, named "default" and without the Django fixup
    that every app created with `Celery(...)` has, only when no other app exists.
    """
    return bool(current_app.main == "default" and not getattr(current_app, "fixups", None))


@register()
def check_celery(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if _uses_fallback_app():
        return [
            Error(
                "No Celery app is loaded for this Django project: accepted webhook events "
                "would be sent to Celery's default app (amqp://localhost) and stay pending.",
                hint=CELERY_SETUP_HINT,
                id="webhook_worker.E001",
            )
        ]
    conf = current_app.conf
    messages: list[CheckMessage] = []
    scheme = urlparse(str(conf.broker_url or "")).scheme
    if scheme in IN_PROCESS_TRANSPORTS and not settings.DEBUG:
        messages.append(
            Error(
                f"The Celery broker is {scheme}://, which web and worker processes do not "
                "share: accepted webhook events would never reach a worker.",
                hint="Set CELERY_BROKER_URL to a Redis or RabbitMQ server.",
                id="webhook_worker.E002",
            )
        )
    accepted = {str(c).split("/")[-1] for c in (conf.accept_content or ())}
    if "json" not in accepted:
        messages.append(
            Error(
                "CELERY_ACCEPT_CONTENT does not include JSON: workers would refuse every "
                f"{PROCESS_EVENT} message.",
                hint='Add "json" to CELERY_ACCEPT_CONTENT.',
                id="webhook_worker.E003",
            )
        )
    if scheme in VISIBILITY_TRANSPORTS:
        timeout = (conf.broker_transport_options or {}).get(
            "visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT
        )
        try:
            delay = webhook_settings.MAX_BROKER_DELAY
        except WebhookConfigurationError:
            delay = 0  # reported by webhook_ingest.E002
        if delay >= timeout:
            messages.append(
                Error(
                    f'STRIPE_WEBHOOKS["MAX_BROKER_DELAY"] ({delay:g}s) is not shorter than '
                    f"the broker's visibility timeout ({timeout}s): a delayed retry would be "
                    "redelivered before it is due.",
                    hint="Lower MAX_BROKER_DELAY (longer retries then wait in the database).",
                    id="webhook_worker.E004",
                )
            )
    if not any(
        isinstance(entry, dict) and entry.get("task") == SWEEP
        for entry in (conf.beat_schedule or {}).values()
    ):
        messages.append(
            Warning(
                f"The sweeper ({SWEEP}) is not in Celery beat's schedule: retries waiting "
                "in the database and events whose broker message was lost would never be "
                "enqueued.",
                hint="Call webhook_worker.celery.configure_celery(app) in the project's "
                "celery.py (it schedules the sweeper every minute), and run celery beat.",
                id="webhook_worker.W002",
            )
        )
    try:
        reconciled = [e.name for e in webhook_settings.ENDPOINTS.values() if e.reconcile_every]
    except WebhookConfigurationError:
        reconciled = []  # reported by webhook_ingest.E002
    if reconciled and not any(
        isinstance(entry, dict) and entry.get("task") == RECONCILE
        for entry in (conf.beat_schedule or {}).values()
    ):
        messages.append(
            Warning(
                f"RECONCILE_EVERY is set for {', '.join(reconciled)}, but {RECONCILE} is not "
                "in Celery beat's schedule: no reconciliation would run.",
                hint="Call webhook_worker.celery.configure_celery(app) in the project's "
                "celery.py, and run celery beat.",
                id="webhook_worker.W003",
            )
        )
    if conf.task_always_eager and not settings.DEBUG:
        messages.append(
            Warning(
                "CELERY_TASK_ALWAYS_EAGER is on outside DEBUG: webhook handlers run inside "
                "the request, with no retries and no isolation from Stripe's timeout.",
                hint="Turn eager mode off in production and run a Celery worker.",
                id="webhook_worker.W001",
            )
        )
    return messages
