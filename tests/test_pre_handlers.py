"""The pre_handlers signal: code that runs with every event before its handlers, in their
transaction (what the dj-stripe bridge plugs into)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.testapp.models import SideEffect
from webhook_ingest.models import WebhookEvent
from webhook_worker.models import WebhookAttempt
from webhook_worker.signals import pre_handlers
from webhook_worker.testing import run_handlers

from .helpers import make_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def connect() -> Iterator[Callable[[Callable[..., Any]], None]]:
    """Connect a receiver for the test's duration."""
    connected: list[Callable[..., Any]] = []

    def _connect(receiver: Callable[..., Any]) -> None:
        pre_handlers.connect(receiver, sender=WebhookEvent, weak=False)
        connected.append(receiver)

    yield _connect
    for receiver in connected:
        pre_handlers.disconnect(receiver, sender=WebhookEvent)


def test_a_receiver_runs_before_the_handlers_and_its_writes_commit_with_theirs(connect):
    seen_before: list[bool] = []

    def sync(sender: Any, event: WebhookEvent, **kwargs: Any) -> None:
        seen_before.append(SideEffect.objects.filter(event_id=event.id).exists())
        SideEffect.objects.create(event_id=event.id, handler="pre", attempt=event.attempts)

    connect(sync)
    event = run_handlers(make_event("invoice.paid"))

    assert event.status == "succeeded"
    assert seen_before == [False]  # no handler had written yet
    written = SideEffect.objects.filter(event_id=event.id).values_list("handler", flat=True)
    assert sorted(written) == ["all", "exact", "pre"]


def test_a_receiver_that_raises_fails_the_attempt_with_its_traceback_and_no_handler_runs(
    connect,
):
    def sync(sender: Any, event: WebhookEvent, **kwargs: Any) -> None:
        SideEffect.objects.create(event_id=event.id, handler="pre", attempt=event.attempts)
        raise ConnectionError("the sync could not reach Stripe")

    connect(sync)
    event = run_handlers(make_event("invoice.paid"), raise_errors=False)

    assert event.status == "retrying"
    assert event.last_error == "ConnectionError: the sync could not reach Stripe"
    attempt = WebhookAttempt.objects.get(event_id=event.id)
    assert attempt.outcome == "retry"
    assert "in sync" in attempt.traceback
    assert not SideEffect.objects.filter(event_id=event.id).exists()


def test_what_a_receiver_returns_is_noted_in_the_attempt(connect):
    connect(lambda sender, event, **kwargs: f"synced elsewhere already: {event.id}")
    connect(lambda sender, event, **kwargs: None)

    event = run_handlers(make_event("invoice.paid"))

    attempt = WebhookAttempt.objects.get(event_id=event.id)
    assert attempt.note == f"synced elsewhere already: {event.id}"
