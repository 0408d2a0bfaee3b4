"""What each out-of-order protection costs the worker, side by side (part of `make bench`).

    python -m bench.ordering                  # 3,000 events a trial, 2 rounds (~6 min)
    python -m bench.ordering --quick          # 1,000 events, 1 round (~2 min)

Two workloads of customer.subscription.updated events, stored first, then
published in a shuffled order, so that updates of one subscription reach
the worker out of order as Stripe's can:

- contended: ten updates per subscription (created a second apart);
- distinct: every event about its own subscription (what the checks cost
  when nothing needs protecting).

Each mode is a `celery -A config worker` (prefork, 2 processes, the no-op
handler of bench/webhooks.py), timed from when it is ready, started with
the mode's settings
(bench/settings.py reads them from the environment):

- none: the defaults;
- skip: SKIP_SUPERSEDED = True (every handler skips superseded events);
- ordering: ORDERING = "object" (ORDERING_MAX_WAIT 300 s);
- both: the two together.

Modes alternate within each round (the order flips every round). For each
trial: events/s from the worker's start until every event is `succeeded`,
CPU ms per event of the pool processes and of Postgres (/proc), and, from
the attempt log, how many attempts ran the handler for an event older than
one already applied for its subscription (stale writes), how many skipped it
as superseded, and how many times an event waited for its turn. Printed,
and written to docs/benchmarks.md between the bench:ordering markers.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.run import DOC, Worker, cpu_seconds, cpu_used, django_bench, log, machine
from tests.stack import child_pids, wait_until

MARK_START = "<!-- bench:ordering:start -->"
MARK_END = "<!-- bench:ordering:end -->"
MODES: dict[str, dict[str, str]] = {
    "none": {},
    "skip": {"BENCH_SKIP_SUPERSEDED": "1"},
    "ordering": {"BENCH_ORDERING": "object"},
    "both": {"BENCH_SKIP_SUPERSEDED": "1", "BENCH_ORDERING": "object"},
}
WORKLOADS = {"contended": 10, "distinct": 1}  # events per subscription
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ordering", description=__doc__)
    parser.add_argument("--events", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/")
    # `make bench` passes BENCH_ARGS to bench.run and here alike.
    args, _ = parser.parse_known_args(argv)
    events = args.events or (1000 if args.quick else 3000)
    rounds = args.rounds or (1 if args.quick else 2)
    results: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    with django_bench("bench-ordering") as bench:
        from config.celery_app import app as our_app
        from webhook_ingest.models import WebhookEvent
        from webhook_ingest.parsing import parse_event
        from webhook_worker.enqueue import enqueue_or_mark

        our_app.set_current()
        parsed = parse_event(bench.bodies.template)
        trials = 0
        for r in range(rounds):
            for workload, per_object in WORKLOADS.items():
                for mode in MODES if r % 2 == 0 else list(MODES)[::-1]:
                    bench.quiesce()
                    trials += 1
                    tag = f"O{trials:03d}x"
                    ids = []
                    for n in range(events):
                        event_id = f"evt_{tag}{n:012d}"
                        subscription = f"sub_{tag}{n // per_object:08d}"
                        created = T0 + timedelta(seconds=n % per_object)
                        row = replace(parsed, id=event_id, object_id=subscription, created=created)
                        WebhookEvent.objects.record(row, bench.bodies.template, "default")
                        ids.append(event_id)
                    random.Random(trials).shuffle(ids)
                    for event_id in ids:
                        enqueue_or_mark(event_id, parsed.type)
                    env = {**bench.env, **MODES[mode]}
                    worker = Worker(mode, "config", "celery", env, bench.logs, args.concurrency)
                    bench.launch(worker)
                    pool = worker.children()
                    assert bench.pg.process is not None
                    pg = child_pids(bench.pg.process.pid)
                    before = {pid: cpu_seconds(pid) for pid in [*pool, *pg]}
                    started = time.monotonic()
                    wait_until(lambda t=tag: bench.count(t)[1] >= events, 1800)
                    seconds = time.monotonic() - started
                    trial = {
                        "events_per_s": events / seconds,
                        "pool_ms": 1000 * cpu_used(before, worker.children()) / events,
                        "postgres_ms": 1000 * cpu_used(before, pg) / events,
                        **attempt_figures(bench, tag),
                    }
                    bench.halt(worker)
                    results[(workload, mode)].append(trial)
                    log(f"  {workload:<9} {mode:<9} " + describe(trial))
        text = render(results, events, rounds, args.concurrency)
    print("\n" + text)
    if not args.no_doc:
        write_doc(text)
        log(f"wrote the ordering section of {DOC.name}")
    return 0


def attempt_figures(bench: Any, tag: str) -> dict[str, float]:
    """Stale writes, superseded skips and waits of one trial, from the attempt log."""
    low = f"evt_{tag}"
    high = low[:-1] + chr(ord(low[-1]) + 1)
    rows = bench.db.execute(
        "SELECT e.object_id, e.created, a.outcome, a.trigger, a.finished_at "
        "FROM webhook_worker_webhookattempt a JOIN webhook_ingest_webhookevent e "
        "ON e.id = a.event_id WHERE e.id >= %s AND e.id < %s ORDER BY a.finished_at",
        [low, high],
    ).fetchall()
    newest: dict[str, datetime] = {}
    stale = skipped = waited = 0
    for object_id, created, outcome, trigger, _ in rows:
        if trigger == "order":
            waited += 1
        if outcome == "superseded":
            skipped += 1
        elif outcome == "succeeded":
            if object_id in newest and created < newest[object_id]:
                stale += 1
            newest[object_id] = max(created, newest.get(object_id, created))
    return {"stale": stale, "skipped": skipped, "waited": waited}


def describe(trial: dict[str, float]) -> str:
    return (
        f"{trial['events_per_s']:6.0f} events/s; CPU ms/event pool {trial['pool_ms']:.2f} "
        f"postgres {trial['postgres_ms']:.2f}; stale writes {trial['stale']:.0f}, "
        f"skipped {trial['skipped']:.0f}, waits {trial['waited']:.0f}"
    )


def render(
    results: dict[tuple[str, str], list[dict[str, float]]], events: int, rounds: int, procs: int
) -> str:
    lines = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}: {events} events a "
        f"trial, {rounds} round(s), worker prefork concurrency {procs}, medians.",
        "",
        "| workload | mode | events/s | vs none | pool CPU ms/event | Postgres CPU ms/event "
        "| stale writes | skipped as superseded | waits for a turn |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload in WORKLOADS:
        base = med(results[(workload, "none")], "events_per_s")
        for mode in MODES:
            trials = results[(workload, mode)]
            rate = med(trials, "events_per_s")
            lines.append(
                f"| {workload} | {mode} | {rate:.0f} | {rate / base:.2f} | "
                f"{med(trials, 'pool_ms'):.2f} | {med(trials, 'postgres_ms'):.2f} | "
                f"{med(trials, 'stale'):.0f} | {med(trials, 'skipped'):.0f} | "
                f"{med(trials, 'waited'):.0f} |"
            )
    return "\n".join(lines)


def med(trials: list[dict[str, float]], key: str) -> float:
    return statistics.median(t[key] for t in trials) if trials else float("nan")


def write_doc(text: str) -> None:
    doc = DOC.read_text()
    if MARK_START not in doc:
        raise SystemExit(f"{DOC} has no {MARK_START} marker")
    head, rest = doc.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    DOC.write_text(f"{head}{MARK_START}\n{text}\n{MARK_END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
