"""System checks for the worker side: retries versus the broker, eager mode."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from webhook_ingest.exceptions import WebhookConfigurationError

# kombu's default for transports that redeliver unacked messages.
DEFAULT_VISIBILITY_TIMEOUT = 3600
VISIBILITY_TRANSPORTS = {"redis", "rediss", "sqs", "redis+socket", "sentinel"}
AMQP_TRANSPORTS = {"amqp", "amqps", "pyamqp", "librabbitmq"}
# RabbitMQ's default delivery acknowledgement timeout (30 minutes).
RABBITMQ_CONSUMER_TIMEOUT = 1800


@register()
def check_celery(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from celery import current_app

    from .retry import longest_delay

    conf = current_app.conf
    messages: list[CheckMessage] = []
    scheme = urlparse(str(conf.broker_url or "")).scheme
    try:
        longest = longest_delay()
    except WebhookConfigurationError:
        return []  # reported by webhook_ingest.E002
    if scheme in VISIBILITY_TRANSPORTS:
        options = conf.broker_transport_options or {}
        timeout = options.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT)
        if longest >= timeout:
            messages.append(
                Error(
                    f"The longest webhook retry delay ({longest:.0f}s with jitter) is not "
                    f"shorter than the broker visibility timeout ({timeout}s).",
                    hint=(
                        "A delayed retry message would be redelivered every visibility "
                        "timeout until it is due. Raise CELERY_BROKER_TRANSPORT_OPTIONS"
                        '["visibility_timeout"] above it, or shorten '
                        'STRIPE_WEBHOOKS["RETRY_SCHEDULE"].'
                    ),
                    id="webhook_worker.E001",
                )
            )
    if scheme in AMQP_TRANSPORTS and longest >= RABBITMQ_CONSUMER_TIMEOUT:
        messages.append(
            Warning(
                f"The longest webhook retry delay ({longest:.0f}s with jitter) exceeds "
                f"RabbitMQ's default consumer_timeout ({RABBITMQ_CONSUMER_TIMEOUT}s).",
                hint=(
                    "Workers hold delayed retries unacknowledged until they are due; "
                    "RabbitMQ closes the channel of a consumer that holds a message longer "
                    "than consumer_timeout. Raise consumer_timeout in rabbitmq.conf above "
                    'the longest delay, or shorten STRIPE_WEBHOOKS["RETRY_SCHEDULE"].'
                ),
                id="webhook_worker.W002",
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
