"""The dj-stripe bridge (webhook_worker.contrib.djstripe) with real dj-stripe, Postgres and workers.

`make test-djstripe` runs this file in .venv-djstripe-<version> (dj-stripe
2.11, or DJSTRIPE_VERSION=2.10) with tests.settings_djstripe; elsewhere it
skips, saying so. dj-stripe's sync calls Stripe's API: here the suite's
stand-in (tests/stripe_standin.py) serves the objects the test events name,
the same example objects the events are built from (Stripe's own, in
webhook_worker/event_templates).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

pytest.importorskip(
    "djstripe",
    reason="dj-stripe is not installed here: `make test-djstripe` runs the bridge's tests "
    "in a virtualenv of their own (.venv-djstripe-<version>)",
)
if "webhook_worker.contrib.djstripe" not in settings.INSTALLED_APPS:
    pytest.skip(
        "the bridge's tests need its settings: run `make test-djstripe` "
        "(pytest --ds=tests.settings_djstripe tests/test_djstripe.py)",
        allow_module_level=True,
    )

from django.apps import apps  # noqa: E402
from django.test import Client  # noqa: E402
from djstripe.models import Event, Invoice, Subscription, WebhookEndpoint  # noqa: E402

from webhook_ingest.models import WebhookEvent  # noqa: E402
from webhook_worker.actions import retry_events  # noqa: E402
from webhook_worker.contrib.djstripe.checks import check_djstripe_bridge  # noqa: E402
from webhook_worker.models import WebhookAttempt  # noqa: E402
from webhook_worker.stripe_events import encode_event, sign_body  # noqa: E402

from .constants import CONNECT_SECRET, SECRET  # noqa: E402
from .djstripe_support import (  # noqa: E402
    ACCOUNT,
    create_webhook_endpoint,
    empty_djstripe_tables,
    template,
)
from .helpers import make_event, post_signed, wait_for_status, wait_until  # noqa: E402
from .stack import Process  # noqa: E402
from .stripe_standin import StandIn  # noqa: E402
from .testapp.models import SideEffect  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

SUBSCRIPTION, INVOICE = "customer.subscription.updated", "invoice.paid"
# What dj-stripe's sync of those two events retrieves: event type whose
# template object is served -> the API's collection.
SERVED = {
    "customer.updated": "customers",
    SUBSCRIPTION: "subscriptions",
    INVOICE: "invoices",
    "price.updated": "prices",
    "product.updated": "products",
}
# Rows that differ between two runs by nature: dj-stripe's own endpoint and
# request records, and the keys it registers under generated ids.
NOT_COMPARED = {"WebhookEndpoint", "WebhookEventTrigger", "APIKey"}
# dj-stripe's bookkeeping columns: its integer keys and its own timestamps.
LOCAL_COLUMNS = {"djstripe_id", "djstripe_created", "djstripe_updated"}


def plan_of(price: dict[str, Any]) -> dict[str, Any]:
    """The plan Stripe's API shows beside a recurring price, under the same id.

    The templates leave it out; Stripe's example subscription items have one,
    and dj-stripe 2.10 needs it (a subscription item's plan is not null there).
    """
    recurring = price["recurring"]
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": price["livemode"],
        "metadata": {},
        "meter": None,
        "nickname": None,
        "product": price["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": recurring["usage_type"],
    }


@pytest.fixture
def djstripe_api(stripe_api: StandIn) -> StandIn:
    """The stand-in for Stripe's API, serving what dj-stripe retrieves for the test events."""
    for event_type, collection in SERVED.items():
        obj = template(event_type)
        stripe_api.objects[f"/v1/{collection}/{obj['id']}"] = obj
    subscription = stripe_api.objects[f"/v1/subscriptions/{template(SUBSCRIPTION)['id']}"]
    for item in subscription["items"]["data"]:
        item["plan"] = plan_of(item["price"])
        stripe_api.objects[f"/v1/plans/{item['plan']['id']}"] = item["plan"]
    product = template("product.updated")["id"]
    stripe_api.objects[f"/v1/products/{product}/features"] = {
        "object": "list",
        "data": [],
        "has_more": False,
        "url": f"/v1/products/{product}/features",
    }
    stripe_api.objects["/v1/account"] = ACCOUNT
    return stripe_api


@pytest.fixture
def djstripe_endpoint(transactional_db: None) -> WebhookEndpoint:
    """dj-stripe's own endpoint, `/stripe/webhook/<uuid>/`, verifying with the suite's secret."""
    return create_webhook_endpoint()


def calls(log_path: Path, event_id: str) -> list[tuple[str, int]]:
    """(name, pid) of each logged call for the event, in order."""
    found = []
    for line in log_path.read_text().splitlines():
        eid, name, _attempt, pid = line.split()
        if eid == event_id:
            found.append((name, int(pid)))
    return found


def names(log_path: Path, event_id: str) -> list[str]:
    return [name for name, _ in calls(log_path, event_id)]


def post_to_djstripe(endpoint: WebhookEndpoint, event: dict[str, Any]) -> Any:
    """POST `event` to dj-stripe's own view, signed as Stripe signs it: processed in the request."""
    body = encode_event(event)
    return Client().post(
        f"/stripe/webhook/{endpoint.djstripe_uuid}/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_body(body, SECRET),
    )


def attempts(event_id: str) -> list[WebhookAttempt]:
    return list(WebhookAttempt.objects.filter(event_id=event_id).order_by("number"))


def test_events_to_our_endpoint_become_djstripe_rows_and_fire_its_receivers(
    client: Client, worker: Process, djstripe_api: StandIn, handler_log: Path
) -> None:
    events = [make_event(SUBSCRIPTION), make_event(INVOICE)]
    for event in events:
        response = post_signed(client, event)
        assert response.status_code == 200, response.content
    for event in events:
        wait_for_status(event["id"], "succeeded")

    subscription = Subscription.objects.get(id=template(SUBSCRIPTION)["id"])
    assert subscription.customer.id == template("customer.updated")["id"]
    assert subscription.status == template(SUBSCRIPTION)["status"]
    invoice = Invoice.objects.get(id=template(INVOICE)["id"])
    assert invoice.stripe_data["amount_paid"] == template(INVOICE)["amount_paid"]
    assert set(Event.objects.values_list("id", flat=True)) == {e["id"] for e in events}
    # With dj-stripe's key (the bridge's default), not the library's own.
    assert {r.api_key for r in djstripe_api.requests} == {settings.STRIPE_TEST_SECRET_KEY}

    for event in events:
        kind = event["type"]
        # In a worker process, after the response: the receiver once, seeing
        # dj-stripe's synced row; then our handler, seeing it too.
        logged = calls(handler_log, event["id"])
        ours = [(n, p) for n, p in logged if n.startswith(("djstripe:", "handler:"))]
        assert [n for n, _ in ours] == [f"djstripe:{kind}:synced", f"handler:{kind}:synced"]
        assert os.getpid() not in {pid for _, pid in logged}
        assert attempts(event["id"])[0].note == ""


@pytest.mark.parametrize(
    "metadata",
    [{"djstripe_behavior": "fail_first"}, {"test_behavior": "fail_first"}],
    ids=["receiver-fails", "handler-fails"],
)
def test_a_failure_rolls_back_djstripe_rows_and_handler_writes_then_the_retry_succeeds(
    client: Client,
    worker: Process,
    djstripe_api: StandIn,
    handler_log: Path,
    metadata: dict[str, str],
) -> None:
    event = make_event(INVOICE, metadata=metadata)
    assert post_signed(client, event).status_code == 200
    done = wait_for_status(event["id"], "succeeded")

    assert done.attempts == 2
    first, second = attempts(event["id"])
    assert first.outcome == WebhookAttempt.Outcome.RETRY
    if "djstripe_behavior" in metadata:
        # dj-stripe's error, with its traceback through dj-stripe's processing.
        assert first.error_class == "RuntimeError"
        assert "a djstripe_receiver failed on its first call" in first.traceback
        assert "djstripe/models/core.py" in first.traceback
    else:
        assert "simulated failure on the first attempt" in first.traceback
    assert second.outcome == WebhookAttempt.Outcome.SUCCEEDED
    # The first attempt's dj-stripe Event was rolled back: the second had
    # dj-stripe process the event again (its receiver called twice); only the
    # second attempt's writes remain, the receiver's and the handlers'.
    receiver = [n for n in names(handler_log, event["id"]) if n.startswith("djstripe:")]
    assert receiver == [f"djstripe:{INVOICE}:synced"] * 2
    written = SideEffect.objects.filter(event_id=event["id"]).values_list("handler", "attempt")
    assert sorted(written) == [("all", 2), ("exact", 2), ("receiver", 2)]
    assert Event.objects.filter(id=event["id"]).count() == 1
    assert Invoice.objects.filter(id=template(INVOICE)["id"]).exists()
    assert second.note == ""


def test_a_stripe_api_error_in_the_sync_is_in_the_history_and_retried(
    client: Client, worker: Process, djstripe_api: StandIn
) -> None:
    path = f"/v1/invoices/{template(INVOICE)['id']}"
    served = djstripe_api.objects.pop(path)
    event = make_event(INVOICE)
    assert post_signed(client, event).status_code == 200

    failed = wait_until(
        lambda: WebhookAttempt.objects.filter(event_id=event["id"], outcome="retry").first(),
        message="a failed attempt",
    )
    assert failed.error_class.startswith("stripe.")
    assert "Unrecognized request URL" in failed.error_message
    assert "djstripe" in failed.traceback
    djstripe_api.objects[path] = served
    wait_for_status(event["id"], "succeeded")
    assert Invoice.objects.filter(id=template(INVOICE)["id"]).exists()


def test_an_event_djstripe_already_has_is_not_processed_by_it_again(
    client: Client,
    worker: Process,
    djstripe_api: StandIn,
    djstripe_endpoint: WebhookEndpoint,
    handler_log: Path,
) -> None:
    event = make_event(INVOICE)
    invoice_path = f"/v1/invoices/{template(INVOICE)['id']}"
    # During the cut-over Stripe sends it to both: dj-stripe's view first.
    assert post_to_djstripe(djstripe_endpoint, event).status_code == 200
    invoice = Invoice.objects.values().get(id=template(INVOICE)["id"])
    assert names(handler_log, event["id"]) == [f"djstripe:{INVOICE}:synced"]
    fetched = len(djstripe_api.requests_to(invoice_path))

    response = post_signed(client, event)
    assert response.status_code == 200
    wait_for_status(event["id"], "succeeded")
    duplicate = post_signed(client, event)
    assert duplicate.json()["duplicate"] is True

    # Then a person re-runs it from the admin: our handlers run again, dj-stripe does not.
    assert retry_events([event["id"]], include_succeeded=True).queued == [event["id"]]
    wait_until(
        lambda: WebhookEvent.objects.filter(
            pk=event["id"], status="succeeded", attempts=2
        ).exists(),
        message="the re-run",
    )
    for attempt in attempts(event["id"]):
        assert attempt.note == f"dj-stripe already had {event['id']}: not processed by it again"
    logged = names(handler_log, event["id"])
    assert logged.count(f"djstripe:{INVOICE}:synced") == 1
    assert logged.count(f"handler:{INVOICE}:synced") == 2
    assert Invoice.objects.values().get(id=template(INVOICE)["id"]) == invoice
    assert Event.objects.filter(id=event["id"]).count() == 1
    assert len(djstripe_api.requests_to(invoice_path)) == fetched


def test_events_of_an_endpoint_not_synced_are_left_to_the_handlers(
    client: Client, worker: Process, djstripe_api: StandIn, handler_log: Path
) -> None:
    event = make_event(INVOICE)
    assert post_signed(client, event, secret=CONNECT_SECRET, endpoint="connect").status_code == 200
    wait_for_status(event["id"], "succeeded")
    assert not Event.objects.filter(id=event["id"]).exists()
    assert names(handler_log, event["id"])[-1] == f"handler:{INVOICE}:missing"
    assert djstripe_api.requests == []


def djstripe_rows() -> dict[str, list[dict[str, Any]]]:
    """Every dj-stripe row but its bookkeeping, by model, in Stripe id order.

    A foreign key to dj-stripe's integer key is given as the Stripe id of the
    row it points to.
    """
    rows = {}
    for model in apps.get_app_config("djstripe").get_models():
        if model.__name__ in NOT_COMPARED:
            continue
        columns = [
            f"{field.name}__id" if field.is_relation and field.target_field.name == "djstripe_id"
            else field.attname
            for field in model._meta.concrete_fields
            if field.name not in LOCAL_COLUMNS
        ]  # fmt: skip
        values = list(model.objects.values(*columns))
        if values:
            rows[model.__name__] = sorted(values, key=lambda row: str(row.get("id")))
    return rows


def test_djstripe_view_and_ours_leave_equal_djstripe_rows(
    client: Client, worker: Process, djstripe_api: StandIn, djstripe_endpoint: WebhookEndpoint
) -> None:
    events = [make_event(SUBSCRIPTION), make_event(INVOICE)]
    for event in events:
        assert post_to_djstripe(djstripe_endpoint, event).status_code == 200
    theirs = djstripe_rows()
    assert {"Event", "Customer", "Subscription", "Invoice"} <= set(theirs)

    empty_djstripe_tables()
    for event in events:
        assert post_signed(client, event).status_code == 200
    for event in events:
        wait_for_status(event["id"], "succeeded")
    assert djstripe_rows() == theirs


def test_the_installed_dj_stripe_passes_the_bridges_checks() -> None:
    assert check_djstripe_bridge() == []
