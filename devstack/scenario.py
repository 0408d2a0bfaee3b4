"""Deliveries and faults through a cluster (devstack/cluster.py), and what came of them.

Deliveries go through the load balancer as Stripe sends them: signed at send
time, sent again after anything but a 2xx, at a steady rate from several
clients; 10 % are duplicates of another delivery, and the handlers fail the
first attempt of 20 % of the events (chosen by a hash of the event id). While
they arrive, in order:

1. a worker host's link goes down while one of its handlers runs (an event
   whose handler sleeps 3 s), for longer than the sweeper's window, then
   comes back;
2. a web host is killed (its gunicorn SIGKILLed), then started again;
3. a worker host is killed while one of its handlers runs, its beat with
   it, and stays down past the sweeper's window; then it is started again;
4. the broker host restarts empty;
5. the database host restarts.

Then every acknowledged event must end `succeeded` with each handler's row
committed exactly once, and the events that the killed worker host and the
cut link were running must have started again within the sweeper's window
(`Timing.sweeper_window`). The report gives events/s, waits, and the
attempts and resent deliveries that each fault cost.
"""

from __future__ import annotations

import hashlib
import random
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import requests

from webhook_worker.stripe_events import build_event, encode_event, sign_body

from . import capacity, meter
from .cluster import DATABASE, Cluster, Timing, cluster

# The signing secret of the test settings' default endpoint (tests/constants.py).
SECRET = "whsec_test_current_0123456789abcdef"
TYPES = ("customer.created", "invoice.paid", "customer.subscription.created", "charge.succeeded")
# Handlers that write a row (tests/testapp/webhooks.py): "all" for every
# event, "exact" for these types too.
EXACT_TYPES = {"customer.subscription.created", "invoice.paid"}
SLEEP = 3.0  # seconds the handler of the link fault's events runs
GIVE_UP = 600.0  # a client stops resending a delivery after this long
RETRY_JITTER = 0.2  # tests.settings' STRIPE_WEBHOOKS["RETRY_JITTER"]


@dataclass(frozen=True)
class Plan:
    """The load: how many deliveries, how fast, and when the faults start."""

    events: int = 20_000
    rate: float = 50.0  # deliveries per second, from all clients together
    clients: int = 16
    duplicate_share: float = 0.10
    fail_percent: int = 20
    # Each fault starts once this share of the deliveries has been sent (and
    # the fault before it is over).
    fault_marks: tuple[float, ...] = (0.10, 0.30, 0.45, 0.62, 0.80)
    seed: int = 20


def first_attempt_fails(event_id: str, percent: int) -> bool:
    """Which events the `fail_first_pct:N` handler behaviour fails on attempt 1."""
    return int(hashlib.sha256(event_id.encode()).hexdigest(), 16) % 100 < percent


@dataclass
class Delivery:
    event_id: str
    event_type: str
    body: str
    status: int = 0
    duplicate: bool = False
    resent_at: list[float] = field(default_factory=list)


def build_deliveries(plan: Plan) -> list[Delivery]:
    """Unique events, and duplicates placed shortly after their original (some race it)."""
    rng = random.Random(plan.seed)
    duplicates = int(plan.events * plan.duplicate_share)
    unique = []
    for _ in range(plan.events - duplicates):
        metadata = {"test_behavior": f"fail_first_pct:{plan.fail_percent}"}
        event = build_event(rng.choice(TYPES), metadata=metadata)
        unique.append((event["id"], event["type"], encode_event(event)))
    keyed = [(float(i), e) for i, e in enumerate(unique)]
    for _ in range(duplicates):
        i = rng.randrange(len(unique))
        keyed.append((i + rng.uniform(0, 3 * plan.clients), unique[i]))
    keyed.sort(key=lambda pair: pair[0])
    return [Delivery(*e) for _, e in keyed]


# --- database --------------------------------------------------------------

_local = threading.local()


