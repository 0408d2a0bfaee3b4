"""Thin events: verified and parsed by the stripe library, stored with their own columns.

A thin event (`"object": "v2.core.event"`) names what changed instead of
carrying it: `related_object` (`id`, `type`, `url`), and `context`, the
account to ask in. Its type is its own (`v2.core.account.updated`, or
`v1.customer.updated` for the thin twin of a snapshot type, which then names
that snapshot event in `snapshot_event`), and `created` is an RFC 3339 time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import stripe

from .conf import Endpoint
from .exceptions import InvalidBody, TimestampOutOfTolerance, WrongPayloadStyle
from .parsing import (
    EVENT_ID_RE,
    MAX_ID_LENGTH,
    SNAPSHOT_OBJECT,
    THIN_OBJECT,
    ParsedEvent,
    field_error,
    id_and_type,
    load_payload,
)
from .signature import verified_secret
from .stripe_api import parsing_client

THIN = "thin"


def parse_thin_delivery(body: str, header: str | None, endpoint: Endpoint) -> ParsedEvent:
    """Verify a delivery to a thin endpoint and parse it; a `RejectedDelivery` if refused.

    The signature is checked first, over the exact body, under each of the
    endpoint's secrets; then the columns are read and checked, and the stripe
    library parses the body (`StripeClient.parse_event_notification`, which
    checks the signature again under the secret that matched).
    """
    _, secret = verified_secret(body, header, endpoint)
    payload = load_payload(body)
    if payload.get("object") == SNAPSHOT_OBJECT:
        raise WrongPayloadStyle(
            'This endpoint receives thin events; the body is a snapshot event ("object": '
            '"event"). Point snapshot destinations at an endpoint without "STYLE": "thin".'
        )
    parsed = parse_thin_event(payload)
    try:
        parsing_client(endpoint).parse_event_notification(
            body, header, secret, tolerance=endpoint.tolerance
        )
    except stripe.SignatureVerificationError:
        # The signature matched a moment ago: only the timestamp can have aged out since.
        raise TimestampOutOfTolerance() from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidBody(f"The stripe library cannot parse this thin event: {exc}") from None
    return parsed


def parse_thin_event(payload: dict[str, Any]) -> ParsedEvent:
    """The columns of a thin event (a delivery, or an event from the v2 Events API)."""
    if payload.get("object") != THIN_OBJECT:
        raise field_error("object")
    event_id, event_type = id_and_type(payload)
    created = payload.get("created")
    try:
        created_at = datetime.fromisoformat(created) if isinstance(created, str) else None
    except ValueError:
        created_at = None
    if created_at is None or created_at.tzinfo is None:
        raise field_error("created")
    livemode = payload.get("livemode")
    if not isinstance(livemode, bool):
        raise field_error("livemode")
    context = payload.get("context")
    if context is not None and (not isinstance(context, str) or len(context) > MAX_ID_LENGTH):
        raise field_error("context")
    object_id = ""
    related = payload.get("related_object")
    if related is not None:
        if not isinstance(related, dict) or not _is_reference(related):
            raise field_error("related_object")
        object_id = related["id"]
    snapshot_event = payload.get("snapshot_event")
    if snapshot_event is not None and (
        not isinstance(snapshot_event, str) or not EVENT_ID_RE.fullmatch(snapshot_event)
    ):
        raise field_error("snapshot_event")
    return ParsedEvent(
        id=event_id,
        type=event_type,
        livemode=livemode,
        api_version=None,
        account=context or None,
        created=created_at,
        object_id=object_id,
        payload=payload,
        style=THIN,
        snapshot_event=snapshot_event or "",
    )


def _is_reference(related: dict[str, Any]) -> bool:
    """`{"id", "type", "url"}`, the url a path on Stripe's API (fetched from the API base)."""
    object_id, url = related.get("id"), related.get("url")
    return (
        isinstance(object_id, str)
        and 0 < len(object_id) <= MAX_ID_LENGTH
        and isinstance(related.get("type"), str)
        and isinstance(url, str)
        and url.startswith(("/v1/", "/v2/"))
        and "//" not in url
    )
