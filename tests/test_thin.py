"""Thin (v2) events: verified and parsed by the stripe library on a thin endpoint, stored
byte-exact, de-duplicated, routed by type, and fetching through the stand-in for Stripe's API."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.test.utils import override_settings

from config.celery_app import app as celery_app
from tests.testapp.models import SideEffect
from webhook_ingest.conf import webhook_settings
from webhook_ingest.exceptions import MissingApiKey
from webhook_ingest.models import WebhookEvent
from webhook_ingest.parsing import parse_event, type_prefixes
from webhook_ingest.thin import parse_thin_event
from webhook_worker.celery import PROCESS_EVENT
from webhook_worker.enqueue import task_kwargs
from webhook_worker.events_api import Filters
from webhook_worker.models import WebhookAttempt
from webhook_worker.stripe_events import build_thin_event, encode_event, thin_related_object
from webhook_worker.testing import run_handlers

from . import faults
from .constants import API_KEY, SECRET, THIN_SECRET
from .helpers import handler_calls, make_event, post_signed, wait_for_status
from .test_ingest import assert_rejected

CUSTOMER = {"id": "cus_ThinTwin0001", "object": "customer", "email": "ada@example.com"}


def customer_reference(customer_id: str) -> dict[str, str]:
    """A thin event's `related_object` for a customer."""
    related = thin_related_object("v1.customer.updated", customer_id)
    assert related is not None
    return related


def post_thin(client, event, **kwargs):
    return post_signed(client, event, secret=THIN_SECRET, endpoint="thin", **kwargs)


@pytest.mark.django_db
class TestIngest:
    def test_thin_delivery_is_stored_byte_exact_with_its_own_columns(self, client):
        event = build_thin_event(
            "v2.core.account[requirements].updated",
            created=1767225600.25,
            context="acct_1Connected",
            object_id="acct_1Related",
        )
        body = encode_event(event)

        response = post_thin(client, body)

        assert response.status_code == 200, response.content
        assert response.json() == {"received": True, "id": event["id"], "duplicate": False}
        stored = WebhookEvent.objects.get(pk=event["id"])
        assert stored.body == body
        assert stored.type == "v2.core.account[requirements].updated"
        assert stored.parts == ["v2", "core", "account[requirements]", "updated"]
        assert stored.style == "thin" and stored.is_thin
        assert stored.source == "delivery"
        assert stored.endpoint == "thin"
        assert stored.created == datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)
        assert stored.account == "acct_1Connected"
        assert stored.object_id == "acct_1Related"
        assert stored.related_object == event["related_object"]
        assert stored.api_version is None
        assert stored.data == {}

    def test_a_duplicate_thin_delivery_is_acknowledged_and_stored_once(self, client):
        event = build_thin_event("v1.customer.updated")
        assert post_thin(client, event).json()["duplicate"] is False
        assert post_thin(client, event).json()["duplicate"] is True
        assert WebhookEvent.objects.filter(pk=event["id"]).count() == 1

    def test_thin_delivery_signed_with_the_snapshot_endpoints_secret_is_refused(self, client):
        response = post_signed(client, build_thin_event("v1.customer.updated"), endpoint="thin")
        assert_rejected(response, 400, "invalid_signature")

    def test_a_snapshot_event_on_a_thin_endpoint_is_400_and_not_stored(self, client):
        response = post_thin(client, make_event("customer.updated"))
        assert_rejected(response, 400, "wrong_payload_style")
        assert "thin" in response.json()["detail"]

    def test_a_thin_event_on_a_snapshot_endpoint_is_400_and_not_stored(self, client):
        response = post_signed(client, build_thin_event("v1.customer.updated"), secret=SECRET)
        assert_rejected(response, 400, "wrong_payload_style")

    @pytest.mark.parametrize(
        "mutate, field",
        [
            (lambda e: e.update(created=1767225600), "created"),
            (lambda e: e.update(created="2026-01-01T00:00:00"), "created"),
            (lambda e: e.update(id="not_an_event"), "id"),
            (lambda e: e.update(related_object={"id": "cus_1", "type": "customer"}), "related"),
            (lambda e: e["related_object"].update(url="https://elsewhere.example/x"), "related"),
            (lambda e: e.update(snapshot_event=42), "snapshot_event"),
            (lambda e: e.update(context=["acct_1"]), "context"),
        ],
    )
    def test_a_signed_thin_body_with_an_invalid_field_is_400(self, client, mutate, field):
        event = build_thin_event("v1.customer.updated")
        mutate(event)
        response = post_thin(client, event)
        assert_rejected(response, 400, "invalid_event")
        assert field in response.json()["detail"]

    def test_an_expired_thin_delivery_is_400(self, client):
        response = post_thin(client, build_thin_event("v1.customer.updated"), timestamp=1)
        assert_rejected(response, 400, "timestamp_out_of_tolerance")

    def test_a_type_the_library_does_not_know_is_stored_under_its_own_name(self, client):
        event = build_thin_event("v2.acme.widget[colour].repainted")
        assert post_thin(client, event).status_code == 200
        assert WebhookEvent.objects.get(pk=event["id"]).type == "v2.acme.widget[colour].repainted"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