def query(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of `sql`, on this thread's connection; one reconnect if the server dropped it."""
    for attempt in (1, 2):
        conn = getattr(_local, "conn", None)
        try:
            if conn is None or conn.closed:
                conn = _local.conn = psycopg.connect(url, autocommit=True, connect_timeout=3)
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        except psycopg.OperationalError:
            _local.conn = None
            if attempt == 2:
                raise
    return []


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except psycopg.OperationalError:
            value = None  # the database is restarting
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- deliveries ------------------------------------------------------------


class Poster:
    """Sends the deliveries at `rate` per second from `clients` threads."""

    def __init__(self, url: str, deliveries: list[Delivery], plan: Plan) -> None:
        self.url, self.deliveries, self.plan = url, deliveries, plan
        self.extra: list[Delivery] = []  # the faults' own events
        self.sent = 0
        self.acknowledged = 0
        self.finished = threading.Event()
        self._lock = threading.Lock()
        self._sessions = threading.local()

    def run(self) -> None:
        start = time.monotonic()

        def client() -> None:
            while True:
                with self._lock:
                    index = self.sent
                    if index >= len(self.deliveries):
                        return
                    self.sent += 1
                time.sleep(max(0.0, start + index / self.plan.rate - time.monotonic()))
                self.deliver(self.deliveries[index])

        with ThreadPoolExecutor(max_workers=self.plan.clients) as pool:
            for future in [pool.submit(client) for _ in range(self.plan.clients)]:
                future.result()
        self.finished.set()

    def deliver(self, delivery: Delivery) -> None:
        """POST until a 2xx, as Stripe does (it backs off for days; this for GIVE_UP s)."""
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        deadline = time.monotonic() + GIVE_UP
        for tries in range(1000):
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": sign_body(delivery.body, SECRET),
            }
            try:
                response = session.post(self.url, data=delivery.body, headers=headers, timeout=30)
                delivery.status = response.status_code
            except requests.RequestException:
                delivery.status = 0
            if 200 <= delivery.status < 300:
                delivery.duplicate = bool(response.json().get("duplicate"))
                with self._lock:
                    self.acknowledged += 1
                return
            if time.monotonic() > deadline:
                return
            delivery.resent_at.append(time.time())
            time.sleep(min(0.25 * 2**tries, 4.0))

    def deliver_extra(self, behavior: str, count: int) -> list[str]:
        """`count` events of their own, sent now; checked with the others."""
        extra = []
        for _ in range(count):
            event = build_event("customer.created", metadata={"test_behavior": behavior})
            extra.append(Delivery(event["id"], event["type"], encode_event(event)))
        with ThreadPoolExecutor(max_workers=count) as pool:
            list(pool.map(self.deliver, extra))
        self.extra += extra
        return [d.event_id for d in extra]

    def all(self) -> list[Delivery]:
        return self.deliveries + self.extra


# --- faults ----------------------------------------------------------------


@dataclass
class Fault:
    name: str
    started: float = 0.0  # epoch seconds
    ended: float = 0.0
    # (event id, attempt number) of the attempts the fault interrupted: each
    # must start again within the sweeper's window.
    interrupted: list[tuple[str, int]] = field(default_factory=list)
    note: str = ""
    # The longest an event unfinished or arriving meanwhile waited after the
    # fault began, until its successful attempt started.
    delay: float = 0.0


def running_attempts(
    c: Cluster, host: str, among: list[str] | None = None
) -> list[tuple[str, int]]:
    sql = (
        "SELECT event_id, number FROM webhook_worker_webhookattempt "
        "WHERE outcome = 'running' AND worker LIKE %s"
    )
    params: list[Any] = [f"{host}@%"]
    if among is not None:
        sql += " AND event_id = ANY(%s)"
        params.append(among)
    return [(r[0], r[1]) for r in query(c.db.url(DATABASE), sql, params)]


def sleeper_running_on(c: Cluster, poster: Poster, host: str) -> list[tuple[str, int]]:
    """Send events whose handler runs SLEEP seconds until one runs on `host`; its attempt."""
    for _ in range(10):
        sleepers = poster.deliver_extra(f"sleep:{SLEEP:g}", 6)

        def running(among: list[str] = sleepers) -> list[tuple[str, int]]:
            return running_attempts(c, host, among)

        try:
            found: list[tuple[str, int]] = wait_for(running, 30, f"a handler on {host}", 0.02)
        except TimeoutError:
            continue
        return found
    raise RuntimeError(f"no handler ran on {host}")


def link_down_mid_handler(c: Cluster, poster: Poster, timing: Timing) -> Fault:
    fault = Fault("w1's link down mid-handler, then back")
    host = c.hosts["w1"]
    fault.interrupted = sleeper_running_on(c, poster, "w1")
    host.link_down()
    fault.started = time.time()
    down_for = timing.sweeper_window + timing.sweep_interval
    time.sleep(down_for)
    host.link_up()
    fault.note = (
        f"down at {_clock(fault.started)} for {down_for:g} s "
        f"(the sweeper's window is {timing.sweeper_window:g} s)"
    )
    fault.ended = time.time()
    return fault


