"""Decide whether a (verified) body is a Stripe event, and extract its columns."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .exceptions import InvalidBody

EVENT_ID_RE = re.compile(r"evt_[A-Za-z0-9_]{1,250}")
EVENT_TYPE_RE = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
MAX_TYPE_LENGTH = 255
MAX_ID_LENGTH = 255
MAX_API_VERSION_LENGTH = 64


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


def decode_body(raw: bytes) -> str:
    """The body as text; Stripe always sends UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidBody("The body is not UTF-8.") from None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _field_error(field: str) -> InvalidBody:
    return InvalidBody(f"The body is not a Stripe event: missing or invalid '{field}'.")


def parse_event(body: str) -> ParsedEvent:
    """Parse and validate a v1 (snapshot) Stripe event; InvalidBody if it is not one."""
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidBody("The body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise InvalidBody("The body is not a Stripe event: expected a JSON object.")
    if payload.get("object") != "event":
        raise _field_error("object")

    event_id = payload.get("id")
    if not isinstance(event_id, str) or not EVENT_ID_RE.fullmatch(event_id):
        raise _field_error("id")
    event_type = payload.get("type")
    if (
        not isinstance(event_type, str)
        or len(event_type) > MAX_TYPE_LENGTH
        or not EVENT_TYPE_RE.fullmatch(event_type)
    ):
        raise _field_error("type")
    created = payload.get("created")
    if isinstance(created, bool) or not isinstance(created, int) or created < 0:
        raise _field_error("created")
    try:
        created_at = datetime.fromtimestamp(created, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise _field_error("created") from None
    livemode = payload.get("livemode")
    if not isinstance(livemode, bool):
        raise _field_error("livemode")
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise _field_error("data.object")
    if "previous_attributes" in data and not isinstance(data["previous_attributes"], dict):
        raise _field_error("data.previous_attributes")
    api_version = payload.get("api_version")
    if api_version is not None and (
        not isinstance(api_version, str) or len(api_version) > MAX_API_VERSION_LENGTH
    ):
        raise _field_error("api_version")
    account = payload.get("account")
    if account is not None and (not isinstance(account, str) or len(account) > MAX_ID_LENGTH):
        raise _field_error("account")
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
