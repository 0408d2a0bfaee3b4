"""Handlers the suite's worker processes run.

What a handler does is chosen by the event itself, through
`data.object.metadata.test_behavior`, so a test controls a worker process
it cannot reach into:

    fail_first        raise on attempt 1, succeed after
    fail_until:N      raise on attempts below N
    always_fail       raise on every attempt
    permanent         raise PermanentFailure
    sleep:S           sleep S seconds, then succeed
    on_commit         register an on_commit callback, and fail attempt 1
    exit_first        kill the worker process on attempt 1 (os._exit)
    db_error_first    terminate our own database session on attempt 1
    fail_first_pct:P  raise on attempt 1 for P % of events, chosen by a hash
                      of the event id (tests/faults.first_attempt_fails)
    backend_pid       log the database session's pid as a call named backend:<pid>

Every call appends "event_id handler attempt pid" to HANDLER_LOG first, so
calls stay visible even when their database writes roll back.

`customer.updated` events also write the object's state twice, once from a
handler that always runs and once from one that skips superseded events
(`ObjectState`, handler "plain" and "guarded"): which event's state is left
shows whether an older event overwrote a newer one. Thin events: `v1.customer`
handlers fetch the related object from the stand-in for Stripe's API.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from webhook_worker import webhooks

from .models import ObjectState, SideEffect


def log_call(event: Any, name: str) -> None:
    path = settings.HANDLER_LOG
    if path:
        line = f"{event.id} {name} {event.attempts} {os.getpid()}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def behavior(event: Any) -> str:
    metadata = event.data.get("object", {}).get("metadata") or {}
    return str(metadata.get("test_behavior", ""))


@webhooks.handler_all
def record_every_event(event: Any, **kwargs: Any) -> None:
    log_call(event, "all")
    SideEffect.objects.create(event_id=event.id, handler="all", attempt=event.attempts)
    how = behavior(event)
    if how == "fail_first" and event.attempts == 1:
        raise RuntimeError("simulated failure on the first attempt")
    if how.startswith("fail_until:") and event.attempts < int(how.split(":", 1)[1]):
        raise RuntimeError(f"simulated failure on attempt {event.attempts}")
    if how == "always_fail":
        raise ValueError("this handler always fails")
    if how == "permanent":
        raise webhooks.PermanentFailure("the payload can never be processed")
    if how.startswith("sleep:"):
        time.sleep(float(how.split(":", 1)[1]))
    if how == "on_commit":
        transaction.on_commit(lambda: log_call(event, "on_commit"))
        if event.attempts == 1:
            raise RuntimeError("fail after registering on_commit")
    if how == "exit_first" and event.attempts == 1:
        os._exit(1)
    if how.startswith("fail_first_pct:") and event.attempts == 1:
        percent = int(how.split(":", 1)[1])
        if int(hashlib.sha256(event.id.encode()).hexdigest(), 16) % 100 < percent:
            raise RuntimeError("simulated random failure on the first attempt")
    if how == "backend_pid":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            log_call(event, f"backend:{cursor.fetchone()[0]}")
    if how == "db_error_first" and event.attempts == 1:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


@webhooks.handler("customer")
def customer_prefix(event: Any, **kwargs: Any) -> None:
    log_call(event, "customer")


@webhooks.handler("customer.subscription")
def subscription_prefix(event: Any, **kwargs: Any) -> None:
    log_call(event, "customer.subscription")


@webhooks.handler("customer.subscription.created", "invoice.paid")
def exact_types(event: Any, **kwargs: Any) -> None:
    log_call(event, "exact")
    SideEffect.objects.create(event_id=event.id, handler="exact", attempt=event.attempts)


# Registered for two matching types: must still run once per event.
@webhooks.handler("customer.subscription.created")
@webhooks.handler("customer")
def registered_twice(event: Any, **kwargs: Any) -> None:
    log_call(event, "twice")


def write_state(event: Any, handler: str) -> None:
    version = str((event.data.get("object", {}).get("metadata") or {}).get("version", ""))
    ObjectState.objects.update_or_create(
        object_id=event.object_id,
        handler=handler,
        defaults={"event_id": event.id, "version": version},
    )


@webhooks.handler("customer.updated")
def track_state(event: Any, **kwargs: Any) -> None:
    log_call(event, "plain")
    write_state(event, "plain")


@webhooks.handler("customer.updated", skip_superseded=True)
def track_state_guarded(event: Any, **kwargs: Any) -> None:
    log_call(event, "guarded")
    write_state(event, "guarded")


@webhooks.handler("v1.customer")
def fetch_customer(event: Any, **kwargs: Any) -> None:
    """A thin twin's handler: the customer's current state, fetched from Stripe's API."""
    log_call(event, "v1.customer")
    customer = event.fetch_related_object()
    SideEffect.objects.create(
        event_id=event.id, handler=f"fetched:{customer['email']}"[:64], attempt=event.attempts
    )


@webhooks.handler("v2.core.account")
def account_events(event: Any, **kwargs: Any) -> None:
    log_call(event, "v2.core.account")
