"""Out-of-order protection: `event.is_superseded`, `skip_superseded`, and `ORDERING = "object"`.

Three updates of one customer (versions 1, 2, 3, created a second apart)
reach the workers in reverse order. Two handlers write the customer's state
(tests/testapp/webhooks.py): "plain" always runs, "guarded" is registered
with `skip_superseded=True`. Which version each leaves is what a user sees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.test.utils import override_settings

from config.celery_app import app as celery_app
from tests.testapp.models import ObjectState
from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import WebhookEvent
from webhook_ingest.parsing import parse_event
from webhook_ingest.thin import parse_thin_event
from webhook_worker.celery import PROCESS_EVENT
from webhook_worker.enqueue import task_kwargs
from webhook_worker.models import WebhookAttempt
from webhook_worker.stripe_events import build_thin_event, encode_event
from webhook_worker.testing import run_handlers

from . import faults
from .helpers import handler_calls, make_event, post_signed, wait_for_status

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def update(customer: str, version: int, created: int, event_id: str | None = None, **kw) -> dict:
    data_object = {**make_event("customer.updated")["data"]["object"], "id": customer}
    data_object["metadata"] = {"version": str(version), **kw.pop("metadata", {})}
    return make_event(
        "customer.updated", data_object=data_object, created=created, event_id=event_id, **kw
    )


def store(event: dict) -> None:
    body = encode_event(event)
    WebhookEvent.objects.record(parse_event(body), body, "default")


def state(customer: str, handler: str) -> str:
    return ObjectState.objects.get(object_id=customer, handler=handler).version


def attempts(event_id: str) -> list[WebhookAttempt]:
    return list(WebhookAttempt.objects.filter(event_id=event_id).order_by("number"))


@pytest.mark.django_db
class TestIsSuperseded:
    def test_a_newer_succeeded_event_about_the_object_supersedes(self):
        old, new = update("cus_Sup1", 1, T0), update("cus_Sup1", 2, T0 + 1)
        store(old)
        store(new)
        older = WebhookEvent.objects.get(pk=old["id"])
        assert older.is_superseded is False  # the newer one has not succeeded yet
        WebhookEvent.objects.filter(pk=new["id"]).update(status="succeeded")
        older = WebhookEvent.objects.get(pk=old["id"])
        assert older.is_superseded is True and older.superseded_by == new["id"]
        assert WebhookEvent.objects.get(pk=new["id"]).is_superseded is False

    def test_events_of_the_same_second_never_supersede_each_other(self):
        a, b = update("cus_Sup2", 1, T0), update("cus_Sup2", 2, T0)
        store(a)
        store(b)
        WebhookEvent.objects.filter(pk=b["id"]).update(status="succeeded")
        assert WebhookEvent.objects.get(pk=a["id"]).is_superseded is False

    def test_thin_events_compare_to_the_millisecond(self):
        first = build_thin_event("v1.customer.updated", object_id="cus_Sup3", created=T0 + 0.1)
        second = build_thin_event("v1.customer.updated", object_id="cus_Sup3", created=T0 + 0.7)
        for event in (first, second):
            WebhookEvent.objects.record(parse_thin_event(event), encode_event(event), "thin")
        WebhookEvent.objects.filter(pk=second["id"]).update(status="succeeded")
        assert WebhookEvent.objects.get(pk=first["id"]).is_superseded is True

    def test_an_endpoint_that_skips_superseded_events_runs_no_handler_and_says_why(
        self, handler_log
    ):
        newer, older = update("cus_Sup4", 2, T0 + 5), update("cus_Sup4", 1, T0)
        settings = dict(webhook_settings.user_settings)
        default = {**settings["ENDPOINTS"]["default"], "SKIP_SUPERSEDED": True}
        with override_settings(
            STRIPE_WEBHOOKS={**settings, "ENDPOINTS": {**settings["ENDPOINTS"], "default": default}}
        ):
            run_handlers(newer)
            skipped = run_handlers(older)
        assert skipped.status == "succeeded"
        [attempt] = attempts(older["id"])
        assert (attempt.outcome, attempt.skipped) == ("superseded", "superseded")
        assert f"superseded by {newer['id']}" in attempt.note
        assert handler_calls(handler_log, older["id"]) == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_skip_superseded_handlers_skip_older_updates_that_arrive_after_a_newer_one(
    client, handler_log
):
    """No ordering: version 3 is delivered and processed first, then 2 and 1 together."""
    v1, v2, v3 = (update("cus_Late0001", n, T0 + n) for n in (1, 2, 3))
    post_signed(client, v3)
    wait_for_status(v3["id"], "succeeded")
    post_signed(client, v2)
    post_signed(client, v1)
    for event in (v1, v2):
        wait_for_status(event["id"], "succeeded")

    assert state("cus_Late0001", "guarded") == "3"  # the newest state stands
    assert state("cus_Late0001", "plain") in {"1", "2"}  # an older one overwrote it
    for event in (v1, v2):
        [attempt] = attempts(event["id"])
        assert attempt.outcome == "succeeded"  # the other handlers ran
        assert attempt.skipped == "superseded"
        assert f"superseded by {v3['id']}" in attempt.note
        assert "track_state_guarded" in attempt.note
        names = [name for _, name, _ in handler_calls(handler_log, event["id"])]
        assert "plain" in names and "guarded" not in names


def publish(queue: str, event: dict) -> None:
    celery_app.send_task(
        PROCESS_EVENT,
        args=(event["id"],),
        kwargs=task_kwargs(event["type"], "delivery"),
        queue=queue,
    )


@pytest.fixture(scope="module")
def ordered_lane(stack_env, log_dir) -> Iterator[faults.Lane]:
    """Two worker processes with ORDERING = "object"; failing retries wait 60 s."""
    overrides = {"ORDERING": "object", "ORDERING_MAX_WAIT": 3, "RETRY_SCHEDULE": [60, 60]}
    lane = faults.make_lane(stack_env, log_dir, WEBHOOKS_TEST_OVERRIDES=json.dumps(overrides))
    lane.worker(concurrency=2)
    yield lane
    lane.stop()


def intervals(ids: list[str]) -> list[tuple[datetime, datetime]]:
    rows = WebhookAttempt.objects.filter(event_id__in=ids).values_list("started_at", "finished_at")
    return sorted((start, end or datetime.now(UTC)) for start, end in rows)


@pytest.mark.django_db(transaction=True)
def test_ordering_applies_one_objects_events_one_at_a_time_in_created_order(
    ordered_lane, handler_log: Path
):
    customer = f"cus_Order{int(time.time() * 1000) % 10**9}"
    tag = customer[-6:]
    # Two in the same second: the event id breaks the tie ("a" before "b").
    events = [
        update(customer, 1, T0 + 1, event_id=f"evt_{tag}_c"),
        update(customer, 2, T0 + 2, event_id=f"evt_{tag}_a"),
        update(customer, 3, T0 + 2, event_id=f"evt_{tag}_b"),
        update(customer, 4, T0 + 3, event_id=f"evt_{tag}_d"),
    ]
    for event in events:
        store(event)
    for event in reversed(events):  # newest first, to two worker processes at once
        publish(ordered_lane.queue, event)
    ids = [e["id"] for e in events]
    faults.wait_all_succeeded(ids, timeout=60, lane=ordered_lane)

    applied = [c.event_id for c in faults.logged_calls(handler_log, ids) if c.handler == "plain"]
    assert applied == ids
    assert state(customer, "plain") == state(customer, "guarded") == "4"
    spans = intervals(ids)
    assert all(
        end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:], strict=False)
    )
    triggers = set()
    for event_id in ids:  # waiting used no attempt, and nothing was skipped
        [attempt] = attempts(event_id)
        assert attempt.outcome == "succeeded" and attempt.skipped == ""
        triggers.add(attempt.trigger)
    assert "order" in triggers  # the later ones waited, and ran when their turn came


@pytest.mark.django_db(transaction=True)
def test_a_failing_event_holds_its_objects_later_events_only_until_the_bound(ordered_lane):
    customer = f"cus_Bound{int(time.time() * 1000) % 10**9}"
    failing = update(customer, 1, T0 + 1, metadata={"test_behavior": "always_fail"})
    later = [update(customer, n, T0 + n) for n in (2, 3)]
    for event in (failing, *later):
        store(event)
    publish(ordered_lane.queue, failing)
    wait_for_status(failing["id"], "retrying")
    for event in reversed(later):
        publish(ordered_lane.queue, event)

    faults.wait_all_succeeded([e["id"] for e in later], timeout=30, lane=ordered_lane)

    assert WebhookEvent.objects.get(pk=failing["id"]).status == "retrying"
    assert state(customer, "plain") == "3"
    [first] = attempts(later[0]["id"])
    assert f"ran before the earlier {failing['id']}" in first.note
    started = [attempts(e["id"])[0].started_at for e in later]
    assert started == sorted(started)  # the later two still in their own order
    received = WebhookEvent.objects.get(pk=failing["id"]).received_at
    waited = (started[0] - received).total_seconds()
    assert 3 <= waited < 3 + 10  # held for ORDERING_MAX_WAIT, then at the next recheck
