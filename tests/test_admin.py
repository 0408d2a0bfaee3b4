"""The event admin: what staff see, what they can filter, and the retry actions."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.models import Permission, User
from django.db.models import Q
from django.test import Client
from django.utils import timezone

from webhook_ingest.models import WebhookEvent
from webhook_ingest.thin import parse_thin_event
from webhook_worker.models import WebhookAttempt
from webhook_worker.signals import event_retried
from webhook_worker.stripe_events import build_thin_event, encode_event

from .helpers import handler_calls, make_event, post_signed, wait_for_status, wait_until
from .ops import add_attempt, store

CHANGELIST = "/admin/webhook_ingest/webhookevent/"


def staff_client(*perms: str) -> Client:
    user = User.objects.create_user(f"staff-{'-'.join(perms) or 'none'}", password="pw")
    user.is_staff = True
    user.save()
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="webhook_ingest",
            codename__in=[f"{p}_webhookevent" for p in perms],
        )
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer(db):
    return staff_client("view")


@pytest.fixture
def operator(db):
    return staff_client("view", "change")


def listed_ids(response) -> set[str]:
    html = response.content.decode()
    return {unquote(pk) for pk in re.findall(r"webhookevent/(evt_\w+)/change/", html)}


def assert_rerun_once(event_id: str, handler_log) -> None:
    """A succeeded event's manual re-run succeeds as attempt 2: its handlers ran twice in all."""
    wait_until(
        lambda: WebhookAttempt.objects.filter(
            event_id=event_id, number=2, outcome="succeeded", trigger="manual"
        ).exists(),
        message="the manual re-run to succeed",
    )
    assert [n for _, n, _ in handler_calls(handler_log, event_id)].count("all") == 2


@pytest.mark.django_db
def test_event_list_shows_statuses_counts_and_filters(viewer):
    ok = store("customer.created", "succeeded")
    sub = store("customer.subscription.updated", "retrying", attempts=2)
    failed = store("invoice.payment_failed", "failed", attempts=4, livemode=True)
    old = store("charge.refunded", "succeeded", age=timedelta(days=40), endpoint="connect")
    pending = store("invoice.paid", "pending")

    page = viewer.get(CHANGELIST)
    assert page.status_code == 200
    html = page.content.decode()
    assert listed_ids(page) == {ok.id, sub.id, failed.id, old.id, pending.id}
    # Counts per status at a glance, each a link to its filter.
    for label in ("Pending: 1", "Processing: 0", "Succeeded: 2", "Retrying: 1", "Failed: 1"):
        assert label in html
    assert 'href="?status=failed"' in html
    assert 'class="webhook-status"' in html  # the status badge column

    def ids(query: str) -> set[str]:
        response = viewer.get(CHANGELIST + query)
        assert response.status_code == 200, query
        return listed_ids(response)

    assert ids("?status=failed") == {failed.id}
    assert ids("?category=customer") == {ok.id, sub.id}
    assert ids("?category=invoice&status=pending") == {pending.id}
    assert ids("?type=invoice.payment_failed") == {failed.id}
    assert ids("?livemode__exact=1") == {failed.id}
    assert ids("?endpoint=connect") == {old.id}
    since = urlencode({"received_at__gte": (old.received_at + timedelta(days=1)).isoformat()})
    assert ids(f"?{since}") == {ok.id, sub.id, failed.id, pending.id}
    # Search: event id, data.object id, type prefix.
    assert ids(f"?q={failed.id}") == {failed.id}
    assert ids(f"?q={sub.object_id}") == {sub.id}
    assert ids("?q=invoice.pa") == {failed.id, pending.id}


@pytest.mark.django_db
def test_style_source_and_skipped_handlers_are_shown_and_filtered(viewer):
    delivered = store("customer.updated", "succeeded")
    backfilled = store("customer.updated", "succeeded")
    thin = build_thin_event("v1.customer.updated", object_id="cus_AdminThin")
    WebhookEvent.objects.record(parse_thin_event(thin), encode_event(thin), "thin")
    WebhookEvent.objects.filter(pk=backfilled.pk).update(source="backfill")
    add_attempt(
        delivered,
        1,
        "succeeded",
        skipped="superseded",
        note=f"superseded by {backfilled.id} (newer, already succeeded): skipped app.sync",
    )

    def ids(query: str) -> set[str]:
        response = viewer.get(CHANGELIST + query)
        assert response.status_code == 200, query
        return listed_ids(response)

    assert ids("?style__exact=thin") == {thin["id"]}
    assert ids("?source__exact=backfill") == {backfilled.id}
    assert ids("?skipped=superseded") == {delivered.id}
    assert ids("?q=cus_AdminThin") == {thin["id"]}
    html = viewer.get(CHANGELIST).content.decode()
    assert "Thin" in html and "Backfill" in html

    page = viewer.get(f"{CHANGELIST}{quote(backfilled.id)}/change/").content.decode()
    assert "none: fetched from Stripe&#x27;s Events API by backfill" in page
    page = viewer.get(f"{CHANGELIST}{quote(delivered.id)}/change/").content.decode()
    assert "verified on delivery" in page
    assert f"superseded by {backfilled.id}" in page


