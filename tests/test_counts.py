"""Counts kept as events change state: health, metrics and the admin stay exact without
reading the whole events table."""

from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.paginator import InvalidPage
from django.db import connection, connections
from django.db.models import Count, Q, Sum
from django.test import Client
from django.test.utils import CaptureQueriesContext
from prometheus_client.parser import text_string_to_metric_families

from webhook_ingest import counts
from webhook_ingest.models import EventCount, WebhookEvent
from webhook_worker import admin_counts
from webhook_worker.actions import retry_events
from webhook_worker.models import AttemptCount, WebhookAttempt
from webhook_worker.sweeper import sweep

from .helpers import make_event, other_sessions, post_signed, wait_for_quiet_database, wait_until
from .ops import add_attempt, store

CHANGELIST = "/admin/webhook_ingest/webhookevent/"


def table_counts() -> dict[tuple[str, ...], int]:
    """Events per counted key, by a count(*) over the events table."""
    rows = WebhookEvent.objects.order_by().values_list(*EventCount.KEY).annotate(n=Count("pk"))
    return {tuple(row[:-1]): row[-1] for row in rows}


def attempt_table_counts() -> dict[tuple[str, ...], int]:
    rows = WebhookAttempt.objects.order_by().values_list(*AttemptCount.KEY).annotate(n=Count("pk"))
    return {tuple(row[:-1]): row[-1] for row in rows}


def kept_attempt_counts() -> dict[tuple[str, ...], int]:
    rows = AttemptCount.objects.values_list(*AttemptCount.KEY).annotate(n=Sum("n"))
    return {tuple(row[:-1]): row[-1] for row in rows if row[-1]}


def assert_counts_match_the_tables() -> None:
    assert counts.by_key() == table_counts()
    assert kept_attempt_counts() == attempt_table_counts()


def by_status() -> dict[str, int]:
    found = dict.fromkeys(WebhookEvent.Status.values, 0)
    for status, n in WebhookEvent.objects.order_by().values_list("status").annotate(Count("pk")):
        found[status] = n
    return found


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def assert_monitoring_matches(client: Client) -> None:
    """Health, metrics and the admin's status counts agree with count(*) over the tables."""
    expected = by_status()
    assert client.get("/webhooks/health/").json()["events"] == expected
    values = metric_values(client.get("/webhooks/metrics").content.decode())
    for status, n in expected.items():
        assert values[("webhooks_events_by_status", (("status", status),))] == n
    attempts: dict[tuple[str, str], int] = {}
    for (outcome, trigger, _), n in attempt_table_counts().items():
        attempts[(outcome, trigger)] = attempts.get((outcome, trigger), 0) + n
    for (outcome, trigger), n in attempts.items():
        assert values[("webhooks_attempts", (("outcome", outcome), ("trigger", trigger)))] == n
    admin = Client()
    admin.force_login(User.objects.get_or_create(username="counts", is_staff=True,
                                                 is_superuser=True)[0])  # fmt: skip
    html = admin.get(CHANGELIST).content.decode()
    for status, n in expected.items():
        assert f"{WebhookEvent.Status(status).label}: {n}<" in html
    assert f"{sum(expected.values())} webhook event" in html


@pytest.mark.django_db(transaction=True)
def test_counts_stay_exact_through_a_burst_retries_pruning_and_deletes(client, worker):
    # Posted from four threads while the session's worker processes them:
    # first attempts that fail and are retried, dead-lettered events, twins.
    behaviours = ["", "", "fail_first", "permanent", "", "fail_first"]
    events = [
        make_event(
            ("customer.updated", "invoice.paid", "charge.succeeded")[n % 3],
            behavior=behaviours[n % len(behaviours)] or None,
        )
        for n in range(60)
    ]

    def deliver(batch: list[dict[str, Any]]) -> None:
        try:
            poster = Client()
            for event in batch:
                assert post_signed(poster, event).status_code == 200
                assert post_signed(poster, event).status_code == 200  # a duplicate
        finally:
            connections.close_all()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(deliver, [events[n::4] for n in range(4)]))

    ids = [e["id"] for e in events]
    finished = WebhookEvent.objects.filter(pk__in=ids, status__in=WebhookEvent.FINISHED)
    wait_until(lambda: finished.count() == len(ids), timeout=60, message="every event finished")
    assert by_status()["failed"] == 10 and by_status()["succeeded"] == 50
    assert_counts_match_the_tables()
    assert_monitoring_matches(client)

    # Dead-lettered events retried by hand fail again, as a person would see.
    failed = list(WebhookEvent.objects.filter(status="failed").values_list("pk", flat=True))
    assert len(retry_events(failed).queued) == 10
    wait_until(
        lambda: WebhookAttempt.objects.filter(
            event_id__in=failed, number=2, outcome="failed"
        ).count() == 10,
        timeout=60,
        message="the retries to fail",
    )  # fmt: skip
    assert_counts_match_the_tables()

    # Pruned, then deleted (what the admin's delete would do: attempts first).
    call_command("webhooks_prune", older_than=0, stdout=io.StringIO())
    assert not WebhookEvent.objects.filter(status="succeeded").exists()
    assert_counts_match_the_tables()
    assert_monitoring_matches(client)
    WebhookEvent.objects.filter(pk__in=failed[:4]).delete()
    assert_counts_match_the_tables()
    assert by_status() == {**dict.fromkeys(WebhookEvent.Status.values, 0), "failed": 6}
    assert_monitoring_matches(client)
    wait_for_quiet_database()  # before the tables are emptied for the next test


