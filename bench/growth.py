"""What each request costs as the events table grows (part of `make bench`).

    python -m bench.growth                     # 10,000 then 2,000,000 events (~20 min)
    python -m bench.growth --quick             # 10,000 then 200,000 events (~3 min)
    python -m bench.growth --events 10000,500000 --repeat 5

One embedded Postgres (bench.run's, fsync on, on tmpfs) is seeded in SQL
(generate_series) with a realistic mix: sixteen common Stripe event types,
98.65 % succeeded, 1 % failed, 0.2 % retrying, 0.1 % pending, 0.05 %
processing, one attempt per event that reached a worker, four events per
object, received over a month. Unfinished events are due tomorrow, so the
sweeper finds nothing to do and measures its queries alone. At each size,
after VACUUM ANALYZE, every request of the table is timed in this process
through Django's test client (median of --repeat calls after one warm-up):
deliveries, health, metrics, the admin's list, filters, searches and event
page, and one run of the sweeper.

Then, per event: N new deliveries, then an attempt at each (the worker's
code, `dispatch.process`, called in this process): SQL statements sent
(BEGIN and COMMIT aside), WAL bytes written (pg_current_wal_lsn), CPU of
Postgres (/proc) and of this process, and the calls and time of the
counting triggers' functions (pg_stat_user_functions), each divided by N.

Printed, and written to docs/benchmarks.md between the bench:growth markers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.run import DOC, cpu_seconds, django_bench, log, machine
from tests.stack import child_pids
from webhook_worker.stripe_events import build_event, encode_event, sign_body

MARK_START = "<!-- bench:growth:start -->"
MARK_END = "<!-- bench:growth:end -->"
EVENTS = "webhook_ingest_webhookevent"
ATTEMPTS = "webhook_worker_webhookattempt"
ADMIN = "/admin/webhook_ingest/webhookevent/"

# (type, weight in percent): what a subscription business receives.
TYPES = [
    ("customer.subscription.updated", 20),
    ("charge.succeeded", 10),
    ("payment_intent.succeeded", 10),
    ("payment_intent.created", 10),
    ("invoice.paid", 8),
    ("invoice.payment_succeeded", 8),
    ("invoice.created", 6),
    ("invoice.finalized", 6),
    ("customer.updated", 6),
    ("payment_method.attached", 4),
    ("customer.created", 3),
    ("checkout.session.completed", 3),
    ("invoice.payment_failed", 2),
    ("customer.subscription.created", 2),
    ("charge.refunded", 1),
    ("product.updated", 1),
]
# Status by a hash of the row number, out of 10,000.
STATUS_SQL = """CASE
    WHEN h < 100 THEN 'failed' WHEN h < 120 THEN 'retrying'
    WHEN h < 130 THEN 'pending' WHEN h < 135 THEN 'processing'
    ELSE 'succeeded' END"""
OUTCOME = {
    "succeeded": "succeeded",
    "failed": "failed",
    "retrying": "retry",
    "processing": "running",
}
SECONDS_PER_EVENT = 1.3  # 2,000,000 events: a month


def body_templates() -> list[tuple[str, int, int, str]]:
    """(type, weight range low, high, body with EVT_ID and OBJ_ID placeholders)."""
    rows, low = [], 0
    for event_type, weight in TYPES:
        event = build_event(event_type, event_id="EVT_ID")
        body = encode_event(event).replace(str(event["data"]["object"].get("id", "")), "OBJ_ID")
        rows.append((event_type, low, low + weight, body))
        low += weight
    assert low == 100
    return rows


def seed(db: Any, start: int, stop: int) -> None:
    """Events start+1..stop (and their attempts), in slices of 500,000 rows."""
    db.execute("CREATE TABLE IF NOT EXISTS bench_types (type text, lo int, hi int, body text)")
    if not db.execute("SELECT 1 FROM bench_types LIMIT 1").fetchone():
        with db.cursor() as cur:
            cur.executemany("INSERT INTO bench_types VALUES (%s, %s, %s, %s)", body_templates())
    for low in range(start, stop, 500_000):
        high = min(stop, low + 500_000)
        began = time.monotonic()
        outcome = " ".join(f"WHEN '{s}' THEN '{o}'" for s, o in OUTCOME.items())
        db.execute(
            f"""
            WITH stored AS (
                INSERT INTO {EVENTS} (id, type, livemode, api_version, account, created,
                    object_id, endpoint, style, source, snapshot_event, body, status,
                    attempts, received_at, processed_at, due_at, scheduled, last_error,
                    waiting_for)
                SELECT id, t.type, true, '2024-06-20', NULL, at - interval '1 second',
                    obj, 'default', 'snapshot', 'delivery', '',
                    replace(replace(t.body, 'EVT_ID', id), 'OBJ_ID', obj), status,
                    CASE WHEN status = 'pending' THEN 0 ELSE 1 END, at,
                    CASE WHEN status IN ('succeeded', 'failed') THEN at + interval '40 ms' END,
                    CASE WHEN status IN ('succeeded', 'failed') THEN at
                         ELSE now() + interval '1 day' END,
                    status = 'retrying',
                    CASE WHEN status IN ('failed', 'retrying')
                         THEN 'RuntimeError: the handler failed' ELSE '' END, ''
                FROM (
                    SELECT 'evt_1' || substr(md5(i::text), 1, 23) AS id,
                           'obj_' || substr(md5((i / 4)::text), 1, 14) AS obj,
                           now() - interval '31 days'
                               + i * interval '{SECONDS_PER_EVENT} seconds' AS at,
                           (i * 2654435761) % 100 AS pick, {STATUS_SQL} AS status
                    FROM (SELECT i, (i * 40503) % 10000 AS h
                          FROM generate_series({low + 1}::bigint, {high}) AS i) AS n
                ) AS e JOIN bench_types t ON e.pick >= t.lo AND e.pick < t.hi
                RETURNING id, status, received_at, processed_at
            )
            INSERT INTO {ATTEMPTS} (event_id, number, trigger, outcome, started_at,
                finished_at, duration_ms, error_class, error_message, traceback, worker,
                task_id, skipped, note)
            SELECT id, 1, 'delivery', CASE status {outcome} END, received_at,
                processed_at, 40, CASE WHEN status IN ('failed', 'retrying')
                THEN 'RuntimeError' ELSE '' END, '', '', 'bench pid 1', '', '', ''
            FROM stored WHERE status <> 'pending'
            """
        )
        log(f"seeded events {low + 1:,}..{high:,} in {time.monotonic() - began:.1f} s")
    db.execute(f"VACUUM (ANALYZE) {EVENTS}, {ATTEMPTS}")
    db.execute("CHECKPOINT")


def timed(call: Callable[[], Any], repeat: int) -> float:
    """Median milliseconds of `repeat` calls, after one warm-up call."""
    call()
    samples = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


class Requests:
    """The table's requests against the running Django, each a callable that checks its answer."""

    def __init__(self, secret: str, db: Any) -> None:
        from django.contrib.auth import get_user_model
        from django.test import Client

        self.secret = secret
        self.db = db
        self.client = Client(SERVER_NAME="localhost")
        user_model = get_user_model()
        admin, _ = user_model.objects.get_or_create(
            username="bench", defaults={"is_staff": True, "is_superuser": True}
        )
        self.admin = Client(SERVER_NAME="localhost")
        self.admin.force_login(admin)
        self.serial = 0

    def get(self, client: Any, url: str, expect: int = 200) -> Callable[[], None]:
        def call() -> None:
            response = client.get(url)
            assert response.status_code == expect, (url, response.status_code)
            b"".join(response) if response.streaming else response.content  # noqa: B018

        return call

    def post(self, body: str) -> Any:
        return self.client.post(
            "/webhooks/stripe/",
            data=body,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=sign_body(body, self.secret),
        )

    def new_delivery(self) -> None:
        self.serial += 1
        event = build_event("customer.subscription.updated", event_id=f"evt_new{self.serial:021d}")
        response = self.post(encode_event(event))
        assert response.status_code == 200, response.content

    def sample(self) -> tuple[str, str, str]:
        """A stored event's id, its object id, and its body (for a duplicate delivery)."""
        row = self.db.execute(
            f"SELECT id, object_id, body FROM {EVENTS} WHERE id LIKE 'evt\\_1%%' "
            "ORDER BY received_at DESC LIMIT 1 OFFSET 1000"
        ).fetchone()
        return row[0], row[1], row[2]

    def table(self) -> list[tuple[str, Callable[[], Any]]]:
        from webhook_worker.sweeper import sweep

        event_id, object_id, body = self.sample()

        def duplicate() -> None:
            response = self.post(body)
            assert response.status_code == 200, response.content

        def sweeper() -> None:
            sweep()

        return [
            ("a new delivery (signed POST)", self.new_delivery),
            ("a duplicate delivery", duplicate),
            ("`GET /webhooks/health/`", self.get(self.client, "/webhooks/health/")),
            ("`GET /webhooks/metrics`", self.get(self.client, "/webhooks/metrics")),
            ("admin event list", self.get(self.admin, ADMIN)),
            ("admin list, status = failed", self.get(self.admin, ADMIN + "?status=failed")),
            ("admin search by object id", self.get(self.admin, f"{ADMIN}?q={object_id}")),
            ("admin search by type prefix", self.get(self.admin, ADMIN + "?q=invoice.pay")),
            ("admin event page", self.get(self.admin, f"{ADMIN}{event_id}/change/")),
            ("the sweeper, once", sweeper),
        ]