def kill_web_host(c: Cluster, poster: Poster, timing: Timing) -> Fault:
    fault = Fault("web1 killed, started again", started=time.time())
    c.kill_host("web1")
    time.sleep(timing.sweep_interval)
    c.start_web("web1")
    fault.ended = time.time()
    return fault


def kill_worker_host(c: Cluster, poster: Poster, timing: Timing) -> Fault:
    fault = Fault("w2 killed with its beat, started again")
    fault.interrupted = sleeper_running_on(c, poster, "w2")
    fault.started = time.time()
    c.kill_host("w2")
    down_for = timing.sweeper_window + timing.sweep_interval
    time.sleep(down_for)
    c.start_worker("w2")
    fault.note = f"killed at {_clock(fault.started)}, down {down_for:g} s"
    fault.ended = time.time()
    return fault


def restart_broker(c: Cluster, poster: Poster, timing: Timing) -> Fault:
    fault = Fault("broker restarted empty", started=time.time())
    c.restart_broker_empty()
    fault.ended = time.time()
    return fault


def restart_database(c: Cluster, poster: Poster, timing: Timing) -> Fault:
    fault = Fault("database restarted", started=time.time())
    c.restart_db()
    fault.ended = time.time()
    return fault


FAULTS = (link_down_mid_handler, kill_web_host, kill_worker_host, restart_broker, restart_database)


# --- the run -----------------------------------------------------------------


@dataclass
class Report:
    plan: Plan
    timing: Timing
    figures: dict[str, Any] = field(default_factory=dict)
    # What an event cost each role before the first fault (devstack/meter.py).
    per_event: dict[str, float] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    costs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # by fault
    problems: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = ["cluster run:"]
        lines += [f"  {k:<46} {v}" for k, v in self.figures.items()]
        lines.append("  cost per event, before the first fault:")
        lines += [f"    {k:<44} {v:,.2f}" for k, v in self.per_event.items()]
        lines.append("  what each fault cost:")
        for name, costs in self.costs:
            lines.append(f"    {name}: " + ", ".join(f"{k} {v}" for k, v in costs.items()))
        lines.append(
            "  problems: "
            + ("none" if not self.problems else "\n    " + "\n    ".join(self.problems))
        )
        return "\n".join(lines)


def run(plan: Plan, timing: Timing, state: Path | None = None) -> Report:
    """Start a cluster, deliver `plan.events` through it with the faults, check, report."""
    report = Report(plan, timing)
    with cluster(timing, state) as c:
        try:
            _run(c, plan, timing, report)
        except BaseException:
            print(c.logs(), flush=True)
            raise
    return report


def _run(c: Cluster, plan: Plan, timing: Timing, report: Report) -> None:
    deliveries = build_deliveries(plan)
    poster = Poster(c.url, deliveries, plan)
    faults: list[Fault] = []
    fault_error: list[BaseException] = []

    def sent(share: float) -> bool:
        return poster.sent >= share * len(deliveries)

    def inject() -> None:
        try:
            # A steady stretch first: what each event costs, without faults.
            wait_for(partial(sent, 0.02), GIVE_UP, "deliveries")
            before, acked = meter.snapshot(c, query), poster.acknowledged
            wait_for(partial(sent, plan.fault_marks[0]), GIVE_UP, "deliveries")
            after = meter.snapshot(c, query)
            report.per_event = meter.per_event(before, after, poster.acknowledged - acked)
            for mark, fault in zip(plan.fault_marks, FAULTS, strict=True):
                wait_for(partial(sent, mark), GIVE_UP, "deliveries")
                faults.append(fault(c, poster, timing))
        except BaseException as exc:
            fault_error.append(exc)

    started = time.time()
    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    poster.run()
    posted = time.time()
    injector.join()
    if fault_error:
        raise fault_error[0]
    report.faults = faults
    late = [f.name for f in faults if f.started > posted]
    if late:
        report.problems.append(f"faults after the last delivery (lower the rate): {late}")

    acked = {d.event_id: d.event_type for d in poster.all() if 200 <= d.status < 300}
    ids = list(acked)
    url = c.db.url(DATABASE)

    def done() -> bool:
        sql = "SELECT count(*) FROM webhook_ingest_webhookevent WHERE status = 'succeeded' AND id = ANY(%s)"  # noqa: E501
        return bool(query(url, sql, [ids])[0][0] == len(ids))

    try:
        wait_for(done, 120 + len(ids) / 20, "every acknowledged event to succeed", 0.5)
    except TimeoutError as exc:
        report.problems.append(str(exc))
    finished = time.time()
    _check(c, poster, acked, faults, timing, report)
    _figures(c, poster, acked, faults, report, started, posted, finished)


