"""Fault injection against real processes: kills, broker loss, database loss, slow handlers.

Every scenario ends with the same two checks a user cares about: no event
that was acknowledged is lost (all `succeeded`), and every handler's side
effect was committed exactly once. Each test runs on a queue of its own
(`tests.faults.Lane`), with the gunicorn, Celery workers and beat it needs,
so it can kill them without disturbing the rest of the suite.
"""

from __future__ import annotations

from pathlib import Path

import kombu
import pytest
from django.db import connection

from devstack.services import EmbeddedRedis
from tests.testapp.models import SideEffect
from webhook_ingest.models import WebhookEvent
from webhook_ingest.parsing import parse_event
from webhook_worker.models import WebhookAttempt
from webhook_worker.stripe_events import encode_event

from .faults import (
    Lane,
    TcpProxy,
    assert_effects_exactly_once,
    assert_no_attempt_ran_twice,
    db_url_via,
    deliver,
    deliver_all,
    first_attempt_fails,
    kill_pid,
    logged_calls,
    make_lane,
    redis_queued_tasks,
    uncommitted_writer_pid,
    wait_all_succeeded,
)
from .helpers import make_event, wait_for_status, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def lane(transactional_db, stack_env, log_dir):
    """A private queue on the session broker; the test starts what it needs on it."""
    lane = make_lane(stack_env, log_dir)
    yield lane
    lane.stop()


@pytest.fixture
def own_redis(tmp_path):
    redis = EmbeddedRedis(tmp_path / "redis")
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def redis_lane(transactional_db, stack_env, log_dir, own_redis):
    """A private queue on a Redis broker the test may stop, kill and restart."""
    lane = make_lane(stack_env, log_dir, CELERY_BROKER_URL=own_redis.url)
    yield lane
    lane.stop()


def outcomes(event_id: str) -> list[tuple[str, str]]:
    return list(
        WebhookAttempt.objects.filter(event_id=event_id)
        .order_by("number")
        .values_list("outcome", "trigger")
    )


def effects(event_id: str) -> list[tuple[int, str]]:
    return sorted(SideEffect.objects.filter(event_id=event_id).values_list("attempt", "handler"))


def start_of_attempt(handler_log: Path, event_id: str, attempt: int) -> int:
    """Wait until the handler of `attempt` holds an uncommitted write; its worker's pid."""
    call = wait_until(
        lambda: next(
            (
                c
                for c in logged_calls(handler_log, [event_id])
                if c.handler == "all" and c.attempt == attempt
            ),
            None,
        ),
        timeout=60,
        message=f"attempt {attempt} of {event_id} to start",
    )
    # The handler logs its call, then inserts its SideEffect row and sleeps:
    # wait for that insert, so the kill lands on a half-done attempt.
    wait_until(uncommitted_writer_pid, timeout=30, message="the handler's uncommitted write")
    return int(call.pid)


# --- 1. a worker killed while a handler runs --------------------------------


def test_worker_sigkill_mid_handler(lane: Lane, handler_log):
    """SIGKILL of the pool process running a handler: the message is redelivered
    (acks_late + reject_on_worker_lost), the next attempt completes, and the
    killed attempt's write never committed."""
    web, worker = lane.web(workers=1), lane.worker(concurrency=2)
    lane.beat()
    event = make_event("invoice.paid", behavior="sleep:2")
    assert deliver(f"{web.url}/webhooks/stripe/", event) == 200

    pid = start_of_attempt(handler_log, event["id"], 1)
    assert pid in worker.children()
    kill_pid(pid)

    done = wait_for_status(event["id"], "succeeded", timeout=90)
    assert done.attempts == 2
    assert "exited with 'signal 9 (SIGKILL)'" in worker.log()
    # The requeued message runs attempt 2; should it find the dead session's
    # lock not yet released, the sweeper does instead.
    (lost, _), (succeeded, trigger) = outcomes(event["id"])
    assert (lost, succeeded) == ("lost", "succeeded") and trigger in ("delivery", "sweeper")
    # Attempt 1 inserted its rows before it was killed; only attempt 2's exist.
    assert effects(event["id"]) == [(2, "all"), (2, "exact")]
    assert [c.attempt for c in logged_calls(handler_log, [event["id"]]) if c.handler == "all"] == [
        1,
        2,
    ]
    assert worker.alive  # the pool replaced its process