def postgres_cpu(bench: Any) -> float:
    return sum(cpu_seconds(pid) or 0.0 for pid in child_pids(bench.pg.process.pid))


def wal_lsn(db: Any) -> int:
    row = db.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0])


def trigger_stats(db: Any) -> tuple[int, float]:
    """Calls of the counting triggers' functions, and their time in ms (track_functions)."""
    from django.db import connection

    # Django's session reports its statistics now, not when next idle.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT 1")
    db.execute("SELECT pg_stat_clear_snapshot()")
    row = db.execute(
        "SELECT coalesce(sum(calls), 0), coalesce(sum(self_time), 0) FROM pg_stat_user_functions "
        "WHERE funcname IN ('webhook_event_count', 'webhook_attempt_count')"
    ).fetchone()
    return int(row[0]), float(row[1])


def per_event(bench: Any, requests: Requests, count: int) -> dict[str, dict[str, float]]:
    """Statements, WAL bytes and CPU ms per event: of a delivery, and of a successful attempt."""
    from django.db import connection

    from webhook_worker import dispatch

    statements = 0

    def counter(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    first = requests.serial + 1
    ids = [f"evt_new{n:021d}" for n in range(first, first + count)]
    results: dict[str, dict[str, float]] = {}

    def measure(name: str, run: Callable[[], None]) -> None:
        nonlocal statements
        statements = 0
        calls, spent = trigger_stats(bench.db)
        wal, pg, own = wal_lsn(bench.db), postgres_cpu(bench), time.process_time()
        with connection.execute_wrapper(counter):
            run()
        results[name] = {
            "statements": statements / count,
            "wal_bytes": (wal_lsn(bench.db) - wal) / count,
            "postgres_cpu_ms": (postgres_cpu(bench) - pg) * 1000 / count,
            "python_cpu_ms": (time.process_time() - own) * 1000 / count,
        }
        calls_after, spent_after = trigger_stats(bench.db)
        results[name]["trigger_calls"] = (calls_after - calls) / count
        results[name]["trigger_ms"] = (spent_after - spent) / count

    def deliveries() -> None:
        for _ in range(count):
            requests.new_delivery()

    def attempts() -> None:
        for event_id in ids:
            result = dispatch.process(event_id, trigger="delivery", worker="bench")
            assert result.outcome == "succeeded", result

    measure("delivery", deliveries)
    measure("attempt", attempts)
    return results


def render(sizes: list[int], results: dict[int, dict[str, float]], costs: dict[int, Any],
           args: argparse.Namespace) -> str:  # fmt: skip
    small, large = sizes[0], sizes[-1]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `python -m "
        f"bench.growth` ({machine()}); median of {args.repeat} calls after a warm-up, "
        "Django's test client in one process, embedded Postgres on tmpfs.",
        "",
        f"| request | {small:,} events | {large:,} events | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name in results[small]:
        a, b = results[small][name], results[large][name]
        lines.append(f"| {name} | {a:,.1f} ms | {b:,.1f} ms | {b / a:.1f}× |")
    lines += [
        "",
        f"Per event ({args.per_event:,} deliveries, then an attempt at each):",
        "",
        "| per event | table size | SQL statements sent | WAL bytes | Postgres CPU | "
        "counting triggers: calls, time | this process's CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        for name, row in costs[size].items():
            lines.append(
                f"| {name} | {size:,} | {row['statements']:.1f} | {row['wal_bytes']:,.0f} | "
                f"{row['postgres_cpu_ms']:.2f} ms | {row['trigger_calls']:.1f}, "
                f"{row['trigger_ms']:.3f} ms | {row['python_cpu_ms']:.2f} ms |"
            )
    return "\n".join(lines)


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if MARK_START not in doc:
        doc += f"\n{MARK_START}\n{MARK_END}\n"
    head, rest = doc.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    DOC.write_text(f"{head}{MARK_START}\n{text}\n{MARK_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__)
    parser.add_argument("--events", help="comma-separated table sizes, smallest first")
    parser.add_argument("--repeat", type=int)
    parser.add_argument("--per-event", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/")
    # `make bench` passes BENCH_ARGS to every phase.
    args, _ = parser.parse_known_args(argv)
    default = "10000,200000" if args.quick else "10000,2000000"
    sizes = [int(n) for n in (args.events or default).split(",")]
    args.repeat = args.repeat or (3 if args.quick else 7)
    results: dict[int, dict[str, float]] = {}
    costs: dict[int, Any] = {}
    with django_bench("bench-growth") as bench:
        bench.db.execute("ALTER SYSTEM SET track_functions = 'pl'")
        bench.db.execute("SELECT pg_reload_conf()")
        requests = Requests(bench.secret, bench.db)
        seeded = 0
        for size in sizes:
            seed(bench.db, seeded, size)
            seeded = size
            log(f"{size:,} events: timing the requests")
            results[size] = {name: timed(call, args.repeat) for name, call in requests.table()}
            for name, ms in results[size].items():
                log(f"  {name}: {ms:,.1f} ms")
            costs[size] = per_event(bench, requests, args.per_event)
            log(f"  per event: {costs[size]}")
            bench.broker.flushdb()
    text = render(sizes, results, costs, args)
    print(text)
    if not args.no_doc:
        write_doc(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
