"""Backfill and reconciliation from the stand-in for Stripe's Events API.

The endpoint is "down" for a stretch: the stand-in lists every event, some
of them were delivered to the view and some never were. Each missing one
must be recorded once (source backfill or reconciliation), processed once,
and the delivered ones left alone.
"""

from __future__ import annotations

import io
import time
from collections import Counter

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test.utils import override_settings

from tests.testapp.models import SideEffect
from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import WebhookEvent
from webhook_worker import reconcile
from webhook_worker.models import EventScan, WebhookAttempt
from webhook_worker.stripe_events import build_thin_event

from .constants import THIN_SECRET
from .helpers import make_event, post_signed, wait_for_status, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker")]


@pytest.fixture(autouse=True)
def processed_before_teardown():
    """What a test recorded is processed before the tables are emptied for the next one."""
    yield
    wait_until(
        lambda: not WebhookEvent.objects.filter(status__in=WebhookEvent.UNFINISHED).exists(),
        timeout=60,
        message="the recorded events to be processed",
    )


def backfill(*args: str) -> str:
    out = io.StringIO()
    call_command("webhooks_backfill", *args, stdout=out)
    return out.getvalue()


def summary(output: str) -> str:
    return [line for line in output.splitlines() if line.startswith("found ")][-1]


def outage(client, stripe_api, count: int = 12, down: range = range(4, 8)) -> list[dict]:
    """`count` events over the last two hours; those in `down` were never delivered."""
    now = int(time.time())
    events = []
    for n in range(count):
        event = make_event("customer.created", created=now - 7200 + n * (7000 // count))
        stripe_api.add_v1(event, delivered=n not in down)
        if n not in down:
            assert post_signed(client, event).status_code == 200
        events.append(event)
    return events


def test_backfill_records_each_missed_event_once_and_leaves_delivered_ones_alone(
    client, stripe_api
):
    events = outage(client, stripe_api)
    missed = [e["id"] for n, e in enumerate(events) if n in range(4, 8)]

    output = backfill("--hours", "3")

    assert summary(output) == "found 12, recorded 4, already present 8"
    assert "page 1:" in output
    for event_id in missed:
        stored = wait_for_status(event_id, "succeeded")
        assert stored.source == "backfill" and stored.endpoint == "default"
        assert WebhookAttempt.objects.get(event_id=event_id).trigger == "backfill"
    for event in events:
        wait_for_status(event["id"], "succeeded")
    effects = Counter(SideEffect.objects.filter(handler="all").values_list("event_id", flat=True))
    assert all(effects[e["id"]] == 1 for e in events)
    assert summary(backfill("--hours", "3")) == "found 12, recorded 0, already present 12"


def test_failed_only_asks_for_undelivered_events(client, stripe_api):
    outage(client, stripe_api)
    assert summary(backfill("--failed-only", "--dry-run")) == (
        "found 4, recorded 0, already present 0 (dry run: 4 would be recorded; nothing was changed)"
    )
    [request] = stripe_api.requests_to("/v1/events")[-1:]
    assert request.query["delivery_success"] == "false"
    assert WebhookEvent.objects.filter(source="backfill").count() == 0


def test_type_is_a_dotted_prefix(stripe_api):
    now = int(time.time())
    for event_type in ("invoice.paid", "invoice.payment_failed", "invoice.created"):
        stripe_api.add_v1(make_event(event_type, created=now - 60), delivered=False)
    stripe_api.add_v1(
        make_event("invoice.paid", created=now - 60, data_object={"id": "ii_1", "object": "x"})
        | {"type": "invoiceitem.created"}
    )
    stripe_api.add_v1(make_event("customer.created", created=now - 60))

    assert summary(backfill("--hours", "1", "--type", "invoice")).startswith("found 3, recorded 3")
    assert stripe_api.requests_to("/v1/events")[0].query["type"] == "invoice*"
    assert set(WebhookEvent.objects.values_list("type", flat=True)) == {
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.created",
    }


def test_an_interrupted_backfill_resumes_from_its_checkpoint(stripe_api):
    now = int(time.time())
    events = [
        stripe_api.add_v1(make_event("customer.created", created=now - 3000 + n * 10), False)
        for n in range(250)
    ]
    stripe_api.fail_list_after(2)  # two pages of 100, then the API fails

    with pytest.raises(CommandError, match="run the same command again to resume"):
        backfill("--hours", "1")
    assert WebhookEvent.objects.count() == 200
    [scan] = EventScan.objects.filter(kind="backfill")
    assert scan.state == "interrupted" and scan.cursor

    stripe_api.fail_list_after(None)
    listed_before = len(stripe_api.requests_to("/v1/events"))
    output = backfill("--hours", "1")

    assert "Resuming the backfill" in output
    assert summary(output) == "found 50, recorded 50, already present 0"
    resumed = stripe_api.requests_to("/v1/events")[listed_before:]
    assert resumed[0].query["starting_after"] == scan.cursor  # not from the first page again
    assert WebhookEvent.objects.count() == len(events) == 250
    assert EventScan.objects.get(pk=scan.pk).state == "finished"


def test_a_thin_endpoint_backfills_from_the_v2_events_api_page_by_page(stripe_api):
    now = time.time()
    events = [
        stripe_api.add_v2(build_thin_event("v2.core.account.updated", created=now - 600 + n))
        for n in range(150)
    ]

    assert summary(backfill("--endpoint", "thin", "--hours", "1")) == (
        "found 150, recorded 150, already present 0"
    )
    assert any(r.query.get("page") for r in stripe_api.requests_to("/v2/core/events"))
    stored = WebhookEvent.objects.get(pk=events[0]["id"])
    assert (stored.style, stored.source, stored.endpoint) == ("thin", "backfill", "thin")
    assert stored.object_id == events[0]["related_object"]["id"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "2026-01-01T00:00:00"], "with an offset"),
        (["--since", "yesterday"], "ISO 8601"),
        (["--endpoint", "nope"], "No endpoint named 'nope'"),
        (["--endpoint", "thin", "--failed-only"], "delivery_success=false"),
        (["--type", "Invoice*"], "not an event type"),
        (["--hours", "0"], "positive"),
    ],
)
def test_bad_arguments_are_clear_errors(args, message, stripe_api):
    with pytest.raises(CommandError, match=message):
        backfill(*args)
    assert stripe_api.requests == []


