"""`/webhooks/health/` and `/webhooks/metrics`: what monitoring sees."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from devstack.services import free_port

from . import stack
from .constants import SECRET
from .ops import PrivateBroker, add_attempt, store

pytestmark = pytest.mark.django_db(transaction=True)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def seed():
    failed = store(
        "invoice.payment_failed", "failed", attempts=4, metadata={"secret_note": "s3cr3t"}
    )
    for n in range(1, 4):
        add_attempt(failed, n, "retry")
    add_attempt(failed, 4, "failed")
    ok = store("customer.subscription.created", "succeeded")
    add_attempt(ok, 1, "succeeded")
    store("customer.updated", "pending", age=timedelta(minutes=20))
    store("customer.created", "retrying", attempts=1, age=timedelta(hours=2))
    return failed


def test_health_reports_reachability_counts_and_oldest_unfinished_age(client):
    failed = seed()

    response = client.get("/webhooks/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] is True and body["broker"] is True
    assert body["events"] == {
        "pending": 1,
        "processing": 0,
        "succeeded": 1,
        "retrying": 1,
        "failed": 1,
    }
    assert 2 * 3600 <= body["oldest_unfinished_age_seconds"] < 3 * 3600
    assert body["stale_events"] == 2  # both unfinished events are long past due
    assert failed.id not in response.content.decode() and "s3cr3t" not in response.content.decode()


def test_metrics_in_prometheus_text_format(client):
    failed = seed()

    response = client.get("/webhooks/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    assert failed.id not in text and "s3cr3t" not in text
    values = samples(text)
    assert values[("webhooks_events", (("category", "invoice"), ("status", "failed")))] == 1
    assert values[("webhooks_events", (("category", "customer"), ("status", "pending")))] == 1
    assert values[("webhooks_events_by_status", (("status", "processing"),))] == 0
    assert values[("webhooks_attempts", (("outcome", "retry"), ("trigger", "retry")))] == 2
    assert values[("webhooks_attempt_failures", ())] == 4
    pending_age = values[("webhooks_oldest_unfinished_age_seconds", (("status", "pending"),))]
    assert 20 * 60 <= pending_age < 30 * 60
    assert values[("webhooks_stale_events", ())] == 2
    assert values[("webhooks_up", (("component", "database"),))] == 1
    assert values[("webhooks_up", (("component", "broker"),))] == 1


@pytest.fixture(scope="module")
def ops_broker(tmp_path_factory):
    broker = PrivateBroker(tmp_path_factory.mktemp("ops-redis")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def ops_web(ops_broker, stack_env, log_dir, tmp_path_factory):
    """gunicorn with two workers sharing a Prometheus multiprocess directory."""
    metrics_dir = tmp_path_factory.mktemp("prometheus")
    env = ops_broker.env(stack_env, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    web = stack.gunicorn(env, log_dir, workers=2)
    yield web
    web.stop()


def test_rejections_are_counted_across_gunicorn_workers(ops_web):
    for n in range(12):
        # A new connection each time, so both workers take some.
        response = requests.post(
            f"{ops_web.url}/webhooks/stripe/",
            data=b'{"id": "evt_1", "object": "event"}',
            headers={"Stripe-Signature": f"t=1,v1={n:064x}", "Content-Type": "application/json"},
        )
        assert response.status_code == 400
    for name in ("nope", "other", "x" * 60):
        assert (
            requests.post(f"{ops_web.url}/webhooks/stripe/{name}/", data=b"{}").status_code == 404
        )

    for _ in range(6):  # whichever worker answers the scrape reports every process's counts
        values = samples(requests.get(f"{ops_web.url}/webhooks/metrics").text)
        key = "webhooks_ingest_rejections_total"
        assert values[(key, (("endpoint", "default"), ("reason", "invalid_signature")))] == 12
        assert values[(key, (("endpoint", "(unknown)"), ("reason", "unknown_endpoint")))] == 3


def test_health_is_503_while_the_broker_is_down(ops_web, ops_broker):
    url = f"{ops_web.url}/webhooks/health/"
    assert requests.get(url).status_code == 200

    ops_broker.stop()
    try:
        response = requests.get(url)
        metrics = samples(requests.get(f"{ops_web.url}/webhooks/metrics").text)
    finally:
        ops_broker.start()

    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert (response.json()["database"], response.json()["broker"]) == (True, False)
    assert metrics[("webhooks_up", (("component", "broker"),))] == 0
    assert requests.get(url).status_code == 200


def test_health_is_503_while_the_database_is_down(stack_env, log_dir):
    env = dict(stack_env, DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere")
    web = stack.gunicorn(env, log_dir, workers=1)
    try:
        response = requests.get(f"{web.url}/webhooks/health/")
        metrics = requests.get(f"{web.url}/webhooks/metrics")
    finally:
        web.stop()
    assert response.status_code == 503
    assert (response.json()["database"], response.json()["broker"]) == (False, True)
    assert "events" not in response.json()
    assert metrics.status_code == 200
    assert samples(metrics.text)[("webhooks_up", (("component", "database"),))] == 0
    assert SECRET not in response.text
