"""Realistic Stripe events, signed as Stripe signs them: for tests, commands, benchmarks.

    from webhook_worker.stripe_events import build_event, encode_event, sign_body

    event = build_event("invoice.paid", metadata={"order": "42"})
    body = encode_event(event)                  # pretty-printed, as Stripe sends it
    header = sign_body(body, "whsec_...")       # the Stripe-Signature header value

    thin = build_thin_event("v1.customer.updated", snapshot_event=event["id"])

Payloads come from templates of Stripe's own example objects
(event_templates/objects.json), adjusted per event type. Importing this
module needs no Django set-up.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import math
import secrets
import string
import time
import urllib.error
import urllib.request
from functools import cache
from importlib import resources
from typing import Any

import stripe

API_VERSION = "2025-06-30.basil"

_ALPHABET = string.ascii_letters + string.digits

# event type -> (template object, changes to the object, previous_attributes)
EVENT_TYPES: dict[str, tuple[str, dict[str, Any], dict[str, Any] | None]] = {
    "customer.created": ("customer", {}, None),
    "customer.updated": ("customer", {}, {"email": "ada.old@example.com"}),
    "customer.deleted": ("customer", {}, None),
    "customer.subscription.created": ("subscription", {"status": "incomplete"}, None),
    "customer.subscription.updated": (
        "subscription",
        {"status": "active", "cancel_at_period_end": True},
        {"cancel_at_period_end": False},
    ),
    "customer.subscription.deleted": ("subscription", {"status": "canceled"}, None),
    "customer.subscription.trial_will_end": ("subscription", {"status": "trialing"}, None),
    "invoice.created": ("invoice", {"status": "draft", "paid": False}, None),
    "invoice.finalized": ("invoice", {"status": "open"}, None),
    "invoice.paid": ("invoice", {"status": "paid"}, None),
    "invoice.payment_succeeded": ("invoice", {"status": "paid"}, None),
    "invoice.payment_failed": ("invoice", {"status": "open", "attempt_count": 1}, None),
    "invoice.upcoming": ("invoice", {"status": "draft", "id": None}, None),
    "payment_intent.created": ("payment_intent", {"status": "requires_payment_method"}, None),
    "payment_intent.succeeded": ("payment_intent", {"status": "succeeded"}, None),
    "payment_intent.payment_failed": (
        "payment_intent",
        {
            "status": "requires_payment_method",
            "last_payment_error": {"code": "card_declined", "decline_code": "generic_decline"},
        },
        None,
    ),
    "payment_intent.canceled": ("payment_intent", {"status": "canceled"}, None),
    "charge.succeeded": ("charge", {"status": "succeeded", "paid": True}, None),
    "charge.failed": ("charge", {"status": "failed", "paid": False}, None),
    "charge.refunded": ("charge", {"refunded": True}, {"refunded": False, "amount_refunded": 0}),
    "charge.dispute.created": ("dispute", {"status": "needs_response"}, None),
    "checkout.session.completed": ("checkout.session", {"status": "complete"}, None),
    "checkout.session.expired": ("checkout.session", {"status": "expired"}, None),
    "checkout.session.async_payment_succeeded": (
        "checkout.session",
        {"status": "complete", "payment_status": "paid"},
        None,
    ),
    "payment_method.attached": ("payment_method", {}, None),
    "payment_method.detached": ("payment_method", {"customer": None}, None),
    "setup_intent.succeeded": ("setup_intent", {"status": "succeeded"}, None),
    "product.created": ("product", {}, None),
    "product.updated": ("product", {}, {"name": "Old name"}),
    "price.created": ("price", {}, None),
    "price.updated": ("price", {}, {"active": False}),
    "refund.created": ("refund", {}, None),
}


@cache
def _templates() -> dict[str, dict[str, Any]]:
    text = resources.files("webhook_worker").joinpath("event_templates/objects.json").read_text()
    value: dict[str, dict[str, Any]] = json.loads(text)
    return value


def random_id(prefix: str, length: int = 24) -> str:
    """An id shaped like Stripe's: `evt_1Qx...`."""
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def build_event(
    event_type: str,
    *,
    event_id: str | None = None,
    created: int | None = None,
    livemode: bool = False,
    account: str | None = None,
    metadata: dict[str, str] | None = None,
    data_object: dict[str, Any] | None = None,
    previous_attributes: dict[str, Any] | None = None,
    api_version: str | None = API_VERSION,
) -> dict[str, Any]:
    """A v1 Stripe event of `event_type` as a dict, ready to encode and sign."""
    if data_object is None:
        if event_type not in EVENT_TYPES:
            raise KeyError(
                f"no template for {event_type!r}; known types: {', '.join(sorted(EVENT_TYPES))}"
            )
        name, changes, default_previous = EVENT_TYPES[event_type]
        data_object = copy.deepcopy(_templates()[name])
        data_object.update(copy.deepcopy(changes))
        if previous_attributes is None and default_previous is not None:
            previous_attributes = copy.deepcopy(default_previous)
    else:
        data_object = copy.deepcopy(data_object)
    data_object["livemode"] = livemode
    if metadata:
        data_object["metadata"] = {**data_object.get("metadata", {}), **metadata}
    now = int(time.time()) if created is None else created
    data: dict[str, Any] = {"object": data_object}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    event: dict[str, Any] = {
        "id": event_id or random_id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": now,
        "data": data,
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": random_id("req", 14), "idempotency_key": random_id("idk", 20)},
        "type": event_type,
    }
    if account is not None:
        event["account"] = account
    return event