def test_since_and_hours_are_exclusive():
    with pytest.raises(CommandError):
        backfill("--since", "2026-01-01T00:00:00Z", "--hours", "3")


def reconciled(every: int = 300) -> dict:
    settings = dict(webhook_settings.user_settings)
    endpoints = {**settings["ENDPOINTS"]}
    endpoints["default"] = {**endpoints["default"], "RECONCILE_EVERY": every}
    return {**settings, "ENDPOINTS": endpoints}


def test_reconciliation_recovers_missed_events_and_reports_its_checkpoint(client, stripe_api):
    outage(client, stripe_api)
    with override_settings(STRIPE_WEBHOOKS=reconciled()):
        assert reconcile.run_due() == 1
        scan = EventScan.objects.get(kind="reconciliation", endpoint="default")
        assert (scan.found, scan.recorded, scan.already_present) == (12, 4, 8)
        assert WebhookEvent.objects.filter(source="reconciliation").count() == 4
        assert reconcile.run_due() == 0  # not due again before RECONCILE_EVERY

        health = client.get("/webhooks/health/").json()["reconciliation"]["default"]
        assert health["last_run"]["recorded"] == 4 and health["last_run"]["error"] == ""
        assert 55 <= health["checkpoint_age_seconds"] < 120  # SETTLE behind now
        metrics = client.get("/webhooks/metrics").content.decode()
    assert 'webhooks_reconcile_last_run_events{count="recorded",endpoint="default"} 4.0' in metrics
    assert 'webhooks_reconcile_last_run_ok{endpoint="default"} 1.0' in metrics
    assert 'webhooks_events_by_origin{source="reconciliation",style="snapshot"} 4.0' in metrics


def test_a_second_reconciliation_starts_from_the_checkpoint(client, stripe_api):
    outage(client, stripe_api, count=6, down=range(0))
    with override_settings(STRIPE_WEBHOOKS=reconciled(every=60)):
        reconcile.run_due()
        first = EventScan.objects.get(kind="reconciliation")
        EventScan.objects.filter(pk=first.pk).update(started_at=first.started_at.replace(year=2000))
        late = stripe_api.add_v1(make_event("customer.created", created=int(time.time()) - 90))
        before = len(stripe_api.requests_to("/v1/events"))
        reconcile.run_due()
    second = EventScan.objects.get(pk=first.pk)
    assert second.recorded == 1 and WebhookEvent.objects.get(pk=late["id"]).source == (
        "reconciliation"
    )
    since = int(stripe_api.requests_to("/v1/events")[before].query["created[gte]"])
    assert since >= int(first.checkpoint.timestamp()) - 5 * 60  # the overlap, not three days


def test_reconciliation_without_an_api_key_reports_the_error_in_health(client, stripe_api):
    with override_settings(STRIPE_WEBHOOKS=reconciled(), STRIPE_API_KEY=""):
        assert reconcile.run_due() == 0
        last_run = client.get("/webhooks/health/").json()["reconciliation"]["default"]["last_run"]
        metrics = client.get("/webhooks/metrics").content.decode()
    assert "API_KEY" in last_run["error"] and last_run["state"] == "interrupted"
    assert 'webhooks_reconcile_last_run_ok{endpoint="default"} 0.0' in metrics


def test_thin_deliveries_and_backfilled_events_are_told_apart(client, stripe_api):
    delivered = build_thin_event("v1.customer.updated")
    post_signed(client, delivered, secret=THIN_SECRET, endpoint="thin")
    stripe_api.add_v2(delivered)
    stripe_api.add_v2(build_thin_event("v1.customer.updated"))
    assert summary(backfill("--endpoint", "thin", "--hours", "1")) == (
        "found 2, recorded 1, already present 1"
    )
    origins = set(WebhookEvent.objects.values_list("style", "source"))
    assert origins == {("thin", "delivery"), ("thin", "backfill")}