class TestProcessing:
    def test_routed_by_dotted_type_and_the_handler_fetches_its_related_object(
        self, client, handler_log, stripe_api
    ):
        related = customer_reference(CUSTOMER["id"])
        stripe_api.objects[related["url"]] = CUSTOMER
        event = build_thin_event(
            "v1.customer.updated", related_object=related, context="acct_1Platform"
        )

        post_thin(client, event)
        wait_for_status(event["id"], "succeeded")

        assert [name for _, name, _ in handler_calls(handler_log, event["id"])] == [
            "all",
            "v1.customer",
        ]
        effects = SideEffect.objects.filter(event_id=event["id"]).values_list("handler", flat=True)
        assert sorted(effects) == ["all", "fetched:ada@example.com"]
        [fetch] = stripe_api.requests_to(related["url"])
        assert fetch.api_key == API_KEY
        assert fetch.context == "acct_1Platform"

    def test_a_bracketed_v2_type_reaches_the_handlers_of_its_segment(self, client, handler_log):
        event = build_thin_event(
            "v2.core.account[configuration.merchant].capability_status_updated"
        )
        post_thin(client, event)
        wait_for_status(event["id"], "succeeded")
        names = [name for _, name, _ in handler_calls(handler_log, event["id"])]
        assert names == ["all", "v2.core.account"]

    def test_a_failing_fetch_is_retried_like_any_handler_error(self, client, stripe_api):
        related = customer_reference("cus_Missing00")
        event = build_thin_event("v1.customer.updated", related_object=related)
        post_thin(client, event)
        stored = wait_for_status(event["id"], ["retrying", "failed"])
        assert "No such" in stored.last_error or "Unrecognized" in stored.last_error
        stripe_api.objects[related["url"]] = {**CUSTOMER, "id": related["id"]}
        wait_for_status(event["id"], "succeeded")


@pytest.mark.django_db
class TestFetching:
    """Which key, base and context the event's API calls use."""

    def stored(self, event: dict, endpoint: str = "thin") -> WebhookEvent:
        WebhookEvent.objects.record(parse_thin_event(event), encode_event(event), endpoint)
        return WebhookEvent.objects.get(pk=event["id"])

    def test_the_endpoints_key_wins_then_the_settings_then_stripe_api_key(self, stripe_api):
        related = customer_reference("cus_Keys000001")
        stripe_api.objects[related["url"]] = CUSTOMER
        event = self.stored(build_thin_event("v1.customer.updated", related_object=related))
        base = dict(webhook_settings.user_settings)
        endpoints = {**base["ENDPOINTS"]}

        def key_used(**changes) -> str:
            with override_settings(**changes):
                event.fetch_related_object()
            return stripe_api.requests_to(related["url"])[-1].api_key

        assert key_used() == API_KEY  # the STRIPE_API_KEY setting
        assert key_used(STRIPE_WEBHOOKS={**base, "API_KEY": "sk_test_webhooks"}) == (
            "sk_test_webhooks"
        )
        own = {**endpoints, "thin": {**endpoints["thin"], "API_KEY": "sk_test_endpoint"}}
        assert key_used(
            STRIPE_WEBHOOKS={**base, "API_KEY": "sk_test_webhooks", "ENDPOINTS": own}
        ) == ("sk_test_endpoint")

    def test_the_endpoints_api_base_wins(self, stripe_api):
        event = self.stored(build_thin_event("v1.customer.updated"))
        base = dict(webhook_settings.user_settings)
        endpoints = {**base["ENDPOINTS"]}
        elsewhere = {**endpoints["thin"], "API_BASE": "http://127.0.0.1:9"}
        with override_settings(
            STRIPE_WEBHOOKS={**base, "ENDPOINTS": {**endpoints, "thin": elsewhere}}
        ):
            with pytest.raises(Exception, match="(?i)connect"):
                event.fetch_related_object()
        assert stripe_api.requests_to("/v1/customers/") == []

    def test_fetch_event_reads_the_v2_event_in_its_context(self, stripe_api):
        event = build_thin_event("v1.customer.updated", context="acct_1Ctx")
        stripe_api.add_v2({**event, "changes": {"email": {"before": "a@x", "after": "b@x"}}})
        fetched = self.stored(event).fetch_event()
        assert fetched.id == event["id"]
        [request] = stripe_api.requests_to(f"/v2/core/events/{event['id']}")
        assert request.context == "acct_1Ctx"

    def test_fetch_event_of_a_snapshot_event_reads_v1(self, stripe_api):
        event = make_event("customer.updated", account="acct_1Snap")
        stripe_api.add_v1(event)
        stored = run_handlers(event)
        assert stored.fetch_event().id == event["id"]
        assert stripe_api.requests_to(f"/v1/events/{event['id']}")[0].context == "acct_1Snap"
        assert stored.related_object is None and stored.fetch_related_object() is None

    def test_fetch_related_object_is_none_without_one(self, stripe_api):
        event = build_thin_event("v2.core.event_destination.ping")
        assert "related_object" not in event
        assert self.stored(event).fetch_related_object() is None
        assert stripe_api.requests == []

    def test_no_api_key_anywhere_is_a_clear_configuration_error(self):
        event = self.stored(build_thin_event("v1.customer.updated"))
        with override_settings(STRIPE_API_KEY=""), pytest.raises(MissingApiKey) as info:
            event.fetch_related_object()
        assert 'STRIPE_WEBHOOKS["API_KEY"]' in str(info.value)
        assert "STRIPE_API_KEY" in str(info.value)