# Thin event type prefix -> the related object's (type, id prefix, URL path).
THIN_RELATED: dict[str, tuple[str, str, str]] = {
    "v1.customer.subscription": ("subscription", "sub", "/v1/subscriptions/"),
    "v1.customer": ("customer", "cus", "/v1/customers/"),
    "v1.invoice": ("invoice", "in", "/v1/invoices/"),
    "v1.payment_intent": ("payment_intent", "pi", "/v1/payment_intents/"),
    "v1.product": ("product", "prod", "/v1/products/"),
    "v1.price": ("price", "price", "/v1/prices/"),
    "v1.billing.meter": ("billing.meter", "mtr", "/v1/billing/meters/"),
    "v2.core.account": ("v2.core.account", "acct", "/v2/core/accounts/"),
}


def thin_related_object(event_type: str, object_id: str | None = None) -> dict[str, str] | None:
    """The `related_object` a thin event of this type carries; None for types without one."""
    for prefix in sorted(THIN_RELATED, key=len, reverse=True):
        if event_type == prefix or event_type.startswith((f"{prefix}.", f"{prefix}[")):
            kind, id_prefix, path = THIN_RELATED[prefix]
            object_id = object_id or random_id(id_prefix)
            return {"id": object_id, "type": kind, "url": path + object_id}
    return None


def rfc3339(moment: float) -> str:
    """A Unix time as thin events write `created`: UTC, truncated to milliseconds."""
    return rfc3339_ms(math.floor(moment * 1000))


def rfc3339_ms(ms: int) -> str:
    """Milliseconds since the epoch as thin events write `created`."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
    return f"{whole}.{ms % 1000:03d}Z"


def build_thin_event(
    event_type: str,
    *,
    event_id: str | None = None,
    created: float | None = None,
    livemode: bool = False,
    context: str | None = None,
    object_id: str | None = None,
    related_object: dict[str, str] | None = None,
    snapshot_event: str | None = None,
) -> dict[str, Any]:
    """A thin (v2) event notification of `event_type` as a dict, ready to encode and sign.

    `related_object` defaults to one fitting the type (THIN_RELATED), with
    `object_id` as its id; `created` is a Unix time (default: now).
    """
    event: dict[str, Any] = {
        "id": event_id or random_id("evt_test", 48),
        "object": "v2.core.event",
        "type": event_type,
        "livemode": livemode,
        "created": rfc3339(time.time() if created is None else created),
        "reason": {
            "type": "request",
            "request": {"id": random_id("req", 14), "idempotency_key": random_id("idk", 20)},
        },
    }
    related = related_object or thin_related_object(event_type, object_id)
    if related is not None:
        event["related_object"] = related
    if context is not None:
        event["context"] = context
    if snapshot_event is not None:
        event["snapshot_event"] = snapshot_event
    return event


def encode_event(event: dict[str, Any]) -> str:
    """The body as Stripe sends it: pretty-printed JSON, two-space indent."""
    return json.dumps(event, indent=2)


def sign_body(body: str, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header for `body`, computed by the stripe library.

    stripe-python before 15 has no public signer: there the header is built
    as Stripe documents it (an HMAC-SHA256 of "<timestamp>.<body>").
    """
    generate = getattr(stripe.WebhookSignature, "generate_signature_header", None)
    if generate is not None:
        return str(generate(body, secret, timestamp=timestamp))
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.{body}".encode()
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


def post_event(
    url: str,
    body: str,
    secret: str,
    *,
    timestamp: int | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, Any]]:
    """POST a signed body to a running endpoint; returns (status, parsed JSON response)."""
    request = urllib.request.Request(
        url,
        data=body.encode("utf-8"),
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign_body(body, secret, timestamp),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        parsed = json.loads(raw) if raw else {}
    except ValueError:
        parsed = {"raw": raw.decode("utf-8", "replace")[:500]}
    return status, parsed