def test_whole_worker_sigkilled_mid_handler_is_recovered_by_the_sweeper(lane: Lane, handler_log):
    """SIGKILL of the whole worker (main process and pool): nobody requeues the
    message, so the sweeper finds the `processing` event whose lock is gone."""
    web, worker = lane.web(workers=1), lane.worker(concurrency=1)
    event = make_event("customer.subscription.created", behavior="sleep:2")
    assert deliver(f"{web.url}/webhooks/stripe/", event) == 200

    start_of_attempt(handler_log, event["id"], 1)
    worker.kill()
    assert WebhookEvent.objects.get(pk=event["id"]).status == "processing"
    lane.worker(concurrency=1)
    lane.beat()

    done = wait_for_status(event["id"], "succeeded", timeout=90)
    assert outcomes(event["id"]) == [("lost", "delivery"), ("succeeded", "sweeper")]
    assert done.attempts == 2
    assert effects(event["id"]) == [(2, "all"), (2, "exact")]


def test_web_process_killed_before_publishing_what_it_acknowledged(
    redis_lane: Lane, own_redis: EmbeddedRedis
):
    """Deliveries acknowledged while the broker did not answer, then the web
    process SIGKILLed before its publisher thread could send them: the events
    are stored and were never published, and the sweeper enqueues each one."""
    # Between the web process and Redis, a hop that accepts connections and
    # never answers: the publisher's first command waits there, and no byte of
    # it reaches Redis, however close to the kill it was sent.
    stalled = TcpProxy("127.0.0.1", own_redis.port)
    stalled.stall()
    try:
        web = redis_lane.web(workers=1, CELERY_BROKER_URL=f"redis://127.0.0.1:{stalled.port}/0")
        events = [make_event("customer.created") for _ in range(10)]
        assert deliver_all(f"{web.url}/webhooks/stripe/", events) == [200] * len(events)
        web.kill()
    finally:
        stalled.close()
    assert redis_queued_tasks(own_redis.url, redis_lane.queue) == []
    ids = {e["id"]: e["type"] for e in events}
    assert WebhookEvent.objects.filter(pk__in=ids, status="pending").count() == len(ids)

    redis_lane.worker()
    redis_lane.beat()
    wait_all_succeeded(list(ids), timeout=90, lane=redis_lane)
    assert {outcomes(event_id)[0] for event_id in ids} == {("succeeded", "sweeper")}
    assert_effects_exactly_once(ids)


# --- 2. the broker restarted empty -----------------------------------------


def test_broker_restarted_empty_with_hundreds_pending_sweeper_recovers_all(
    redis_lane: Lane, own_redis: EmbeddedRedis
):
    n = 300
    web = redis_lane.web()
    redis_lane.beat()
    events = [make_event("customer.created") for _ in range(n - 50)] + [
        make_event("invoice.paid") for _ in range(50)
    ]
    assert deliver_all(f"{web.url}/webhooks/stripe/", events) == [200] * n
    # No worker yet: every message is waiting in Redis (with beat's sweep
    # requests) once the web process's publisher has sent its last batch.
    wait_until(
        lambda: (
            redis_queued_tasks(own_redis.url, redis_lane.queue).count(
                "webhook_worker.process_event"
            )
            == n
        ),
        timeout=30,
    )

    own_redis.kill()
    own_redis.start()  # same port, empty: all n messages are gone
    # Beat may already have sent its next sweep request to the new Redis.
    left = redis_queued_tasks(own_redis.url, redis_lane.queue)
    assert set(left) <= {"webhook_worker.requeue_stale"}, left
    redis_lane.worker(concurrency=2)

    ids = {e["id"]: e["type"] for e in events}
    wait_all_succeeded(list(ids), timeout=180, lane=redis_lane)
    assert_effects_exactly_once(ids)
    triggers = set(
        WebhookAttempt.objects.filter(event_id__in=ids).values_list("trigger", flat=True)
    )
    assert triggers == {"sweeper"}
    assert WebhookAttempt.objects.filter(event_id__in=ids).count() == n


# --- 3. the broker down while events arrive ---------------------------------


