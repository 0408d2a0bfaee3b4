"""Soak: many deliveries, duplicates, failing handlers and killed workers at once.

    make soak                                      # 10,000 deliveries (SOAK_EVENTS)
    make test PYTEST_ARGS="-s tests/test_soak.py"  # the small version in the suite

16 concurrent clients post SOAK_EVENTS deliveries through gunicorn; 10 % of
them are duplicates of another delivery (some racing the original). Every
handler fails the first attempt of 20 % of the events (chosen by a hash of
the event id, so the test knows which). Meanwhile workers are SIGKILLed:
the pool process running the first attempt, as soon as one runs, then every
SOAK_KILL_EVERY seconds a pool process or a whole worker, which is then
started again. At the end every unique event is `succeeded` and
every handler's side effect is committed exactly once.

The workers get eight attempts (the production schedule's count) instead
of the suite's four: a worker killed during an event's attempt uses that
attempt up, and an event hit by a kill three times in a row would otherwise
be dead-lettered, as designed.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from django.db import connection

from webhook_ingest.models import WebhookEvent
from webhook_worker.models import WebhookAttempt
from webhook_worker.stripe_events import encode_event

from . import stack
from .constants import CONNECT_SECRET, OLD_SECRET, SECRET
from .faults import (
    Lane,
    assert_effects_exactly_once,
    assert_no_attempt_ran_twice,
    first_attempt_fails,
    kill_pid,
    make_lane,
    signed_headers,
    wait_all_succeeded,
)
from .helpers import make_event, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SOAK_EVENTS = int(os.environ.get("SOAK_EVENTS", "400"))
KILL_EVERY = float(os.environ.get("SOAK_KILL_EVERY", "2.5"))
CLIENTS = 16
DUPLICATE_SHARE = 0.10
FAIL_PERCENT = 20
TYPES = ["customer.created", "invoice.paid", "customer.subscription.created", "charge.succeeded"]
WORKER_ENV = {
    "WEBHOOKS_TEST_OVERRIDES": json.dumps({"RETRY_SCHEDULE": [0.5, 1, 1, 1, 1, 1, 1]}),
}


@pytest.fixture
def lane(transactional_db, stack_env, log_dir):
    lane = make_lane(stack_env, log_dir)
    yield lane
    lane.stop()


def build_deliveries(total: int, rng: random.Random) -> tuple[list[dict[str, Any]], int]:
    """`total` deliveries: unique events, and duplicates placed shortly after
    their original (close enough that some race it). Returns (deliveries, unique)."""
    duplicates = int(total * DUPLICATE_SHARE)
    unique = [
        make_event(rng.choice(TYPES), behavior=f"fail_first_pct:{FAIL_PERCENT}")
        for _ in range(total - duplicates)
    ]
    keyed = [(float(i), e) for i, e in enumerate(unique)]
    for _ in range(duplicates):
        i = rng.randrange(len(unique))
        keyed.append((i + rng.uniform(0, 3 * CLIENTS), unique[i]))
    keyed.sort(key=lambda pair: pair[0])
    return [e for _, e in keyed], len(unique)


class Killer(threading.Thread):
    """SIGKILLs a worker every `every` seconds: a pool process, or the whole
    worker (then starts a new one), until told to stop."""

    def __init__(self, lane: Lane, workers: list[stack.Process], every: float) -> None:
        super().__init__(daemon=True)
        self.lane, self.workers, self.every = lane, workers, every
        self.stopped = threading.Event()
        self.rng = random.Random(1)
        self.kills: Counter[str] = Counter()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            # The first kill as soon as an attempt is running, aimed at the
            # pool process running it: a fast machine can drain the whole
            # backlog before the first `every` seconds are up.
            pid = self._running_pool_process()
            if pid is not None:
                kill_pid(pid)
                self.kills["pool process"] += 1
            while not self.stopped.wait(self.every):
                index = self.rng.randrange(len(self.workers))
                victim = self.workers[index]
                children = victim.children()
                if children and self.rng.random() < 0.6:
                    kill_pid(self.rng.choice(children))
                    self.kills["pool process"] += 1
                else:
                    victim.kill()
                    self.kills["whole worker"] += 1
                    self.workers[index] = self.lane.worker(concurrency=2, **WORKER_ENV)
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            connection.close()

    def _running_pool_process(self) -> int | None:
        """The pid of a pool process of ours with an attempt running, once there is one."""
        while not self.stopped.wait(0.02):
            for worker in WebhookAttempt.objects.filter(outcome="running").values_list(
                "worker", flat=True
            ):
                pid = int(worker.rpartition(" pid ")[2] or 0)
                if any(pid in victim.children() for victim in self.workers):
                    return pid
        return None


_local = threading.local()


def post(url: str, event: dict[str, Any]) -> tuple[int, bool, int]:
    """One delivery as Stripe makes it, retried on anything but 2xx.
    Returns (final status, acknowledged as a duplicate, retries needed)."""
    session = getattr(_local, "session", None) or requests.Session()
    _local.session = session
    body = encode_event(event)
    status = 0
    for retries in range(8):
        try:
            response = session.post(
                url, data=body.encode(), headers=signed_headers(body), timeout=60
            )
            status = response.status_code
        except requests.RequestException:
            status = 0
        if status == 200:
            return status, bool(response.json()["duplicate"]), retries
        time.sleep(0.5 * (retries + 1))
    return status, False, 8


def test_soak(lane: Lane, handler_log):
    rng = random.Random(SOAK_EVENTS)
    deliveries, unique_count = build_deliveries(SOAK_EVENTS, rng)
    web = lane.web(workers=2, threads=8)
    workers = [lane.worker(concurrency=2, **WORKER_ENV) for _ in range(2)]
    lane.beat()
    url = f"{web.url}/webhooks/stripe/"

    started = time.monotonic()
    killer = Killer(lane, workers, KILL_EVERY)
    killer.start()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        results = list(pool.map(lambda e: post(url, e), deliveries))
    posted = time.monotonic()

    # Keep killing while the backlog drains, up to 30 s after the last delivery.
    def unfinished() -> int:
        return WebhookEvent.objects.exclude(status="succeeded").count()

    wait_until(
        lambda: unfinished() == 0 or time.monotonic() - posted > 30, timeout=60, interval=0.5
    )
    killer.stopped.set()
    killer.join(120)
    assert killer.error is None, killer.error

    events = {e["id"]: e["type"] for e in deliveries}
    assert len(events) == unique_count
    wait_all_succeeded(list(events), timeout=max(180.0, 0.1 * SOAK_EVENTS), lane=lane)
    finished = time.monotonic()

    # Every delivery was acknowledged; exactly one per event as new.
    assert [status for status, _, _ in results] == [200] * len(deliveries)
    assert sum(1 for _, duplicate, _ in results if not duplicate) == unique_count
    assert WebhookEvent.objects.count() == unique_count
    assert_effects_exactly_once(events)
    assert_no_attempt_ran_twice(handler_log, events)
    # Handler failures are exactly the chosen first attempts; any other extra
    # attempt was a killed worker's ("lost").
    flaky = {eid for eid in events if first_attempt_fails(eid, FAIL_PERCENT)}
    attempts = WebhookAttempt.objects.filter(event_id__in=list(events))
    retried = set(attempts.filter(outcome="retry").values_list("event_id", "number"))
    assert {eid for eid, _ in retried} <= flaky and {n for _, n in retried} <= {1}
    first_outcomes = dict(attempts.filter(number=1).values_list("event_id", "outcome"))
    assert {first_outcomes[eid] for eid in flaky} <= {"retry", "lost"}
    outcomes = Counter(attempts.values_list("outcome", flat=True))
    triggers = Counter(attempts.values_list("trigger", flat=True))
    assert set(outcomes) <= {"succeeded", "retry", "lost"}

    totals = {
        "deliveries": len(deliveries),
        "unique events": unique_count,
        "duplicate deliveries": len(deliveries) - unique_count,
        "deliveries resent after a non-2xx": sum(r for _, _, r in results),
        "events failing their first attempt": len(flaky),
        "workers killed (pool process)": killer.kills["pool process"],
        "workers killed (whole worker)": killer.kills["whole worker"],
        "attempts": sum(outcomes.values()),
        "attempts failed and retried": outcomes["retry"],
        "attempts lost with a killed worker": outcomes["lost"],
        "attempts started by the sweeper": triggers["sweeper"],
        "side effects committed": sum(
            2 if t in ("invoice.paid", "customer.subscription.created") else 1
            for t in events.values()
        ),
        "seconds posting": round(posted - started, 1),
        "seconds until all succeeded": round(finished - started, 1),
        "deliveries per second": round(len(deliveries) / (posted - started), 1),
    }
    print("\nsoak totals:\n" + "\n".join(f"  {k:<38} {v}" for k, v in totals.items()))
    assert sum(killer.kills.values()) >= 1
    # No process logged a signing secret: web, workers (killed ones too), beat.
    for proc in lane.procs:
        for secret in (SECRET, OLD_SECRET, CONNECT_SECRET):
            assert secret not in proc.log(), proc.name