@pytest.mark.django_db(transaction=True)
def test_counts_of_ended_database_sessions_are_folded_without_changing_totals(test_db_url):
    store("customer.created", "succeeded")
    # Three short-lived sessions change events, as web and worker processes
    # with their own connections do.
    ended = []
    for n in range(3):
        with psycopg.connect(test_db_url, autocommit=True) as other:
            other.execute(
                "UPDATE webhook_ingest_webhookevent SET status = %s WHERE status = %s",
                ["failed", "succeeded"] if n % 2 == 0 else ["succeeded", "failed"],
            )
            ended.append(other.info.backend_pid)
        store("invoice.paid", "failed" if n % 2 else "succeeded")
    # A backend exits a moment after its client closes the connection.
    wait_until(
        lambda: not set(ended) & set(other_sessions(("active", "idle", "idle in transaction"))),
        timeout=30,
        message="the short-lived sessions to end",
    )
    before = counts.by_key()
    assert before == table_counts()
    sessions = set(EventCount.objects.values_list("session", flat=True))
    assert len(sessions) >= 3  # this session's and the ended ones'

    sweep()

    assert counts.by_key() == before
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        live = {cursor.fetchone()[0], 0}
    assert set(EventCount.objects.values_list("session", flat=True)) <= live
    assert EventCount.objects.filter(session=0).exists()


@pytest.mark.django_db
def test_admin_counts_filters_and_searches_match_the_table(admin_client, monkeypatch):
    kinds = [
        ("invoice.paid", "succeeded", "default"),
        ("invoice.payment_failed", "failed", "default"),
        ("customer.subscription.updated", "succeeded", "connect"),
        ("customer.created", "retrying", "default"),
        ("charge.refunded", "pending", "connect"),
    ]
    stored = [store(t, s, endpoint=e) for n in range(5) for t, s, e in kinds[: 5 - n % 2]]
    add_attempt(stored[0], 1, "succeeded", skipped="superseded")
    subject = stored[2]

    def shown(query: str) -> tuple[str, int]:
        response = admin_client.get(CHANGELIST + query)
        assert response.status_code == 200, query
        html = response.content.decode()
        found = re.search(r'class="paginator"[^>]*>.*?(\d+) webhook event', html, re.S)
        assert found, html
        return "more than " if "More than" in html else "", int(found.group(1))

    events = WebhookEvent.objects.all()
    cases = {
        "": events,
        "?status=failed": events.filter(status="failed"),
        "?category=customer": events.filter(type__startswith="customer."),
        "?type=invoice.paid&endpoint=default": events.filter(type="invoice.paid"),
        "?endpoint=connect&status=pending": events.filter(endpoint="connect", status="pending"),
        "?style__exact=snapshot&source__exact=delivery": events,
        "?q=invoice.pa": events.filter(type__startswith="invoice.pa"),
        "?q=customer&status=retrying": events.filter(
            type__startswith="customer", status="retrying"
        ),
        f"?q={subject.object_id}": events.filter(object_id=subject.object_id),
        f"?q={subject.id}": events.filter(pk=subject.id),
        "?livemode__exact=0": events,
        "?skipped=superseded": events.filter(pk=stored[0].pk),
    }
    for query, expected in cases.items():
        assert shown(query) == ("", expected.count()), query
    # Counted from the count tables where every filter is a counted field.
    assert admin_counts.counted_condition({"status": "failed", "q": "invoice"}) is not None
    assert admin_counts.counted_condition({"livemode__exact": "1"}) is None
    assert admin_counts.counted_condition({"q": subject.id}) is None

    # Past the limit, a count that is not counted says so; pages stop there.
    monkeypatch.setattr(admin_counts, "LIST_LIMIT", 4)
    assert shown("?livemode__exact=0") == ("more than ", 4)
    assert shown("?status=succeeded") == ("", events.filter(status="succeeded").count())
    paginator = admin_counts.EventPaginator(events.order_by("-received_at"), 2, counted=Q())
    assert paginator.count == events.count() and paginator.num_pages == 2
    with pytest.raises(InvalidPage):
        paginator.page(3)


@pytest.mark.django_db
def test_health_metrics_and_the_admins_list_read_neither_table_in_full(admin_client):
    # With sequential scans priced out, a query no index or count table can
    # serve still plans as one: on millions of events, a scrape or a page
    # that never loads.
    failed = store("invoice.payment_failed", "failed")
    store("customer.created", "pending")
    pages = [
        "/webhooks/health/",
        "/webhooks/metrics",
        CHANGELIST,
        CHANGELIST + "?status=failed",
        CHANGELIST + "?q=invoice.pay",
        f"{CHANGELIST}?q={failed.object_id}",
        CHANGELIST + "?category=invoice&endpoint=default&type=invoice.payment_failed",
    ]
    with CaptureQueriesContext(connection) as captured:
        for page in pages:
            assert admin_client.get(page).status_code == 200, page
    queries = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT")]
    assert any("webhook_event_" in sql or "webhookevent" in sql for sql in queries)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for sql in queries:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            for table in (WebhookEvent._meta.db_table, WebhookAttempt._meta.db_table):
                assert f"Seq Scan on {table}" not in plan, f"{sql}\n{plan}"
