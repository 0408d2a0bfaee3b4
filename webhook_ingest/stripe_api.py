"""The library's calls to Stripe's API: one `StripeClient` per key and base.

The key is the endpoint's `API_KEY`, else `STRIPE_WEBHOOKS["API_KEY"]`,
else the `STRIPE_API_KEY` setting; the base is the endpoint's `API_BASE`,
else `STRIPE_WEBHOOKS["API_BASE"]`, else Stripe's own. Calls made for an
event with a context (a Connect account) send it as `Stripe-Context`.

Thin events are parsed by the stripe library (`StripeClient.
parse_event_notification`, stripe-python 13 and later); its notification
object's `fetch_related_object()` and `fetch_event()` make the calls.
"""

from __future__ import annotations

import threading
from typing import Any

import stripe

from .conf import API_KEY_SETTING, SETTING_NAME, Endpoint
from .exceptions import MissingApiKey

try:
    from stripe.v2.core import EventNotification
except ImportError:  # stripe-python 12: no thin events (webhook_ingest.E004 says so)
    EventNotification = None  # type: ignore[assignment,misc]

# Parsing needs a client but makes no request: this key never leaves the process.
PARSE_ONLY_KEY = "sk_parse_only"

_clients: dict[tuple[str, str | None], stripe.StripeClient] = {}
_lock = threading.Lock()


def supports_thin_events() -> bool:
    """Whether the installed stripe library can parse thin events (13 and later)."""
    parses = hasattr(stripe.StripeClient, "parse_event_notification")
    return parses and EventNotification is not None


def client_for(key: str, base: str | None) -> stripe.StripeClient:
    """A client for this key and base, made once per process and shared (it is thread-safe).

    Keyed by the key itself, so a changed setting gets a new client.
    """
    with _lock:
        client = _clients.get((key, base))
        if client is None:
            options: dict[str, Any] = {"base_addresses": {"api": base}} if base else {}
            client = _clients[(key, base)] = stripe.StripeClient(key, **options)
        return client


def api_client(endpoint: Endpoint) -> stripe.StripeClient:
    """The client for calls made on behalf of `endpoint`; MissingApiKey without a key."""
    if not endpoint.api_key:
        raise MissingApiKey(
            f"{SETTING_NAME}: a call to Stripe's API needs a secret key; set "
            f'{SETTING_NAME}["API_KEY"], {SETTING_NAME}["ENDPOINTS"]["{endpoint.name}"]'
            f'["API_KEY"] or the {API_KEY_SETTING} setting.'
        )
    return client_for(endpoint.api_key, endpoint.api_base)


def parsing_client(endpoint: Endpoint) -> stripe.StripeClient:
    """A client to parse thin events with: the endpoint's, or one that makes no request."""
    return client_for(endpoint.api_key or PARSE_ONLY_KEY, endpoint.api_base)


def notification(payload: dict[str, Any], endpoint: Endpoint) -> Any:
    """The stripe library's notification for a stored thin event, bound to the endpoint's client.

    Built from the stored payload without verifying it again: it was verified
    on delivery, or fetched from Stripe's API by a backfill.
    """
    return EventNotification.from_json(payload, api_client(endpoint))


def fetch_related_object(payload: dict[str, Any], endpoint: Endpoint) -> Any:
    """The thin event's related object, as Stripe's API returns it now; None without one."""
    if not isinstance(payload.get("related_object"), dict):
        return None
    return notification(payload, endpoint).fetch_related_object()


def fetch_thin_event(payload: dict[str, Any], endpoint: Endpoint) -> Any:
    """The whole thin event from Stripe's API (`GET /v2/core/events/<id>`)."""
    return notification(payload, endpoint).fetch_event()


def fetch_snapshot_event(event_id: str, account: str | None, endpoint: Endpoint) -> Any:
    """A snapshot event from Stripe's API (`GET /v1/events/<id>`), in its account's context."""
    options: dict[str, Any] = {"stripe_context": account} if account else {}
    return api_client(endpoint).v1.events.retrieve(event_id, options=options)  # type: ignore[arg-type]