def _check(
    c: Cluster,
    poster: Poster,
    acked: dict[str, str],
    faults: list[Fault],
    timing: Timing,
    report: Report,
) -> None:
    url = c.db.url(DATABASE)
    ids = list(acked)
    never_acked = [d.event_id for d in poster.all() if not 200 <= d.status < 300]
    if never_acked:
        report.problems.append(
            f"{len(never_acked)} deliveries never acknowledged: {never_acked[:5]}"
        )
    statuses = Counter(
        dict(
            query(
                url,
                "SELECT status, count(*) FROM webhook_ingest_webhookevent "
                "WHERE id = ANY(%s) GROUP BY status",
                [ids],
            )
        )  # fmt: skip
    )
    if statuses["succeeded"] != len(ids):
        report.problems.append(f"acknowledged events by status: {dict(statuses)}")
    rows = query(
        url,
        "SELECT event_id, handler, count(*) FROM testapp_sideeffect GROUP BY event_id, handler",
    )
    effects = Counter({(e, h): n for e, h, n in rows})
    expected = {
        (e, h)
        for e, t in acked.items()
        for h in (("all", "exact") if t in EXACT_TYPES else ("all",))
    }
    missing = [k for k in expected if k not in effects]
    doubled = [(k, n) for k, n in effects.items() if n > 1]
    unexpected = [k for k in effects if k not in expected]
    if missing or doubled or unexpected:
        report.problems.append(
            f"handler rows: {len(missing)} missing e.g. {missing[:3]}, {len(doubled)} written "
            f"twice e.g. {doubled[:3]}, {len(unexpected)} unexpected e.g. {unexpected[:3]}"
        )
    # Interrupted attempts start again within the sweeper's window (plus a
    # moment for the sweep's message and then the event's to reach a worker),
    # and no event that was unfinished or arrived while a fault lasted waits
    # longer than that after it began, besides the retry that an event
    # failing its first attempt waits anyway (its delay, with jitter, until a
    # sweep publishes it).
    bound = timing.sweeper_window + max(timing.sweep_interval, 2.0)
    retry = timing.retry_schedule[0] * (1 + RETRY_JITTER) + timing.sweep_interval
    for fault in faults:
        # From the fault (or the event's arrival) to the start of its successful attempt.
        rows = query(
            url,
            "SELECT e.id, extract(epoch FROM a.started_at) - greatest(extract(epoch FROM "
            "e.received_at), %s) FROM webhook_ingest_webhookevent e "
            "JOIN webhook_worker_webhookattempt a ON a.event_id = e.id AND a.outcome = 'succeeded' "
            "WHERE e.id = ANY(%s) AND e.received_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
            [fault.started, ids, fault.started - bound, fault.ended],
        )
        late = []
        for event_id, delay in rows:
            fault.delay = max(fault.delay, float(delay or 0))
            flaky = first_attempt_fails(event_id, report.plan.fail_percent)
            if float(delay or 0) > bound + (retry if flaky else 0):
                late.append(f"{event_id} {float(delay):.1f} s")
        if late:
            report.problems.append(
                f"{fault.name}: {len(late)} events waited longer than {bound:g} s after it "
                f"began ({retry:g} s more for a failing first attempt), e.g. {late[:3]}"
            )
        for event_id, number in fault.interrupted:
            rows = query(
                url,
                "SELECT min(extract(epoch FROM started_at)) FROM webhook_worker_webhookattempt "
                "WHERE event_id = %s AND number > %s",
                [event_id, number],
            )
            again = rows[0][0]
            delay = None if again is None else float(again) - fault.started
            fault.note += f"; {event_id} attempt {number} interrupted, next after " + (
                "never" if delay is None else f"{delay:.1f} s"
            )
            if delay is None or delay > bound:
                report.problems.append(
                    f"{fault.name}: {event_id}'s attempt {number} was started again after "
                    f"{'never' if delay is None else f'{delay:.1f} s'}, beyond {bound:g} s"
                )


