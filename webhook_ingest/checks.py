"""System checks for what would otherwise fail at 3 a.m."""

from __future__ import annotations

from typing import Any

import stripe
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .conf import API_KEY_SETTING, DEFAULTS, SETTING_NAME, webhook_settings
from .exceptions import WebhookConfigurationError
from .models import WebhookEvent
from .signals import event_ready
from .stripe_api import supports_thin_events


@register(Tags.security, deploy=False)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error | Warning]:
    webhook_settings.reload()
    try:
        endpoints = webhook_settings.ENDPOINTS
        for key in DEFAULTS:
            getattr(webhook_settings, key)
    except WebhookConfigurationError as exc:
        return [
            Error(
                str(exc),
                hint=f"See the {SETTING_NAME} section of the README for the expected shape.",
                id="webhook_ingest.E002",
            )
        ]
    messages: list[Error | Warning] = []
    for endpoint in endpoints.values():
        messages.extend(_api_messages(endpoint))
        if endpoint.secrets:
            continue
        text = f"Stripe webhook endpoint {endpoint.name!r} has no signing secret."
        hint = (
            f'Set {SETTING_NAME}["ENDPOINTS"]["{endpoint.name}"]["SECRETS"] to the '
            "endpoint's whsec_... secret from the Stripe dashboard (the reference "
            "project reads STRIPE_WEBHOOK_SECRET); until then every delivery is refused."
        )
        if settings.DEBUG:
            messages.append(Warning(text, hint=hint, id="webhook_ingest.W001"))
        else:
            messages.append(Error(text, hint=hint, id="webhook_ingest.E001"))
    return messages


def _api_messages(endpoint: Any) -> list[Error | Warning]:
    """What a thin or reconciled endpoint needs: a stripe library that parses thin
    events, and an API key for the calls the library makes."""
    messages: list[Error | Warning] = []
    where = f'{SETTING_NAME}["ENDPOINTS"]["{endpoint.name}"]'
    if endpoint.is_thin and not supports_thin_events():
        messages.append(
            Error(
                f"Endpoint {endpoint.name!r} receives thin events, which stripe-python "
                f"{stripe.VERSION} cannot parse (StripeClient.parse_event_notification).",
                hint='Install stripe>=13, or remove "STYLE": "thin" from ' + where + ".",
                id="webhook_ingest.E004",
            )
        )
    needs_key = endpoint.is_thin or endpoint.reconcile_every is not None
    if needs_key and not endpoint.api_key:
        why = (
            "its handlers cannot fetch related objects"
            if endpoint.is_thin
            else ("it cannot be reconciled")
        )
        messages.append(
            Warning(
                f"Endpoint {endpoint.name!r} has no API key for calls to Stripe's API: {why}.",
                hint=f'Set {SETTING_NAME}["API_KEY"], {where}["API_KEY"] or the '
                f"{API_KEY_SETTING} setting (the reference project reads STRIPE_API_KEY).",
                id="webhook_ingest.W003",
            )
        )
    return messages


MIDDLEWARE_PATH = "webhook_ingest.middleware.WebhookMiddleware"


@register(deploy=False)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if MIDDLEWARE_PATH not in middleware or middleware.index(MIDDLEWARE_PATH) == 0:
        return []
    above = ", ".join(middleware[: middleware.index(MIDDLEWARE_PATH)])
    return [
        Warning(
            f"{MIDDLEWARE_PATH} is not first in MIDDLEWARE.",
            hint=f"Move it to the top: {above} still run(s) for every webhook delivery.",
            id="webhook_ingest.W002",
        )
    ]


@register()
def check_consumer(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if event_ready.has_listeners(WebhookEvent):
        return []
    return [
        Error(
            "Nothing processes the webhook events this project accepts: no receiver is "
            "connected to webhook_ingest.signals.event_ready.",
            hint=(
                'Add "webhook_worker" to INSTALLED_APPS (it enqueues each event for a '
                "Celery worker), or connect a receiver of your own."
            ),
            id="webhook_ingest.E003",
        )
    ]