def test_broker_down_while_events_arrive_then_back(redis_lane: Lane, own_redis: EmbeddedRedis):
    """Deliveries keep coming before, during and after a broker outage, with
    retries in flight when it goes; the same web and beat processes carry on
    once it is back, and every event is processed once."""
    web = redis_lane.web()
    worker = redis_lane.worker(concurrency=2)
    redis_lane.beat()
    url = f"{web.url}/webhooks/stripe/"
    before = [make_event("customer.created", behavior="fail_first") for _ in range(20)]
    during = [make_event("invoice.paid") for _ in range(30)]
    after = [make_event("customer.updated") for _ in range(20)]

    assert deliver_all(url, before) == [200] * len(before)
    own_redis.stop()
    assert deliver_all(url, during) == [200] * len(during)
    stored = WebhookEvent.objects.filter(pk__in=[e["id"] for e in during])
    assert stored.count() == len(during)  # acknowledged means stored
    own_redis.start()
    assert deliver_all(url, after) == [200] * len(after)

    ids = {e["id"]: e["type"] for e in before + during + after}

    def all_succeeded() -> bool:
        return WebhookEvent.objects.filter(pk__in=ids, status="succeeded").count() == len(ids)

    wait_until(lambda: all_succeeded() or not worker.alive, timeout=120, interval=0.25)
    # The same worker carried on: no "Unrecoverable error" on the broken connection.
    assert worker.alive, worker.log_tail(60)
    wait_all_succeeded(list(ids), timeout=120, lane=redis_lane)
    assert_effects_exactly_once(ids)


# --- 4. the database connection killed, the database unavailable -----------


def test_database_connection_killed_mid_attempt(lane: Lane, handler_log):
    """pg_terminate_backend on the worker's session while its handler runs: the
    attempt is recorded as failed on a fresh connection, retried, and its
    writes never committed."""
    web, worker = lane.web(workers=1), lane.worker(concurrency=1)
    event = make_event("invoice.paid", behavior="sleep:2")
    assert deliver(f"{web.url}/webhooks/stripe/", event) == 200

    start_of_attempt(handler_log, event["id"], 1)
    backend = uncommitted_writer_pid()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])

    done = wait_for_status(event["id"], "succeeded", timeout=90)
    first, second = WebhookAttempt.objects.filter(event_id=event["id"]).order_by("number")
    assert first.outcome == "retry"
    assert "OperationalError" in first.error_class or "InterfaceError" in first.error_class
    assert (second.outcome, second.trigger) == ("succeeded", "retry")
    assert done.attempts == 2
    assert effects(event["id"]) == [(2, "all"), (2, "exact")]
    assert worker.alive


def test_database_connections_dropped_between_tasks_workers_reconnect(lane: Lane, handler_log):
    """Every session the workers hold is terminated while they are idle (what a
    database restart or failover does): the next task fails once on the dead
    connection, the worker opens a new one, and every event completes. Celery
    keeps connections across tasks unchecked (CELERY_DB_REUSE_MAX), so
    without webhook_worker.tasks.drop_broken_connections each pool process
    would fail every task until it recycled its connection."""
    web, worker = lane.web(workers=1), lane.worker(concurrency=2)
    url = f"{web.url}/webhooks/stripe/"
    warm = [make_event("invoice.paid") for _ in range(4)]  # both pool processes connected
    assert deliver_all(url, warm) == [200] * 4
    for event in warm:
        wait_for_status(event["id"], "succeeded", timeout=30)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        )
        assert cursor.fetchone()[0] >= 2  # the pool processes' sessions at least
    after = [make_event("invoice.paid") for _ in range(10)]
    assert deliver_all(url, after) == [200] * 10
    ids = {e["id"]: e["type"] for e in warm + after}
    wait_all_succeeded(list(ids), timeout=60, lane=lane)
    assert_effects_exactly_once(ids)
    assert_no_attempt_ran_twice(handler_log, ids)
    assert worker.alive