@pytest.mark.django_db
def test_the_lists_filters_and_searches_are_served_by_indexes():
    # With sequential scans priced out, a lookup no index can serve still
    # plans as one: on a table of millions of events that is a page that
    # never loads. The events table keeps only the indexes these need.
    from django.db import connection

    events = WebhookEvent.objects.all()
    lookups = {
        "webhook_event_type": [
            events.filter(type="invoice.paid"),
            events.filter(Q(type="customer") | Q(type__startswith="customer.")),
        ],
        "webhook_event_object_id": [events.filter(object_id="cus_123")],
        "webhook_event_account": [events.filter(account="acct_123")],
        "webhook_event_open_received": [
            events.filter(status="failed").order_by("-received_at")[:50]
        ],
        "webhook_event_open_due": [
            events.filter(status__in=WebhookEvent.UNFINISHED, due_at__lt=timezone.now())
        ],
        "webhook_attempt_skipped": [
            events.filter(
                pk__in=WebhookAttempt.objects.filter(skipped="superseded").values("event_id")
            )
        ],
        "_pkey": [events.filter(pk="evt_123")],
        "received_at": [events.order_by("-received_at")[:100]],
    }
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for index, querysets in lookups.items():
            for queryset in querysets:
                plan = queryset.explain()
                assert index in plan, f"{queryset.query}\n{plan}"


