"""A loopback stand-in for Stripe's API, for the suite (Stripe itself cannot be reached).

Every process of the suite points `STRIPE_WEBHOOKS["API_BASE"]` at it
(tests/settings.py), so the library's own stripe-python client talks to it
exactly as it would talk to Stripe. It serves:

- `GET /v1/events`: newest first, `limit` (≤ 100), `starting_after` /
  `ending_before` cursors, `created[gt|gte|lt|lte]`, `type` (`*` wildcards),
  `types[]`, `delivery_success`; `GET /v1/events/<id>`;
- `GET /v2/core/events`: newest first, `limit`, `page` tokens through
  `next_page_url`, `created[...]` as RFC 3339, `types`, `object_id`;
  `GET /v2/core/events/<id>`;
- any object put in `objects` (a thin event's related object), by URL path.

Requests need a bearer key (401 without); each is logged with the headers a
test may check (`Authorization`, `Stripe-Context`). `fail_list_after(n)`
answers 500 to list requests after `n` more, as an outage mid-scan would.
"""

from __future__ import annotations

import fnmatch
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_LIMIT = 100


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    api_key: str
    context: str | None


def _unix(value: Any) -> float:
    """A v1 (Unix seconds) or v2 (RFC 3339) created time, as Unix seconds."""
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value)).timestamp()


def _created_filter(query: dict[str, str], event: dict[str, Any]) -> bool:
    created = _unix(event["created"])
    for op, test in (
        ("gt", created.__gt__),
        ("gte", created.__ge__),
        ("lt", created.__lt__),
        ("lte", created.__le__),
    ):
        key = f"created[{op}]"
        if key in query:
            raw = query[key]
            bound = _unix(int(raw) if raw.lstrip("-").isdigit() else raw)
            if not test(bound):
                return False
    return True


def _listed_types(query: dict[str, str]) -> list[str]:
    return [v for k, v in query.items() if k == "types" or k.startswith("types[")]


@dataclass
class StandIn:
    """The API's state: what a test stores in it, and what the library asked of it."""

    v1_events: list[dict[str, Any]] = field(default_factory=list)
    v2_events: list[dict[str, Any]] = field(default_factory=list)
    # v1 event id -> whether every delivery of it succeeded (delivery_success).
    delivered: dict[str, bool] = field(default_factory=dict)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    pages: dict[str, tuple[list[dict[str, Any]], int, int]] = field(default_factory=dict)
    list_budget: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self.lock:
            self.v1_events.clear()
            self.v2_events.clear()
            self.delivered.clear()
            self.objects.clear()
            self.requests.clear()
            self.pages.clear()
            self.list_budget = None

    def add_v1(self, event: dict[str, Any], delivered: bool = True) -> dict[str, Any]:
        with self.lock:
            self.v1_events.append(event)
            self.delivered[event["id"]] = delivered
        return event

    def add_v2(self, event: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.v2_events.append(event)
        return event

    def fail_list_after(self, count: int | None) -> None:
        """Answer 500 to list requests once `count` more have been served (None: never)."""
        with self.lock:
            self.list_budget = count

    def requests_to(self, prefix: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(prefix)]

    # --- the API -----------------------------------------------------------

    def answer(self, request: Request) -> tuple[int, dict[str, Any]]:
        if not request.api_key.startswith(("sk_", "rk_")):
            return 401, _error("authentication_error", "Invalid API Key provided.")
        with self.lock:
            self.requests.append(request)
            path = request.path
            if path in ("/v1/events", "/v2/core/events"):
                if self.list_budget is not None:
                    if self.list_budget <= 0:
                        return 500, _error("api_error", "The stand-in is down for this test.")
                    self.list_budget -= 1
                if path == "/v1/events":
                    return 200, self._list_v1(request.query)
                return 200, self._list_v2(request.query)
            for prefix, events in (
                ("/v1/events/", self.v1_events),
                ("/v2/core/events/", self.v2_events),
            ):
                if path.startswith(prefix):
                    wanted = path[len(prefix) :]
                    for event in events:
                        if event["id"] == wanted:
                            return 200, event
                    return 404, _error("invalid_request_error", f"No such event: '{wanted}'")
            if path in self.objects:
                return 200, self.objects[path]
        return 404, _error("invalid_request_error", f"Unrecognized request URL (GET: {path}).")

    def _list_v1(self, query: dict[str, str]) -> dict[str, Any]:
        events = sorted(self.v1_events, key=lambda e: (e["created"], e["id"]), reverse=True)
        events = [e for e in events if _created_filter(query, e)]
        if "type" in query:
            events = [e for e in events if fnmatch.fnmatchcase(e["type"], query["type"])]
        types = _listed_types(query)
        if types:
            events = [e for e in events if e["type"] in types]
        if "delivery_success" in query:
            success = query["delivery_success"] == "true"
            events = [e for e in events if self.delivered.get(e["id"], True) == success]
        limit = min(int(query.get("limit", 10)), MAX_LIMIT)
        ids = [e["id"] for e in events]
        if "starting_after" in query:
            start = ids.index(query["starting_after"]) + 1 if query["starting_after"] in ids else 0
            page = events[start : start + limit]
            more = start + limit < len(events)
        elif "ending_before" in query:
            end = ids.index(query["ending_before"]) if query["ending_before"] in ids else 0
            page = events[max(0, end - limit) : end]
            more = end - limit > 0
        else:
            page, more = events[:limit], len(events) > limit
        return {"object": "list", "url": "/v1/events", "has_more": more, "data": page}

    def _list_v2(self, query: dict[str, str]) -> dict[str, Any]:
        if "page" in query:
            events, offset, limit = self.pages.pop(query["page"])
        else:
            events = sorted(self.v2_events, key=lambda e: (_unix(e["created"]), e["id"]))[::-1]
            events = [e for e in events if _created_filter(query, e)]
            types = _listed_types(query)
            if types:
                events = [e for e in events if e["type"] in types]
            if "object_id" in query:
                events = [
                    e
                    for e in events
                    if (e.get("related_object") or {}).get("id") == query["object_id"]
                ]
            offset, limit = 0, min(int(query.get("limit", 20)), MAX_LIMIT)
        page = events[offset : offset + limit]
        next_url = None
        if offset + limit < len(events):
            token = uuid.uuid4().hex
            self.pages[token] = (events, offset + limit, limit)
            next_url = f"/v2/core/events?page={token}"
        return {"data": page, "next_page_url": next_url, "previous_page_url": None}


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        auth = self.headers.get("Authorization", "")
        request = Request(
            method="GET",
            path=url.path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            api_key=auth.removeprefix("Bearer ").strip(),
            context=self.headers.get("Stripe-Context"),
        )
        status, body = self.standin.answer(request)
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Request-Id", f"req_{uuid.uuid4().hex[:14]}")
        if status >= 500:
            self.send_header("Stripe-Should-Retry", "false")
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StandInServer:
    """The stand-in, served on 127.0.0.1:`port` from a thread of the test process."""

    def __init__(self, port: int) -> None:
        self.standin = StandIn()
        handler = type("Handler", (_Handler,), {"standin": self.standin})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> StandInServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