@pytest.mark.django_db
def test_with_deduplicate_twins_a_thin_twin_and_its_snapshot_run_handlers_once(handler_log):
    snapshot = make_event("customer.updated")
    thin = build_thin_event("v1.customer.updated", snapshot_event=snapshot["id"])
    with override_settings(
        STRIPE_WEBHOOKS={**webhook_settings.user_settings, "DEDUPLICATE_TWINS": True}
    ):
        run_handlers(snapshot)
        twin = run_handlers(thin, endpoint="thin")
    assert twin.status == "succeeded"
    attempt = twin.attempt_log.get()
    assert (attempt.outcome, attempt.skipped) == ("twin", "twin")
    assert snapshot["id"] in attempt.note
    assert handler_calls(handler_log, thin["id"]) == []


# --- without a server (make test-fast) ----------------------------------------


def test_a_thin_payload_gives_its_columns():
    event = build_thin_event(
        "v1.customer.updated", created=1767225600.5, object_id="cus_Cols", snapshot_event="evt_S1"
    )
    parsed = parse_thin_event(event)
    assert (parsed.style, parsed.type, parsed.object_id, parsed.snapshot_event) == (
        "thin",
        "v1.customer.updated",
        "cus_Cols",
        "evt_S1",
    )
    assert parsed.created == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert parsed.account is None and parsed.api_version is None


@pytest.mark.parametrize(
    "event_type, prefixes",
    [
        ("invoice.paid", ["invoice", "invoice.paid"]),
        (
            "v2.core.account[configuration.merchant].updated",
            [
                "v2",
                "v2.core",
                "v2.core.account",
                "v2.core.account[configuration.merchant]",
                "v2.core.account[configuration.merchant].updated",
            ],
        ),
    ],
)
def test_a_types_prefixes_are_its_dotted_segments(event_type, prefixes):
    assert type_prefixes(event_type) == prefixes


def test_the_backfills_type_filter_is_a_dotted_prefix():
    invoice = Filters(thin=False, type_prefix="invoice")
    assert invoice.matches({"type": "invoice.paid"})
    assert not invoice.matches({"type": "invoiceitem.created"})
    account = Filters(thin=True, type_prefix="v2.core.account")
    assert account.matches({"type": "v2.core.account[identity].updated"})
    assert not account.matches({"type": "v2.core.account_link.returned"})


@pytest.fixture(scope="module")
def twins_lane(stack_env, log_dir):
    """Two worker processes with DEDUPLICATE_TWINS on."""
    overrides = json.dumps({"DEDUPLICATE_TWINS": True})
    lane = faults.make_lane(stack_env, log_dir, WEBHOOKS_TEST_OVERRIDES=overrides)
    lane.worker(concurrency=2)
    yield lane
    lane.stop()


@pytest.mark.django_db(transaction=True)
def test_twins_published_at_once_run_handlers_once_between_them(
    twins_lane, stripe_api, handler_log
):
    pairs = []
    for n in range(6):
        customer = {**CUSTOMER, "id": f"cus_Twin{n:08d}"}
        snapshot = make_event("customer.updated", data_object=customer)
        related = customer_reference(customer["id"])
        stripe_api.objects[related["url"]] = customer
        thin = build_thin_event(
            "v1.customer.updated", related_object=related, snapshot_event=snapshot["id"]
        )
        for event, endpoint in ((snapshot, "default"), (thin, "thin")):
            body = encode_event(event)
            parsed = parse_thin_event(event) if endpoint == "thin" else parse_event(body)
            WebhookEvent.objects.record(parsed, body, endpoint)
        pairs.append((snapshot, thin))
    for snapshot, thin in pairs:  # each pair at once, to two worker processes
        for event in (thin, snapshot) if len(pairs) % 2 else (snapshot, thin):
            celery_app.send_task(
                PROCESS_EVENT,
                args=(event["id"],),
                kwargs=task_kwargs(event["type"], "delivery"),
                queue=twins_lane.queue,
            )
    ids = [e["id"] for pair in pairs for e in pair]
    faults.wait_all_succeeded(ids, timeout=60, lane=twins_lane)

    for snapshot, thin in pairs:
        ran = [e["id"] for e in (snapshot, thin) if handler_calls(handler_log, e["id"])]
        assert len(ran) == 1, (snapshot["id"], thin["id"])
        [skipped] = [e["id"] for e in (snapshot, thin) if e["id"] not in ran]
        attempt = WebhookAttempt.objects.get(event_id=skipped)
        assert attempt.outcome == "twin" and ran[0] in attempt.note