def test_database_unavailable_to_workers_then_back(lane: Lane, test_db_url, handler_log):
    """The workers lose the database (every connection dropped, new ones
    refused) while events are being processed; once it is back, every event
    completes and no handler's writes commit twice."""
    host_port = test_db_url.rsplit("@", 1)[1].split("/", 1)[0]
    proxy = TcpProxy("127.0.0.1", int(host_port.rsplit(":", 1)[1]))
    proxy.up()
    try:
        web = lane.web()  # ingest keeps its own, direct connection
        via_proxy = {"DATABASE_URL": db_url_via(proxy, test_db_url)}
        lane.worker(concurrency=2, **via_proxy)
        lane.worker(concurrency=2, **via_proxy)
        lane.beat(**via_proxy)
        url = f"{web.url}/webhooks/stripe/"
        events = [make_event("invoice.paid", behavior="sleep:0.05") for _ in range(60)]
        assert deliver_all(url, events[:30]) == [200] * 30
        proxy.down()
        assert deliver_all(url, events[30:]) == [200] * 30
        # The outage is felt: workers fail to claim events and retry them.
        wait_until(
            lambda: any("database error processing" in p.log() for p in lane.procs),
            timeout=60,
            message=lane.logs,
        )
        proxy.up()
        ids = {e["id"]: e["type"] for e in events}
        wait_all_succeeded(list(ids), timeout=180, lane=lane)
    finally:
        proxy.close()
    assert_effects_exactly_once(ids)
    assert_no_attempt_ran_twice(handler_log, ids)


def test_database_unavailable_at_ingest_503_then_stripes_retry_succeeds(
    lane: Lane, test_db_url, handler_log
):
    """The web process reaches Postgres through a proxy we cut: while it is down
    the view answers 503 and stores nothing; the same delivery sent again
    (Stripe retries every non-2xx) is stored and processed once."""
    host_port = test_db_url.rsplit("@", 1)[1].split("/", 1)[0]
    proxy = TcpProxy("127.0.0.1", int(host_port.rsplit(":", 1)[1]))
    proxy.up()
    try:
        web = lane.web(workers=1, threads=4, DATABASE_URL=db_url_via(proxy, test_db_url))
        lane.worker(concurrency=1)
        url = f"{web.url}/webhooks/stripe/"
        warm = make_event()
        assert deliver(url, warm) == 200  # the web process holds a live connection

        proxy.down()
        event = make_event("invoice.paid")
        response = _post_once(url, event)
        assert response.status_code == 503
        assert response.json()["error"] == "storage_unavailable"
        assert not WebhookEvent.objects.filter(pk=event["id"]).exists()

        proxy.up()
        response = _post_once(url, event)
        assert response.status_code == 200
        assert response.json() == {"received": True, "id": event["id"], "duplicate": False}
    finally:
        proxy.close()
    ids = {warm["id"]: warm["type"], event["id"]: event["type"]}
    wait_all_succeeded(list(ids), timeout=60, lane=lane)
    assert_effects_exactly_once(ids)


def test_database_not_answering_at_ingest_503_not_a_hang(lane: Lane, test_db_url):
    """The database stops answering (connections dropped, new ones never
    answered): the view still answers, 503 after the connect timeout, instead
    of holding Stripe's request open; the retry succeeds once it is back."""
    host_port = test_db_url.rsplit("@", 1)[1].split("/", 1)[0]
    proxy = TcpProxy("127.0.0.1", int(host_port.rsplit(":", 1)[1]))
    proxy.up()
    try:
        web = lane.web(workers=1, threads=4, DATABASE_URL=db_url_via(proxy, test_db_url))
        url = f"{web.url}/webhooks/stripe/"
        assert deliver(url, make_event()) == 200

        proxy.stall()
        event = make_event("invoice.paid")
        response = _post_once(url, event)
        assert response.status_code == 503
        assert response.json()["error"] == "storage_unavailable"

        proxy.down()
        proxy.up()
        assert _post_once(url, event).status_code == 200
    finally:
        proxy.close()
    assert WebhookEvent.objects.filter(pk=event["id"]).exists()


def _post_once(url: str, event: dict):
    import requests

    from .faults import signed_headers

    body = encode_event(event)
    return requests.post(url, data=body.encode(), headers=signed_headers(body), timeout=60)


# --- 5. a handler slower than the broker's visibility timeout ----------------


