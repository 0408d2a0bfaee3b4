"""The webhook view: what is stored, and the HTTP contract for every kind of request.

These run inside a test transaction, so the view's on_commit enqueue never
fires: they are about the response and the row, not processing.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings

from webhook_ingest.models import WebhookEvent
from webhook_worker.stripe_events import encode_event, sign_body

from .constants import CONNECT_SECRET, OLD_SECRET, OTHER_SECRET, SECRET
from .helpers import make_event, post_signed, prepared_statements

pytestmark = pytest.mark.django_db


def assert_rejected(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    text = response.content.decode()
    for secret in (SECRET, OLD_SECRET, CONNECT_SECRET):
        assert secret not in text
    assert "Traceback" not in text
    assert WebhookEvent.objects.count() == 0


def test_new_event_is_stored_with_its_columns_and_exact_body(client):
    event = make_event(
        "customer.subscription.updated", account="acct_1ConnectedAccount", livemode=True
    )
    body = encode_event(event)

    response = post_signed(client, body)

    assert response.status_code == 200
    assert response.json() == {"received": True, "id": event["id"], "duplicate": False}
    stored = WebhookEvent.objects.get(pk=event["id"])
    assert stored.body == body
    assert stored.payload == event
    assert stored.type == "customer.subscription.updated"
    assert stored.category == "customer"
    assert stored.verb == "subscription.updated"
    assert stored.parts == ["customer", "subscription", "updated"]
    assert stored.livemode is True
    assert stored.account == "acct_1ConnectedAccount"
    assert stored.api_version == event["api_version"]
    assert stored.created == datetime.fromtimestamp(event["created"], tz=UTC)
    assert stored.object_id == event["data"]["object"]["id"]
    assert stored.data["previous_attributes"] == {"cancel_at_period_end": False}
    assert stored.endpoint == "default"
    assert stored.status == "pending"
    assert stored.attempts == 0


def test_new_event_costs_one_query_and_a_duplicate_two(client):
    """Regression guard for the ingest hot path: one INSERT ... ON CONFLICT."""
    event = make_event()
    with CaptureQueriesContext(connection) as new:
        assert post_signed(client, event).status_code == 200
    with CaptureQueriesContext(connection) as duplicate:
        assert post_signed(client, event).status_code == 200
    assert len(new) == 1, [q["sql"] for q in new]
    assert "ON CONFLICT" in new[0]["sql"]
    assert len(duplicate) == 2, [q["sql"] for q in duplicate]


def test_the_insert_is_planned_once_per_connection(client):
    """Postgres parses and plans the INSERT once, not for every delivery (prepared statements)."""
    assert not any("ON CONFLICT" in sql for sql in prepared_statements())
    for _ in range(6):
        assert post_signed(client, make_event()).status_code == 200
    assert any("ON CONFLICT" in sql for sql in prepared_statements())


def test_duplicate_delivery_is_acknowledged_and_stored_once(client):
    event = make_event("invoice.paid")
    first = post_signed(client, event)
    WebhookEvent.objects.filter(pk=event["id"]).update(status="succeeded")

    second = post_signed(client, event)

    assert first.json()["duplicate"] is False
    assert second.status_code == 200
    assert second.json() == {"received": True, "id": event["id"], "duplicate": True}
    assert WebhookEvent.objects.filter(pk=event["id"]).count() == 1
    assert WebhookEvent.objects.get(pk=event["id"]).status == "succeeded"


def test_event_without_object_id_is_stored(client):
    """invoice.upcoming's invoice has no id yet."""
    event = make_event("invoice.upcoming")
    assert post_signed(client, event).status_code == 200
    assert WebhookEvent.objects.get(pk=event["id"]).object_id == ""


def test_rotated_secret_is_accepted(client):
    event = make_event()
    assert post_signed(client, event, secret=OLD_SECRET).status_code == 200


def test_named_endpoint_uses_its_own_secret(client):
    event = make_event()
    response = post_signed(client, event, secret=CONNECT_SECRET, endpoint="connect")
    assert response.status_code == 200
    assert WebhookEvent.objects.get(pk=event["id"]).endpoint == "connect"


def test_named_endpoint_rejects_the_default_endpoints_secret(client):
    response = post_signed(client, make_event(), secret=SECRET, endpoint="connect")
    assert_rejected(response, 400, "invalid_signature")


def test_trailing_slash_is_optional(client):
    event = make_event()
    body = encode_event(event)
    response = client.post(
        "/webhooks/stripe",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_body(body, SECRET),
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "signature, code",
    [
        ("", "missing_signature"),
        ("nonsense", "malformed_signature"),
        ("t=1700000000", "malformed_signature"),
    ],
)
def test_missing_or_malformed_signature(client, signature, code):
    assert_rejected(post_signed(client, make_event(), signature=signature), 400, code)


