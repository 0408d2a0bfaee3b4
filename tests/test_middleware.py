"""WebhookMiddleware: deliveries answered ahead of the project's middleware, everything
else untouched, and the same HTTP contract with or without it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import Client
from django.test.utils import override_settings
from django.urls import include, path

from webhook_ingest.checks import MIDDLEWARE_PATH, check_middleware
from webhook_ingest.models import WebhookEvent
from webhook_worker.stripe_events import encode_event, sign_body

from .constants import CONNECT_SECRET, SECRET
from .helpers import make_event, post_signed

pytestmark = pytest.mark.django_db

# This module is also a URLconf: a project that mounts the webhooks elsewhere.
urlpatterns = [path("hooks/in/", include("webhook_ingest.urls"))]

WITHOUT = [name for name in settings.MIDDLEWARE if name != MIDDLEWARE_PATH]


def post_to(client: Client, url: str, event: dict) -> object:
    body = encode_event(event)
    return client.post(
        url,
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_body(body, SECRET),
    )


@pytest.fixture(params=["with", "without"])
def any_client(request: pytest.FixtureRequest) -> Iterator[Client]:
    """A client of the reference project, with the middleware (its settings) and without."""
    if request.param == "with":
        assert settings.MIDDLEWARE[0] == MIDDLEWARE_PATH
        yield Client()
    else:
        with override_settings(MIDDLEWARE=WITHOUT):
            yield Client()


def test_deliveries_skip_the_browser_middleware_and_other_pages_do_not(client):
    event = make_event()
    delivery = post_signed(client, event)
    assert delivery.status_code == 200
    assert WebhookEvent.objects.filter(pk=event["id"]).exists()
    # XFrameOptionsMiddleware and SecurityMiddleware did not run for it...
    assert "X-Frame-Options" not in delivery.headers
    assert "X-Content-Type-Options" not in delivery.headers
    # ...and still run for every other page, the webhook URL's other methods included.
    for response in (client.get("/webhooks/health/"), client.get("/webhooks/stripe/")):
        assert response.headers["X-Frame-Options"] == "DENY"
    with override_settings(MIDDLEWARE=WITHOUT):
        assert Client().get("/webhooks/health/").headers["X-Frame-Options"] == "DENY"
        assert "X-Frame-Options" in post_signed(Client(), make_event()).headers


def test_other_posts_still_need_their_csrf_token():
    """The shortcut is for the webhook view alone: CSRF still guards every other form."""
    client = Client(enforce_csrf_checks=True)
    response = client.post("/admin/login/", {"username": "admin", "password": "x"})
    assert response.status_code == 403
    assert post_signed(client, make_event()).status_code == 200


@pytest.mark.parametrize(
    "url", ["/webhooks/stripe/connect/extra/", "/webhooks/stripex/", "/webhooks/stripe//"]
)
def test_paths_that_are_not_an_endpoint_go_down_the_stack(client, url):
    response = client.post(url, data="{}", content_type="application/json")
    assert response.status_code == 404
    assert response.headers["X-Frame-Options"] == "DENY"  # Django's own 404, not the view's
    assert "application/json" not in response.headers["Content-Type"]


def test_same_contract_with_and_without_the_middleware(any_client):
    event = make_event("customer.subscription.updated")
    first = post_signed(any_client, event)
    assert first.status_code == 200
    assert first.json() == {"received": True, "id": event["id"], "duplicate": False}
    assert post_signed(any_client, event).json()["duplicate"] is True
    assert (
        post_signed(any_client, make_event(), endpoint="connect", secret=CONNECT_SECRET).status_code
        == 200
    )
    assert post_signed(any_client, make_event(), signature="t=1,v1=00").status_code == 400
    unknown = post_signed(any_client, make_event(), endpoint="nope")
    assert (unknown.status_code, unknown.json()["error"]) == (404, "unknown_endpoint")
    assert post_to(any_client, "/webhooks/stripe", make_event()).status_code == 200
    assert any_client.get("/webhooks/stripe/").status_code == 405
    assert WebhookEvent.objects.count() == 3


@override_settings(ROOT_URLCONF="tests.test_middleware")
def test_webhooks_mounted_elsewhere_are_found_there(client):
    event = make_event()
    response = post_to(client, "/hooks/in/stripe/", event)
    assert response.status_code == 200
    assert "X-Frame-Options" not in response.headers  # answered by the middleware
    assert WebhookEvent.objects.filter(pk=event["id"]).exists()
    assert post_to(client, "/webhooks/stripe/", make_event()).status_code == 404


def test_a_middleware_above_it_is_a_warning():
    with override_settings(MIDDLEWARE=[WITHOUT[0], MIDDLEWARE_PATH, *WITHOUT[1:]]):
        [warning] = check_middleware()
    assert warning.id == "webhook_ingest.W002"
    assert WITHOUT[0] in warning.hint
    assert check_middleware() == []
