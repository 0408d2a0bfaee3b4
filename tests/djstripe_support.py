"""What the dj-stripe bridge's tests and bench/djstripe.py both set up: Stripe's
example objects for dj-stripe's sync, dj-stripe's own webhook endpoint, and
emptying dj-stripe's tables. Needs dj-stripe installed (.venv-djstripe-<version>).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.apps import apps
from django.db import connection
from djstripe.models import WebhookEndpoint

from webhook_worker.stripe_events import build_event

from .constants import SECRET

# The platform account dj-stripe's sync looks up (`GET /v1/account`).
ACCOUNT = {
    "id": "acct_1StandInPlatform",
    "object": "account",
    "type": "standard",
    "country": "US",
    "default_currency": "usd",
    "email": "owner@example.com",
    "business_profile": {"name": "Stand-in shop"},
    "settings": {"dashboard": {"display_name": "Stand-in shop"}},
}


def template(event_type: str) -> dict[str, Any]:
    """The example object an event of `event_type` carries."""
    return build_event(event_type)["data"]["object"]


def create_webhook_endpoint() -> WebhookEndpoint:
    """dj-stripe's own endpoint, `/stripe/webhook/<uuid>/`, verifying with the suite's secret."""
    endpoint: WebhookEndpoint = WebhookEndpoint.objects.create(
        id=f"we_{uuid.uuid4().hex[:24]}",
        livemode=False,
        api_version="2025-06-30.basil",
        enabled_events=["*"],
        secret=SECRET,
        status="enabled",
        url="https://shop.example.com/stripe/webhook/",
    )
    return endpoint


def empty_djstripe_tables() -> None:
    tables = [m._meta.db_table for m in apps.get_app_config("djstripe").get_models()]
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
