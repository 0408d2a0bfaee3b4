"""Signing, posting and waiting helpers shared by the tests."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.db import connection
from django.test import Client

from webhook_ingest.models import WebhookEvent
from webhook_worker.stripe_events import build_event, encode_event, sign_body

from .constants import SECRET
from .stack import wait_until

__all__ = ["post_signed", "make_event", "wait_for_status", "handler_calls", "wait_until"]


def make_event(
    event_type: str = "customer.created", behavior: str | None = None, **kwargs: Any
) -> dict[str, Any]:
    """A realistic event; `behavior` steers tests/testapp/webhooks.py."""
    metadata = dict(kwargs.pop("metadata", {}) or {})
    if behavior:
        metadata["test_behavior"] = behavior
    return build_event(event_type, metadata=metadata or None, **kwargs)


def post_signed(
    client: Client,
    event: dict[str, Any] | str | bytes,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
    endpoint: str | None = None,
    signature: str | None = None,
    content_type: str = "application/json; charset=utf-8",
) -> Any:
    """POST a body signed exactly as Stripe signs it (unless `signature` is given)."""
    if isinstance(event, dict):
        body: str | bytes = encode_event(event)
    else:
        body = event
    if signature is None:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        signature = sign_body(text, secret, timestamp=timestamp)
    url = "/webhooks/stripe/" if endpoint is None else f"/webhooks/stripe/{endpoint}/"
    extra = {"HTTP_STRIPE_SIGNATURE": signature} if signature != "" else {}
    return client.post(url, data=body, content_type=content_type, **extra)


def wait_for_status(
    event_id: str, status: str | Iterable[str], timeout: float = 30
) -> WebhookEvent:
    """Wait until the stored event reaches `status`; return it."""
    wanted = {status} if isinstance(status, str) else set(status)

    def check() -> WebhookEvent | None:
        event = WebhookEvent.objects.filter(pk=event_id).first()
        return event if event is not None and event.status in wanted else None

    def describe() -> str:
        event = WebhookEvent.objects.filter(pk=event_id).first()
        state = (
            "missing"
            if event is None
            else f"{event.status}, attempts={event.attempts}, error={event.last_error!r}"
        )
        return f"event {event_id} to be {sorted(wanted)} (is {state})"

    result: WebhookEvent = wait_until(check, timeout=timeout, interval=0.05, message=describe)
    return result


def handler_calls(log_path: Path, event_id: str | None = None) -> list[tuple[str, str, int]]:
    """(event id, handler, attempt) for each logged handler call, in call order."""
    try:
        lines = log_path.read_text().splitlines()
    except FileNotFoundError:
        return []
    calls = []
    for line in lines:
        eid, name, attempt, _pid = line.split()
        if event_id is None or eid == event_id:
            calls.append((eid, name, int(attempt)))
    return calls


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, (time.perf_counter() - start) * 1000


def prepared_statements() -> list[str]:
    """The statements this database session has prepared (psycopg prepares those run often)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def other_sessions(states: Iterable[str] = ("active", "idle in transaction")) -> list[int]:
    """Backends of this database, other than ours, in one of `states`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND state = ANY(%s)",
            [list(states)],
        )
        return [pid for (pid,) in cursor.fetchall()]


def wait_for_quiet_database(timeout: float = 30) -> None:
    """Until no other session is in a statement or a transaction (a worker finishing up):
    emptying the tables meanwhile could deadlock with it."""
    wait_until(lambda: not other_sessions(), timeout=timeout, message="other sessions to go idle")