def test_wrong_secret(client):
    assert_rejected(
        post_signed(client, make_event(), secret=OTHER_SECRET), 400, "invalid_signature"
    )


def test_tampered_body(client):
    event = make_event()
    body = encode_event(event)
    header = sign_body(body, SECRET)
    tampered = body.replace('"livemode": false', '"livemode": true', 1)
    assert tampered != body
    response = post_signed(client, tampered, signature=header)
    assert_rejected(response, 400, "invalid_signature")


def test_expired_signature(client):
    response = post_signed(client, make_event(), timestamp=int(time.time()) - 3600)
    assert_rejected(response, 400, "timestamp_out_of_tolerance")


def test_future_signature(client):
    response = post_signed(client, make_event(), timestamp=int(time.time()) + 3600)
    assert_rejected(response, 400, "timestamp_out_of_tolerance")


@pytest.mark.parametrize(
    "body, detail",
    [
        ("", "not valid JSON"),
        ("not json at all", "not valid JSON"),
        ("[1, 2, 3]", "JSON object"),
        ('{"hello": "world"}', "'object'"),
        ('{"id": "evt_1", "object": "event", "type": "x"}', "'created'"),
        ('{"id": "cus_123", "object": "event"}', "'id'"),
        ('{"value": NaN}', "not valid JSON"),
    ],
)
def test_signed_body_that_is_not_a_stripe_event(client, body, detail):
    response = post_signed(client, body)
    assert_rejected(response, 400, "invalid_event")
    assert detail in response.json()["detail"]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda e: e.pop("type"), "type"),
        (lambda e: e.update(type="Customer Created"), "type"),
        (lambda e: e.update(id="evt_"), "id"),
        (lambda e: e.update(id="evt_" + "a" * 300), "id"),
        (lambda e: e.update(id="evt_../../etc"), "id"),
        (lambda e: e.update(created="yesterday"), "created"),
        (lambda e: e.update(livemode="no"), "livemode"),
        (lambda e: e.update(data={"object": "cus_1"}), "data.object"),
        (lambda e: e.update(account=12), "account"),
    ],
)
def test_event_with_invalid_fields(client, mutate, field):
    event = make_event()
    mutate(event)
    response = post_signed(client, json.dumps(event))
    assert_rejected(response, 400, "invalid_event")
    assert f"'{field}'" in response.json()["detail"]


def test_body_that_is_not_utf8(client):
    body = b'{"id": "evt_1", "object": "event", "name": "\xff\xfe"}'
    response = client.post(
        "/webhooks/stripe/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE="t=1,v1=00",
    )
    assert_rejected(response, 400, "invalid_event")


def test_deeply_nested_json(client):
    depth = 100_000
    body = '{"id": "evt_deep", "object": "event", "x": ' + "[" * depth + "]" * depth + "}"
    assert_rejected(post_signed(client, body), 400, "invalid_event")


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "head", "options"])
def test_other_methods_are_not_allowed(client, method):
    response = getattr(client, method)("/webhooks/stripe/")
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_oversized_body_is_refused_before_reading(client):
    big = make_event(metadata={"blob": "x" * (300 * 1024)})
    response = post_signed(client, big)
    assert_rejected(response, 413, "body_too_large")


@override_settings(
    STRIPE_WEBHOOKS={"MAX_BODY_BYTES": 10_000, "ENDPOINTS": {"default": {"SECRETS": [SECRET]}}}
)
def test_size_limit_follows_the_setting(client):
    small = make_event("customer.created")
    assert len(encode_event(small)) < 10_000
    assert post_signed(client, small).status_code == 200
    assert_rejected_count = WebhookEvent.objects.count()
    response = post_signed(client, make_event(metadata={"blob": "x" * 10_000}))
    assert response.status_code == 413
    assert WebhookEvent.objects.count() == assert_rejected_count


@pytest.mark.parametrize("name", ["nope", "..", "%2e%2e", "default%2F..", "connect.evil"])
def test_unknown_endpoint(client, name):
    body = encode_event(make_event())
    response = client.post(
        f"/webhooks/stripe/{name}/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_body(body, SECRET),
    )
    assert response.status_code == 404
    assert WebhookEvent.objects.count() == 0


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_wrong_content_type(client, content_type):
    response = post_signed(client, make_event(), content_type=content_type)
    assert_rejected(response, 400, "unsupported_content_type")


@override_settings(STRIPE_WEBHOOKS={"ENDPOINTS": {"default": {"SECRETS": []}}})
def test_endpoint_without_secret_answers_5xx_so_stripe_retries(client):
    response = post_signed(client, make_event())
    assert_rejected(response, 500, "endpoint_not_configured")


def test_csrf_is_not_required_even_with_enforcing_client():
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert post_signed(strict, make_event()).status_code == 200