def _figures(
    c: Cluster,
    poster: Poster,
    acked: dict[str, str],
    faults: list[Fault],
    report: Report,
    started: float,
    posted: float,
    finished: float,
) -> None:
    url = c.db.url(DATABASE)
    ids = list(acked)
    received_waits = [
        (float(at), float(w))
        for at, w in query(
            url,
            "SELECT extract(epoch FROM received_at), "
            "extract(epoch FROM processed_at - received_at) FROM webhook_ingest_webhookevent"
            " WHERE id = ANY(%s) AND processed_at IS NOT NULL",
            [ids],
        )
    ]
    waits = [w for _, w in received_waits]
    attempts = query(
        url,
        "SELECT event_id, number, outcome, "
        "extract(epoch FROM coalesce(finished_at, started_at)), error_message "
        "FROM webhook_worker_webhookattempt WHERE event_id = ANY(%s)",
        [ids],
    )
    claimed = query(
        url,
        "SELECT coalesce(sum(attempts), 0) FROM webhook_ingest_webhookevent WHERE id = ANY(%s)",
        [ids],  # fmt: skip
    )[0][0]
    ((stored, durations),) = query(
        url,
        "SELECT pg_total_relation_size('webhook_ingest_webhookevent') "
        "+ pg_total_relation_size('webhook_worker_webhookattempt'), "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) "
        "FROM webhook_worker_webhookattempt WHERE outcome = 'succeeded'",
    )
    # The faults' own events (a sleeping handler) never fail by design.
    load = {d.event_id for d in poster.deliveries}
    flaky = {e for e in acked if e in load and first_attempt_fails(e, report.plan.fail_percent)}
    windows = sorted(faults, key=lambda f: f.started)

    def window(moment: float) -> str:
        name = "before the first fault"
        for fault in windows:
            if moment >= fault.started:
                name = fault.name
        return name

    extra: Counter[str] = Counter()
    by_outcome: dict[str, Counter[str]] = {}
    for event_id, number, outcome, at, error in attempts:
        expected_failure = (
            number == 1 and outcome == "retry" and event_id in flaky and "simulated" in error
        )
        if outcome != "succeeded" and not expected_failure:
            extra[window(float(at))] += 1
            by_outcome.setdefault(window(float(at)), Counter())[outcome] += 1
    resent: Counter[str] = Counter(window(t) for d in poster.all() for t in d.resent_at)
    longest: dict[str, float] = {}
    for at, wait in received_waits:
        longest[window(at)] = max(wait, longest.get(window(at), 0.0))
    deliveries = len(poster.deliveries)
    unique = len({d.event_id for d in poster.deliveries})
    report.figures.update(
        {
            "deliveries (10 % duplicates)": deliveries,
            "events acknowledged": len(acked),
            "events failing their first attempt (by design)": len(flaky),
            "deliveries per second, offered": round(deliveries / (posted - started), 1),
            "events per second, received to all succeeded": round(unique / (finished - started), 1),
            "seconds, first delivery to last event succeeded": round(finished - started, 1),
            "longest wait of an event (received to done), s": round(max(waits, default=0), 2),
            "99th percentile wait, s": round(_percentile(waits, 99), 2),
            "median wait, s": round(statistics.median(waits) if waits else 0, 3),
            "attempts recorded": len(attempts),
            "attempts claimed (events' attempt counters)": claimed,
            "sweeper's window, s": report.timing.sweeper_window,
            "median succeeded attempt, ms": round(float(durations or 0), 1),
            "stored bytes per event (events, attempts, indexes)": round(stored / len(ids)),
        }
    )
    for name in ["before the first fault", *(f.name for f in windows)]:
        costs: dict[str, Any] = {
            "extra attempts": extra[name],
            "by outcome": dict(by_outcome.get(name, {})) or "-",
            "deliveries resent": resent[name],
            "longest wait of an event received in it s": round(longest.get(name, 0.0), 1),
        }
        fault = next((f for f in windows if f.name == name), None)
        if fault is not None:
            costs["lasted s"] = round(fault.ended - fault.started, 1)
            costs["longest delay it caused s"] = round(fault.delay, 1)
            if fault.note:
                costs["note"] = fault.note.lstrip("; ")
        report.costs.append((name, costs))


def _clock(moment: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(moment)) + f".{int(moment % 1 * 10)}"


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


BEGIN, END = "<!-- cluster:begin -->", "<!-- cluster:end -->"


def write_docs(report: Report, path: Path, started: str) -> None:
    """Put the run's result between the markers of docs/scaling.md."""
    text = path.read_text()
    block = (
        f"{BEGIN}\n`make cluster`, {started}: {report.plan.events:,} deliveries at "
        f"{report.plan.rate:g}/s from {report.plan.clients} clients.\n\n"
        f"{capacity.tables(report.per_event, report.figures)}\n\n```\n"
        f"{report.text()}\n```\n{END}"
    )
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    path.write_text(pattern.sub(lambda _: block, text))
