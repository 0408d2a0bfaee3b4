"""WebhookLane: deliveries answered at the WSGI level with the view's own contract;
everything else handed to Django; errors and connections handled as Django would."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.core.signals import got_request_exception
from django.db import connection
from django.test import Client, RequestFactory
from django.test.utils import CaptureQueriesContext

import webhook_ingest.views
from config.wsgi import application
from webhook_ingest.models import WebhookEvent
from webhook_ingest.wsgi import WebhookLane
from webhook_worker.testing import encode_event, sign_body

from .constants import CONNECT_SECRET, SECRET
from .helpers import make_event, post_signed

pytestmark = pytest.mark.django_db


def call(
    path: str = "/webhooks/stripe/",
    body: bytes = b"",
    method: str = "POST",
    signature: str | None = None,
    content_type: str = "application/json; charset=utf-8",
) -> tuple[int, dict[str, str], bytes]:
    """One request to the reference project's WSGI application, as a WSGI server makes it."""
    extra = {} if signature is None else {"HTTP_STRIPE_SIGNATURE": signature}
    environ = RequestFactory().generic(method, path, body, content_type, **extra).environ
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    result = application(environ, start_response)
    try:
        content = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return answer["status"], answer["headers"], content


def signed(event: dict[str, Any], secret: str = SECRET) -> tuple[bytes, str]:
    body = encode_event(event)
    return body.encode(), sign_body(body, secret)


def test_the_reference_project_serves_through_the_lane():
    assert isinstance(application, WebhookLane)


def test_a_delivery_is_stored_and_answered_by_the_view():
    event = make_event("invoice.paid")
    body, signature = signed(event)
    status, headers, content = call(body=body, signature=signature)
    assert status == 200
    assert json.loads(content) == {"received": True, "id": event["id"], "duplicate": False}
    assert headers["Content-Type"] == "application/json"
    assert "X-Frame-Options" not in headers  # no middleware ran for it
    assert WebhookEvent.objects.get(pk=event["id"]).body == body.decode()
    status, _, content = call(body=body, signature=signature)
    assert (status, json.loads(content)["duplicate"]) == (200, True)
    assert WebhookEvent.objects.count() == 1


def test_a_delivery_through_the_lane_costs_one_query_and_a_duplicate_two():
    """The ingest hot path's regression guard, as gunicorn serves it."""
    body, signature = signed(make_event())
    with CaptureQueriesContext(connection) as new:
        assert call(body=body, signature=signature)[0] == 200
    with CaptureQueriesContext(connection) as duplicate:
        assert call(body=body, signature=signature)[0] == 200
    assert len(new) == 1 and "ON CONFLICT" in new[0]["sql"], [q["sql"] for q in new]
    assert len(duplicate) == 2, [q["sql"] for q in duplicate]


def test_same_answers_as_django_serving_the_view():
    """Each request through the lane and through Django's own handling."""
    event = make_event()
    body, signature = signed(event)
    connect_body, connect_signature = signed(make_event(), CONNECT_SECRET)
    cases = [
        ("/webhooks/stripe/", body, signature),
        ("/webhooks/stripe/", body, signature),  # the duplicate
        ("/webhooks/stripe", *signed(make_event())),
        ("/webhooks/stripe/connect/", connect_body, connect_signature),
        ("/webhooks/stripe/nope/", *signed(make_event())),  # unknown endpoint
        ("/webhooks/stripe/", body, "t=1,v1=00"),  # bad signature
        ("/webhooks/stripe/", b"not json", None),  # unsigned
    ]
    lane = [call(path, data, signature=sig)[::2] for path, data, sig in cases]
    WebhookEvent.objects.all().delete()
    client = Client()
    django = []
    for path, data, sig in cases:
        extra = {} if sig is None else {"HTTP_STRIPE_SIGNATURE": sig}
        response = client.generic(
            "POST", path, data, content_type="application/json; charset=utf-8", **extra
        )
        django.append((response.status_code, response.content))
    assert lane == django
    assert [status for status, _ in lane] == [200, 200, 200, 200, 404, 400, 400]


def test_everything_else_goes_to_django():
    status, headers, content = call(method="GET")
    assert status == 405  # the view, behind the whole middleware stack
    assert headers["X-Frame-Options"] == "DENY"
    status, headers, _ = call("/admin/login/", method="GET")
    assert (status, headers["X-Frame-Options"]) == (200, "DENY")
    status, headers, _ = call("/webhooks/stripex/", body=b"{}")
    assert (status, headers["X-Frame-Options"]) == (404, "DENY")


def test_an_exception_in_the_view_is_djangos_500_and_is_reported(monkeypatch, caplog):
    def broken(*args: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(webhook_ingest.views, "_accept", broken)
    reported = []

    def receiver(**kwargs: Any) -> None:
        reported.append(kwargs["request"].path)

    got_request_exception.connect(receiver)
    try:
        with caplog.at_level("ERROR", logger="django.request"):
            body, signature = signed(make_event())
            status, _, content = call(body=body, signature=signature)
    finally:
        got_request_exception.disconnect(receiver)
    assert status == 500
    assert b"boom" not in content and b"Traceback" not in content
    assert reported == ["/webhooks/stripe/"]
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


def test_a_rejected_delivery_is_logged_as_django_logs_it(caplog):
    with caplog.at_level("WARNING", logger="django.request"):
        status, _, _ = call(body=b"{}", signature="t=1,v1=00")
    assert status == 400
    assert any(
        r.name == "django.request" and "Bad Request" in r.getMessage() for r in caplog.records
    )


@pytest.mark.django_db(transaction=True)
def test_a_connection_older_than_conn_max_age_is_closed_after_the_delivery():
    """As Django's request signals would: the next delivery opens a fresh one."""
    assert post_signed(Client(), make_event()).status_code == 200  # a connection is open
    connection.close_at = time.monotonic() - 1
    body, signature = signed(make_event())
    assert call(body=body, signature=signature)[0] == 200
    assert connection.connection is None
    body, signature = signed(make_event())
    assert call(body=body, signature=signature)[0] == 200
    assert connection.connection is not None and WebhookEvent.objects.count() == 3
