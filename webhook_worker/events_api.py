"""Pages of Stripe's Events API: `/v1/events` for snapshot endpoints, `/v2/core/events` for thin.

Both are listed newest first, one time slice at a time (`created` at or after
its start, before its end), 100 events a page, through the library's
`StripeClient.raw_request`, so the events come back as the JSON Stripe sent.

- v1: `type=<prefix>*` narrows the listing on Stripe's side (the dotted
  match is checked here too: `invoice` must not take `invoiceitem.*`);
  `delivery_success=false` keeps the events some delivery of which failed.
  The cursor is the last event id of a page (`starting_after`).
- v2: no prefix filter on Stripe's side and no delivery filter; the cursor is
  the page's `next_page_url`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe

from webhook_ingest.parsing import type_prefixes

from .stripe_events import rfc3339_ms

PAGE_SIZE = 100
V1_EVENTS = "/v1/events"
V2_EVENTS = "/v2/core/events"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Page:
    """One page: its events (newest first), and the cursor of the next page, if any."""

    events: list[dict[str, Any]]
    next_cursor: str


@dataclass(frozen=True)
class Filters:
    """What to list beyond the time slice."""

    thin: bool
    type_prefix: str = ""
    failed_only: bool = False

    def matches(self, event: dict[str, Any]) -> bool:
        event_type = event.get("type")
        if not isinstance(event_type, str):
            return False
        return not self.type_prefix or self.type_prefix in type_prefixes(event_type)


def list_page(
    client: stripe.StripeClient, filters: Filters, start: datetime, end: datetime, cursor: str
) -> Page:
    """The page of events created in [start, end) after `cursor` ("" for the first)."""
    if filters.thin:
        if cursor:
            response = client.raw_request("get", cursor)
        else:
            created = {"gte": rfc3339_ms(ms_ceiling(start)), "lt": rfc3339_ms(ms_ceiling(end))}
            response = client.raw_request("get", V2_EVENTS, limit=PAGE_SIZE, created=created)
        body = _json(response)
        events = [e for e in body.get("data") or [] if isinstance(e, dict)]
        return Page(events, str(body.get("next_page_url") or ""))
    params: dict[str, Any] = {
        "limit": PAGE_SIZE,
        "created": {"gte": math.floor(start.timestamp()), "lt": math.ceil(end.timestamp())},
    }
    if cursor:
        params["starting_after"] = cursor
    if filters.type_prefix:
        params["type"] = f"{filters.type_prefix}*"
    if filters.failed_only:
        params["delivery_success"] = "false"
    body = _json(client.raw_request("get", V1_EVENTS, **params))
    events = [e for e in body.get("data") or [] if isinstance(e, dict)]
    more = bool(body.get("has_more")) and bool(events)
    return Page(events, str(events[-1].get("id", "")) if more else "")


def ms_ceiling(moment: datetime) -> int:
    """`moment` in whole milliseconds since the epoch, rounded up.

    v2 events carry `created` in milliseconds: an event created before the
    slice's end, in the same millisecond, is before this bound too. Slices
    meet where one's end is the next one's start, so each event is in one.
    """
    return -((EPOCH - moment) // timedelta(milliseconds=1))


def _json(response: Any) -> dict[str, Any]:
    """The parsed body of a `raw_request` response; a StripeError if it is not a JSON object."""
    data = getattr(response, "data", None)
    if not isinstance(data, dict):
        raise stripe.APIError("Stripe's Events API answered something other than a JSON object.")
    return data