@pytest.mark.skipif(
    kombu.VERSION < (5, 5),
    reason="kombu before 5.5 has no unacked_restore_interval: Redis' redelivery of an "
    "unacknowledged message cannot be brought on within the test (tests/test_worker_lock.py "
    "covers a second copy of a running attempt on every version)",
)
def test_handler_slower_than_visibility_timeout_runs_once(lane: Lane, handler_log):
    """Redis hands the unacked message out again after the visibility timeout,
    while the first copy is still running: the copy finds the event's lock
    held and leaves it; the handlers run once."""
    transport = (
        '{"visibility_timeout": 1, "unacked_restore_interval": 1, "unacked_restore_throttle": 1}'
    )
    web = lane.web(workers=1)
    workers = [
        lane.worker(concurrency=2, WEBHOOKS_TEST_TRANSPORT_OPTIONS=transport) for _ in range(2)
    ]
    event = make_event("invoice.paid", behavior="sleep:7")
    assert deliver(f"{web.url}/webhooks/stripe/", event) == 200

    done = wait_for_status(event["id"], "succeeded", timeout=90)

    redelivered = sum(w.log().count(f"event {event['id']} is being processed") for w in workers)
    assert redelivered >= 1, "the message was never redelivered: " + lane.logs()
    assert done.attempts == 1
    assert outcomes(event["id"]) == [("succeeded", "delivery")]
    assert [c.handler for c in logged_calls(handler_log, [event["id"]])].count("all") == 1
    assert effects(event["id"]) == [(1, "all"), (1, "exact")]


# --- 6. several workers and sweepers on one queue ---------------------------


@pytest.mark.parametrize("n_workers", [2, 3])
def test_several_workers_and_two_sweepers_on_one_queue(lane: Lane, handler_log, n_workers):
    """Workers race for duplicates, retries and swept events; two beats sweep at
    once. Each event's handlers commit once, and no attempt runs twice."""
    web = lane.web()
    workers = [lane.worker(concurrency=2) for _ in range(n_workers)]
    lane.beat()
    lane.beat()
    url = f"{web.url}/webhooks/stripe/"

    # Events whose broker message was lost: stored exactly as ingest stores
    # them, never published. Only the sweepers can find them.
    lost = [make_event("customer.created") for _ in range(60)]
    for event in lost:
        body = encode_event(event)
        assert WebhookEvent.objects.record(parse_event(body), body, "default")
    # Delivered events, each delivered twice at once; some fail their first attempt.
    delivered = [make_event("invoice.paid", behavior="fail_first_pct:20") for _ in range(80)] + [
        make_event("customer.subscription.created") for _ in range(20)
    ]
    assert deliver_all(url, delivered + delivered, clients=12) == [200] * (2 * len(delivered))

    ids = {e["id"]: e["type"] for e in lost + delivered}
    wait_all_succeeded(list(ids), timeout=180, lane=lane)
    assert_effects_exactly_once(ids)
    assert_no_attempt_ran_twice(handler_log, ids)
    for event in lost:
        assert outcomes(event["id"]) == [("succeeded", "sweeper")]
    for event in delivered:
        fails = first_attempt_fails(event["id"], 20) and event["type"] == "invoice.paid"
        # The trigger of a run depends on which copy won the race; the outcomes do not.
        assert [o for o, _ in outcomes(event["id"])] == (
            ["retry", "succeeded"] if fails else ["succeeded"]
        )
    nodes = set(WebhookAttempt.objects.filter(event_id__in=ids).values_list("worker", flat=True))
    assert len({n.split(" pid ")[0] for n in nodes}) >= 2, "the work was not shared"
    assert all(w.alive for w in workers)


def test_broker_lost_while_a_handler_runs_the_worker_carries_on(
    redis_lane: Lane, own_redis: EmbeddedRedis, handler_log
):
    """The broker goes away while a handler runs; the attempt finishes and its
    late acknowledgement meets the broken connection. The same worker
    reconnects once the broker is back and processes what comes next."""
    web = redis_lane.web(workers=1)
    worker = redis_lane.worker(concurrency=1)
    redis_lane.beat()
    slow = make_event("invoice.paid", behavior="sleep:3")
    assert deliver(f"{web.url}/webhooks/stripe/", slow) == 200
    start_of_attempt(handler_log, slow["id"], 1)
    own_redis.stop()
    wait_for_status(slow["id"], "succeeded", timeout=30)
    own_redis.start()
    later = make_event("customer.created")
    assert deliver(f"{web.url}/webhooks/stripe/", later) == 200
    wait_until(
        lambda: (
            not worker.alive
            or WebhookEvent.objects.filter(pk=later["id"], status="succeeded").exists()
        ),
        timeout=60,
    )
    assert worker.alive, worker.log_tail(60)