@pytest.mark.django_db
def test_event_page_shows_escaped_payload_raw_body_and_attempt_history(viewer):
    event = store(
        "invoice.payment_failed",
        "retrying",
        attempts=2,
        metadata={"note": "<script>alert(1)</script>"},
    )
    add_attempt(
        event,
        1,
        "retry",
        error_class="stripe.error.APIConnectionError",
        error_message="Stripe was unreachable",
        traceback='Traceback (most recent call last):\n  File "handlers.py", line 9\n',
        worker="worker@host pid 41",
    )
    add_attempt(event, 2, "lost", trigger="sweeper", error_class="WorkerLost")

    page = viewer.get(f"{CHANGELIST}{quote(event.id)}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;type&quot;: &quot;invoice.payment_failed&quot;" in html  # pretty payload
    assert "Body exactly as received" in html
    assert "stripe.error.APIConnectionError" in html and "Stripe was unreachable" in html
    assert "Traceback (most recent call last)" in html
    assert "Failed, retry scheduled" in html and "Worker lost" in html
    assert "Sweeper" in html and "12.0 ms" in html and "worker@host pid 41" in html
    # Read-only: no form to save.
    assert 'name="_save"' not in html


@pytest.mark.django_db
def test_events_cannot_be_added_changed_or_deleted_in_the_admin(operator):
    event = store("customer.created", "failed")
    assert operator.get(f"{CHANGELIST}add/").status_code == 403
    assert (
        operator.post(f"{CHANGELIST}{quote(event.id)}/change/", {"status": "succeeded"}).status_code
        == 403
    )
    assert (
        operator.post(f"{CHANGELIST}{quote(event.id)}/delete/", {"post": "yes"}).status_code == 403
    )
    html = operator.get(CHANGELIST).content.decode()
    assert "delete_selected" not in html
    assert WebhookEvent.objects.get(pk=event.id).status == "failed"


@pytest.mark.django_db
def test_retry_actions_need_the_change_permission(viewer):
    event = store("customer.created", "failed", attempts=4)
    html = viewer.get(CHANGELIST).content.decode()
    assert "retry_selected" not in html and "rerun_selected" not in html

    response = viewer.post(
        CHANGELIST, {"action": "retry_selected", "_selected_action": [event.id], "index": 0}
    )

    assert response.status_code in (200, 302)
    stored = WebhookEvent.objects.get(pk=event.id)
    assert (stored.status, stored.attempts) == ("failed", 4)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_retry_action_requeues_a_dead_lettered_event_which_then_succeeds(client):
    operator = staff_client("view", "change")
    # Fails its four scheduled attempts, then succeeds on the fifth (manual) one.
    event = make_event("invoice.payment_failed", behavior="fail_until:5")
    post_signed(client, event)
    assert wait_for_status(event["id"], "failed", timeout=60).attempts == 4
    assert "retry_selected" in operator.get(CHANGELIST).content.decode()

    retried: list[dict] = []
    event_retried.connect(
        lambda sender, **kwargs: retried.append(kwargs), weak=False, dispatch_uid="t"
    )
    try:
        response = operator.post(
            CHANGELIST,
            {"action": "retry_selected", "_selected_action": [event["id"]], "index": 0},
            follow=True,
        )
    finally:
        event_retried.disconnect(dispatch_uid="t")

    assert "1 event queued for retry" in response.content.decode()
    # Announced once, after the commit, with who asked.
    assert [
        (r["event_id"], r["event_type"], r["previous_status"], r["source"], r["user"].username)
        for r in retried
    ] == [(event["id"], "invoice.payment_failed", "failed", "admin", "staff-view-change")]
    done = wait_for_status(event["id"], "succeeded")
    assert done.attempts == 5
    last = WebhookAttempt.objects.filter(event_id=event["id"]).order_by("number").last()
    assert (last.number, last.trigger, last.outcome) == (5, "manual", "succeeded")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_succeeded_event_is_rerun_only_after_confirmation(client, handler_log):
    operator = staff_client("view", "change")
    event = make_event("customer.created")
    post_signed(client, event)
    wait_for_status(event["id"], "succeeded")
    select = {"_selected_action": [event["id"]], "index": 0}

    plain = operator.post(CHANGELIST, {"action": "retry_selected", **select}, follow=True)
    assert "1 succeeded event skipped" in plain.content.decode()

    confirm = operator.post(CHANGELIST, {"action": "rerun_selected", **select})
    assert confirm.status_code == 200
    assert "already succeeded" in confirm.content.decode()
    assert WebhookEvent.objects.get(pk=event["id"]).attempts == 1  # nothing ran yet

    operator.post(
        CHANGELIST,
        {"action": "rerun_selected", "_selected_action": [event["id"]], "post": "yes"},
    )

    assert_rerun_once(event["id"], handler_log)
    assert WebhookEvent.objects.get(pk=event["id"]).status == "succeeded"


@pytest.mark.django_db
def test_event_page_offers_retry_only_with_the_change_permission(viewer, operator):
    failed = store("invoice.payment_failed", "failed", attempts=4)
    done = store("customer.created", "succeeded")
    busy = store("invoice.paid", "processing", attempts=1)
    page = lambda client, event: client.get(f"{CHANGELIST}{quote(event.id)}/change/")  # noqa: E731
    retry_url = lambda event: f"{CHANGELIST}{quote(event.id)}/retry/"  # noqa: E731

    assert "Retry this event" not in page(viewer, failed).content.decode()
    assert viewer.post(retry_url(failed)).status_code == 403
    assert WebhookEvent.objects.get(pk=failed.id).attempts == 4

    html = page(operator, failed).content.decode()
    assert "Retry this event" in html and f'action="{retry_url(failed)}"' in html
    assert "Re-run this event" in page(operator, done).content.decode()
    busy_html = page(operator, busy).content.decode()
    assert "Retry this event" not in busy_html and "Re-run this event" not in busy_html
    assert operator.get(retry_url(failed)).status_code == 405
    assert operator.post(f"{CHANGELIST}evt_missing/retry/").status_code == 404


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_retry_from_the_event_page_requeues_it_and_comes_back_to_it(client, handler_log):
    operator = staff_client("view", "change")
    failing = make_event("invoice.payment_failed", behavior="fail_until:5")
    post_signed(client, failing)
    assert wait_for_status(failing["id"], "failed", timeout=60).attempts == 4
    page = f"{CHANGELIST}{quote(failing['id'])}/change/"

    response = operator.post(f"{CHANGELIST}{quote(failing['id'])}/retry/", follow=True)

    assert response.redirect_chain == [(page, 302)]
    assert "1 event queued for retry" in response.content.decode()
    assert wait_for_status(failing["id"], "succeeded").attempts == 5

    # A succeeded event: the confirmation page first, then the re-run.
    ok = make_event("customer.created")
    post_signed(client, ok)
    wait_for_status(ok["id"], "succeeded")
    retry = f"{CHANGELIST}{quote(ok['id'])}/retry/"
    confirm = operator.post(retry)
    assert confirm.status_code == 200 and "already succeeded" in confirm.content.decode()
    assert WebhookEvent.objects.get(pk=ok["id"]).attempts == 1
    # What the confirmation page's form posts back to the same URL.
    confirmed = {"action": "rerun_selected", "_selected_action": [ok["id"]], "post": "yes"}
    operator.post(retry, confirmed)
    assert_rerun_once(ok["id"], handler_log)
