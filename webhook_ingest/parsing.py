"""Decide whether a (verified) body is a Stripe event, and extract its columns.

Two styles: snapshot (v1) events carry the object itself in `data.object`;
thin events (`"object": "v2.core.event"`) carry a reference to it in
`related_object`, and the worker fetches what it needs from Stripe's API.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .exceptions import InvalidBody, WrongPayloadStyle

EVENT_ID_RE = re.compile(r"evt_[A-Za-z0-9_]{1,250}")
# A segment may carry a bracketed qualifier, as thin event types do:
# v2.core.account[configuration.merchant].capability_status_updated.
_SEGMENT = r"[a-z0-9_]+(?:\[[a-z0-9_]+(?:\.[a-z0-9_]+)*\])?"
EVENT_TYPE_RE = re.compile(rf"{_SEGMENT}(?:\.{_SEGMENT})*")
# Where a type splits into segments: the dots outside brackets.
_PARTS_RE = re.compile(r"\.(?![^\[]*\])")
MAX_TYPE_LENGTH = 255
MAX_ID_LENGTH = 255
MAX_API_VERSION_LENGTH = 64

SNAPSHOT_OBJECT = "event"
THIN_OBJECT = "v2.core.event"


@dataclass(frozen=True)
class ParsedEvent:
    """The fields of a Stripe event that are stored in their own columns."""

    id: str
    type: str
    livemode: bool
    api_version: str | None
    account: str | None
    created: datetime
    object_id: str
    payload: dict[str, Any]
    style: str = "snapshot"
    # A thin twin's `snapshot_event`: the id of the snapshot event of the same change.
    snapshot_event: str = ""


def type_parts(event_type: str) -> list[str]:
    """The dotted segments of a type; a bracketed qualifier stays with its segment.

    `customer.subscription.created` -> `["customer", "subscription", "created"]`;
    `v2.core.account[requirements].updated` -> `["v2", "core", "account[requirements]", "updated"]`.
    """
    if "[" not in event_type:
        return event_type.split(".")
    return _PARTS_RE.split(event_type)


def type_prefixes(event_type: str) -> list[str]:
    """Every prefix a handler may be registered for, shortest first, the type itself last.

    A bracketed qualifier is one level below its segment:
    `v2.core.account[requirements].updated` has the prefixes `v2`, `v2.core`,
    `v2.core.account`, `v2.core.account[requirements]` and itself.
    """
    prefixes: list[str] = []
    done = ""
    for part in type_parts(event_type):
        base, bracket, _ = part.partition("[")
        prefix = f"{done}.{base}" if done else base
        if bracket:
            prefixes.append(prefix)
            prefix = f"{done}.{part}" if done else part
        prefixes.append(prefix)
        done = prefix
    return prefixes


def decode_body(raw: bytes) -> str:
    """The body as text; Stripe always sends UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidBody("The body is not UTF-8.") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def field_error(field: str) -> InvalidBody:
    return InvalidBody(f"The body is not a Stripe event: missing or invalid '{field}'.")


def load_payload(body: str) -> dict[str, Any]:
    """The body as a JSON object; InvalidBody otherwise."""
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidBody("The body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise InvalidBody("The body is not a Stripe event: expected a JSON object.")
    return payload


def id_and_type(payload: dict[str, Any]) -> tuple[str, str]:
    event_id = payload.get("id")
    if not isinstance(event_id, str) or not EVENT_ID_RE.fullmatch(event_id):
        raise field_error("id")
    event_type = payload.get("type")
    if (
        not isinstance(event_type, str)
        or len(event_type) > MAX_TYPE_LENGTH
        or not EVENT_TYPE_RE.fullmatch(event_type)
    ):
        raise field_error("type")
    return event_id, event_type


def parse_event(body: str) -> ParsedEvent:
    """Parse and validate a v1 (snapshot) Stripe event; InvalidBody if it is not one."""
    payload = load_payload(body)
    if payload.get("object") == THIN_OBJECT:
        raise WrongPayloadStyle(
            "This endpoint receives snapshot events; the body is a thin event "
            '("object": "v2.core.event"). Point thin event destinations at an endpoint '
            'configured with "STYLE": "thin".'
        )
    if payload.get("object") != SNAPSHOT_OBJECT:
        raise field_error("object")

    event_id, event_type = id_and_type(payload)
    created = payload.get("created")
    if isinstance(created, bool) or not isinstance(created, int) or created < 0:
        raise field_error("created")
    try:
        created_at = datetime.fromtimestamp(created, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise field_error("created") from None
    livemode = payload.get("livemode")
    if not isinstance(livemode, bool):
        raise field_error("livemode")
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise field_error("data.object")
    if "previous_attributes" in data and not isinstance(data["previous_attributes"], dict):
        raise field_error("data.previous_attributes")
    api_version = payload.get("api_version")
    if api_version is not None and (
        not isinstance(api_version, str) or len(api_version) > MAX_API_VERSION_LENGTH
    ):
        raise field_error("api_version")
    account = payload.get("account")
    if account is not None and (not isinstance(account, str) or len(account) > MAX_ID_LENGTH):
        raise field_error("account")
    object_id = data["object"].get("id")
    if not isinstance(object_id, str) or len(object_id) > MAX_ID_LENGTH:
        object_id = ""

    return ParsedEvent(
        id=event_id,
        type=event_type,
        livemode=livemode,
        api_version=api_version,
        account=account,
        created=created_at,
        object_id=object_id,
        payload=payload,
    )
