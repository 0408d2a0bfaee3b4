"""Retries of a failing burst: what a worker holds while they wait, and how late they run.

    python -m bench.retry_backlog                   # 10,000 events (~5 min)
    python -m bench.retry_backlog --events 1000     # quick check (~2.5 min)
    python -m bench.retry_backlog --label before    # bench/results/retry-backlog-before.json

Starts its own embedded Postgres and Redis (as bench.run does), a real
`celery -A config worker` (prefork, concurrency 2) and `celery -A config
beat`, both with bench/retry_settings.py: the reference settings
(bench/settings.py) plus a handler (bench/retry_app/webhooks.py) that fails
the first two attempts of every event and succeeds on the third, with
RETRY_SCHEDULE [10, 120] s, RETRY_JITTER 0 (each retry's due time is exact),
REQUEUE_AFTER 600 s (the sweeper never finds a stale event during the run)
and beat's sweeper every 10 s (WEBHOOKS_SWEEP_INTERVAL).

It stores N events at once, publishes one message for each as the library
does, and then, until every event is `succeeded`, samples every 0.5 s: the
VmRSS of the worker's main process and of each pool process, the broker's
backlog (LLEN of the Celery queue; HLEN of kombu's `unacked` hash and ZCARD
of `unacked_index`, where delivered-but-unacked messages, and so the
prefetched ETA retries, are kept) and Redis' used_memory. From the attempt
log it reports each retry's lateness: its start minus its due time, which is
the previous attempt's finished_at plus the schedule's delay.

What it relies on in the library (update these if they are renamed):
- `publish()` below, the one call that publishes an event:
  `webhook_worker.enqueue.enqueue_or_mark(event_id, event_type)`;
- `WebhookEvent.objects.record(parsed, body, endpoint)` and
  `webhook_ingest.parsing.parse_event` to store the events;
- `webhook_worker.stripe_events.build_event` / `encode_event` for the bodies;
- `STRIPE_WEBHOOKS` keys RETRY_SCHEDULE, RETRY_JITTER, REQUEUE_AFTER (set
  through BENCH_* variables by bench/retry_settings.py; `--set KEY=JSON` sets
  any other key) and `event.attempts` (the attempt number) in the handler;
- the beat entry for the task `webhook_worker.requeue_stale`
  and its interval variable WEBHOOKS_SWEEP_INTERVAL (config/celery_app.py);
- the tables webhook_ingest_webhookevent (status, attempts) and
  webhook_worker_webhookattempt (event_id, number, trigger, outcome,
  started_at, finished_at); the Celery queue `celery`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench.run import (
    ATTEMPTS_TABLE,
    EVENTS_TABLE,
    RESULTS,
    ROOT,
    Bench,
    Worker,
    cpu_seconds,
    cpu_used,
    log,
    machine,
    vm_hwm_kib,
)
from tests.stack import Process, celery_beat, child_pids

EVENT_TYPE = "customer.subscription.updated"
ID_PREFIX = "evt_RB"  # every event of the run: ids in [evt_RB, evt_RC)
QUEUE = "celery"
# kombu's Redis transport: delivered, not yet acknowledged messages
# (`unacked_key` and `unacked_index_key`, their defaults).
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
SAMPLE_INTERVAL = 0.5
LIBRARY = ("webhook_worker", "webhook_ingest", "config")
DEFAULTS = {
    "events": 10_000,
    "schedule": "10,120",
    "jitter": "0",
    "requeue_after": "600",
    "sweep_interval": "10",
    "fail_attempts": 2,
    "concurrency": 2,
}


def publish(event_id: str, event_type: str) -> None:
    """Publish one "process this event" message, the way the library does.

    The one call into the library's publishing: update here when it moves.
    """
    from webhook_worker.enqueue import enqueue_or_mark

    if not enqueue_or_mark(event_id, event_type):
        raise RuntimeError(f"could not publish {event_id}: the broker refused it")


# --- measurements ------------------------------------------------------------


def vm_rss_kib(pid: int) -> int:
    """Resident set size of a process now, in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine spent busy since boot (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal ...: all but idle and iowait
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """count, min, p50, p90, p99 and max (nearest rank) of `values`, and how many exceed 1/10/60."""
    out: dict[str, float | int | None] = {"count": len(values)}
    ordered = sorted(values)

    def rank(q: float) -> float | None:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else None

    out.update(
        {
            "min": rank(0),
            "p50": rank(0.50),
            "p90": rank(0.90),
            "p99": rank(0.99),
            "max": ordered[-1] if ordered else None,
        }
    )
    for bound in (1, 10, 60):
        out[f"over_{bound}s"] = sum(1 for v in ordered if v > bound)
    return out


class Sampler(threading.Thread):
    """Every SAMPLE_INTERVAL: worker RSS, broker backlog, Redis memory and event statuses."""

    def __init__(self, worker: Worker, redis_url: str, db_url: str, events: int, t0: float):
        super().__init__(name="sampler", daemon=True)
        self.worker = worker
        self.broker = redis.Redis.from_url(redis_url)
        self.db = psycopg.connect(db_url, autocommit=True)
        self.events = events
        self.t0 = t0
        self.samples: list[dict[str, Any]] = []
        self.pool_peak: dict[int, int] = {}
        self.pool_last: dict[int, int] = {}
        self.main_peak = self.main_last = 0
        self.done = threading.Event()  # every event succeeded
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            tick = time.monotonic()
            while not self.stop.is_set():
                self.sample()
                tick += SAMPLE_INTERVAL
                self.stop.wait(max(0.0, tick - time.monotonic()))
        except BaseException as exc:  # reported by the main thread
            self.error = exc
            self.done.set()

    def sample(self) -> None:
        t = time.monotonic() - self.t0
        main = vm_rss_kib(self.worker.pid)
        pool = {pid: vm_rss_kib(pid) for pid in child_pids(self.worker.pid)}
        pool = {pid: kib for pid, kib in pool.items() if kib}
        self.main_last, self.main_peak = main, max(self.main_peak, main)
        self.pool_last = pool
        pool_kib = sum(pool.values())
        for pid, kib in pool.items():
            self.pool_peak[pid] = max(self.pool_peak.get(pid, 0), kib)
        pipe = self.broker.pipeline(transaction=False)
        pipe.llen(QUEUE).hlen(UNACKED).zcard(UNACKED_INDEX).info("memory")
        llen, hlen, zcard, memory = pipe.execute()
        statuses = dict(
            self.db.execute(f"SELECT status, count(*) FROM {EVENTS_TABLE} GROUP BY status")
        )
        self.samples.append(
            {
                "t": round(t, 2),
                "rss_kib": {"main": main, "pool": pool_kib, "total": main + pool_kib},
                "llen": llen,
                "unacked": hlen,
                "unacked_index": zcard,
                "redis_used_memory": memory["used_memory"],
                "statuses": statuses,
                "loadavg_1m": os.getloadavg()[0],
            }
        )
        if statuses.get("succeeded", 0) >= self.events:
            self.done.set()

    def summary(self) -> dict[str, Any]:
        s = self.samples

        def peak(key: str) -> dict[str, Any]:
            best = max(s, key=lambda x: x[key])
            return {"value": best[key], "t": best["t"]}

        total = max(s, key=lambda x: x["rss_kib"]["total"])
        backlog = max(s, key=lambda x: x["llen"] + x["unacked"])
        retrying = max(s, key=lambda x: x["statuses"].get("retrying", 0))
        return {
            "samples": len(s),
            "rss_kib": {
                "main": {"peak": self.main_peak, "final": self.main_last},
                "pool": {
                    str(pid): {"peak": peak_kib, "final": self.pool_last.get(pid, 0)}
                    for pid, peak_kib in self.pool_peak.items()
                },
                "sum": {
                    "peak": total["rss_kib"]["total"],
                    "peak_t": total["t"],
                    "final": s[-1]["rss_kib"]["total"],
                },
            },
            "broker": {
                "llen": peak("llen"),
                "unacked": peak("unacked"),
                "unacked_index": peak("unacked_index"),
                "llen_plus_unacked": {
                    "value": backlog["llen"] + backlog["unacked"],
                    "t": backlog["t"],
                },
                "final": {k: s[-1][k] for k in ("llen", "unacked", "unacked_index")},
            },
            "redis_used_memory": peak("redis_used_memory"),
            "retrying_peak": {"value": retrying["statuses"].get("retrying", 0), "t": retrying["t"]},
        }


# --- the attempt log and the process logs -------------------------------------


def analyse_attempts(
    db: psycopg.Connection[Any], schedule: list[float], t0_wall: float, published: dict[str, float]
) -> dict[str, Any]:
    rows = db.execute(
        f"SELECT event_id, number, trigger, outcome, started_at, finished_at FROM {ATTEMPTS_TABLE}"
    ).fetchall()
    by_event: dict[str, dict[int, tuple[str, str, datetime, datetime | None]]] = defaultdict(dict)
    duplicates = 0
    for event_id, number, trigger, outcome, started, finished in rows:
        if number in by_event[event_id]:
            duplicates += 1
        by_event[event_id][number] = (trigger, outcome, started, finished)
    per_number: dict[int, dict[str, Any]] = {}
    lateness: dict[int, list[float]] = defaultdict(list)
    starts: dict[int, list[float]] = defaultdict(list)
    triggers: dict[int, Counter[str]] = defaultdict(Counter)
    outcomes: dict[int, Counter[str]] = defaultdict(Counter)
    for event_id, attempts in by_event.items():
        for number, (trigger, outcome, started, _) in attempts.items():
            triggers[number][trigger] += 1
            outcomes[number][outcome] += 1
            starts[number].append(started.timestamp() - t0_wall)
            if number == 1:
                if event_id in published:
                    lateness[1].append(started.timestamp() - published[event_id])
                continue
            previous = attempts.get(number - 1)
            if previous is None or previous[3] is None or number - 2 >= len(schedule):
                continue
            due = previous[3].timestamp() + schedule[number - 2]
            lateness[number].append(started.timestamp() - due)
    for number in sorted(starts):
        per_number[number] = {
            "triggers": dict(triggers[number]),
            "outcomes": dict(outcomes[number]),
            "first_start_s": min(starts[number]),
            "last_start_s": max(starts[number]),
            # Attempt 1: from its publish; later ones: from their due time.
            "lateness_s": percentiles(lateness[number]),
            "early": sum(1 for v in lateness[number] if v < 0),
        }
    counts = Counter(len(a) for a in by_event.values())
    events = db.execute(
        f"SELECT status, attempts, count(*) FROM {EVENTS_TABLE} GROUP BY status, attempts"
    ).fetchall()
    return {
        "attempt_rows": len(rows),
        "duplicate_attempt_numbers": duplicates,
        "attempts_per_event": {str(k): v for k, v in sorted(counts.items())},
        "events_by_status_attempts": [
            {"status": s, "attempts": a, "count": c} for s, a, c in events
        ],
        "per_attempt": {str(k): v for k, v in per_number.items()},
    }


LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): (\w+)/([^\]]+)\] (.*)$")
SWEEP_TASK = "webhook_worker.requeue_stale"


def _log_time(stamp: str) -> float:
    # Celery's log timestamps are in local time, as time.time() is not.
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def analyse_logs(worker_log: str, beat_log: str, t0_wall: float) -> dict[str, Any]:
    """What the worker received and did, and how long beat's sweeps waited in the queue."""
    received: Counter[str] = Counter()
    results: Counter[str] = Counter()
    retries = discarded = 0
    levels: Counter[str] = Counter()
    sweep_received: list[float] = []
    sweep_results: list[int] = []
    for line in worker_log.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        stamp, level, _, message = match.groups()
        levels[level] += 1
        task = message.split("[", 1)[0].removeprefix("Task ")
        if message.startswith("Task ") and message.endswith("] received"):
            received[task] += 1
            if task == SWEEP_TASK:
                sweep_received.append(_log_time(stamp) - t0_wall)
        elif message.startswith("Task ") and " succeeded in " in message:
            value = message.rsplit(": ", 1)[-1].strip("'")
            if task == SWEEP_TASK:
                sweep_results.append(int(value) if value.isdigit() else -1)
            else:
                results[value] += 1
        elif message.startswith("Task ") and " retry: " in message:
            retries += 1
        elif message.startswith("Discarding revoked task"):
            discarded += 1
    sweeps_sent = [
        _log_time(m.group(1)) - t0_wall
        for m in map(LOG_LINE.match, beat_log.splitlines())
        if m and SWEEP_TASK in m.group(4) and "Sending due task" in m.group(4)
    ]
    # Beat's messages and the worker's receipts are both in queue order:
    # the n-th sweep received is the n-th sent.
    waits = [r - s for s, r in zip(sweeps_sent, sweep_received, strict=False)]
    return {
        "worker": {
            "received": dict(received),
            "process_event_results": dict(results),
            "retries_logged": retries,
            "discarded_revoked_or_expired": discarded,
            "log_lines_by_level": dict(levels),
        },
        "sweeper": {
            "sent_by_beat": len(sweeps_sent),
            "received_by_worker": len(sweep_received),
            "ran": len(sweep_results),
            "requeued_total": sum(v for v in sweep_results if v > 0),
            "queue_wait_s": percentiles(waits),
            "sent_at_s": [round(t, 1) for t in sweeps_sent],
            "received_at_s": [round(t, 1) for t in sweep_received],
        },
    }


# --- the run -------------------------------------------------------------------


def store_events(count: int) -> tuple[list[str], float]:
    """Insert `count` realistic events, as the view would have stored them."""
    from django.db import transaction

    from webhook_ingest.models import WebhookEvent
    from webhook_ingest.parsing import parse_event
    from webhook_worker.stripe_events import build_event, encode_event

    started = time.monotonic()
    ids = [f"{ID_PREFIX}{n:010d}" for n in range(count)]
    with transaction.atomic():
        for event_id in ids:
            body = encode_event(build_event(EVENT_TYPE, event_id=event_id))
            assert WebhookEvent.objects.record(parse_event(body), body, "default")
    return ids, time.monotonic() - started


def run(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    schedule = [float(s) for s in args.schedule.split(",") if s.strip()]
    bench.start_servers()  # migrates with bench.settings: the same tables
    env = dict(bench.env)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.retry_settings",
        BENCH_FAIL_ATTEMPTS=str(args.fail_attempts),
        BENCH_RETRY_SCHEDULE=args.schedule,
        BENCH_RETRY_JITTER=args.jitter,
        BENCH_REQUEUE_AFTER=args.requeue_after,
        WEBHOOKS_SWEEP_INTERVAL=args.sweep_interval,
    )
    if args.set:
        extra = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
        env["BENCH_STRIPE_WEBHOOKS"] = json.dumps(extra)
    bench.env = env
    os.environ.update(env)
    import django
    from django.core.management import call_command

    django.setup()
    import config.celery_app  # noqa: F401  # the app enqueue_event publishes with
    from webhook_ingest.conf import webhook_settings

    call_command("check", "--fail-level", "ERROR", verbosity=0)
    effective = {
        key: getattr(webhook_settings, key)
        for key in ("RETRY_SCHEDULE", "RETRY_JITTER", "REQUEUE_AFTER")
    }
    log(f"settings: {effective}, sweep every {args.sweep_interval} s")

    log(f"storing {args.events} events")
    ids, store_s = store_events(args.events)
    log(f"  stored in {store_s:.1f} s")
    bench.quiesce()

    worker = Worker("retry", "config", "celery", env, bench.logs, args.concurrency)
    bench.launch(worker)
    beat: Process = celery_beat(env, bench.logs)
    bench.started.append(beat)
    log(f"worker pid {worker.pid} (pool {worker.children()}), beat pid {beat.pid}")

    assert bench.pg.process is not None and bench.redis.process is not None
    cpu_before = {pid: cpu_seconds(pid) for pid in [worker.pid, *worker.children(), beat.pid]}
    cpu_before.update({pid: cpu_seconds(pid) for pid in child_pids(bench.pg.process.pid)})
    cpu_before[bench.redis.process.pid] = cpu_seconds(bench.redis.process.pid)
    busy_before, self_before = machine_busy_seconds(), self_cpu_seconds()
    t0 = time.monotonic()
    t0_wall = time.time()
    sampler = Sampler(worker, bench.redis.url, bench.pg.url("bench"), args.events, t0)
    sampler.start()
    published: dict[str, float] = {}
    for event_id in ids:
        published[event_id] = time.time()
        publish(event_id, EVENT_TYPE)
    publish_s = time.monotonic() - t0
    log(f"published {len(ids)} messages in {publish_s:.1f} s; waiting for every event to succeed")

    last_report = 0.0
    while not sampler.done.wait(1):
        elapsed = time.monotonic() - t0
        if elapsed - last_report >= 15 and sampler.samples:
            last_report = elapsed
            s = sampler.samples[-1]
            log(
                f"  t={s['t']:6.1f}s  {s['statuses']}  queue {s['llen']}  unacked {s['unacked']}  "
                f"worker RSS {s['rss_kib']['main'] // 1024} MiB main + "
                f"{s['rss_kib']['pool'] // 1024} MiB pool"
            )
        if not worker.alive:
            raise RuntimeError(f"the worker exited\n{worker.log_tail()}")
        if elapsed > args.timeout:
            break
    done_s = time.monotonic() - t0 if sampler.done.is_set() and sampler.error is None else None
    sampler.stop.set()
    sampler.join()
    if sampler.error is not None:
        raise sampler.error
    hwm = {"main": vm_hwm_kib(worker.pid), **{str(p): vm_hwm_kib(p) for p in worker.children()}}
    info = bench.broker.info("memory")
    groups = {
        "main": [worker.pid],
        "pool": worker.children(),
        "postgres": child_pids(bench.pg.process.pid),
        "redis": [bench.redis.process.pid],
        "beat": [beat.pid],
    }
    cpu = {name: cpu_used(cpu_before, pids) for name, pids in groups.items()}
    cpu["this_process"] = self_cpu_seconds() - self_before
    busy = machine_busy_seconds() - busy_before
    run_s = time.monotonic() - t0
    # Noise: what the rest of the machine (other work on it) used meanwhile.
    machine_cpu = {
        "run_s": run_s,
        "machine_busy_s": busy,
        "ours_s": sum(cpu.values()),
        "others_s": busy - sum(cpu.values()),
        "others_cores_avg": (busy - sum(cpu.values())) / run_s,
    }
    if done_s is None:
        log(f"NOT every event succeeded within {args.timeout:.0f} s")
    else:
        log(f"every event succeeded after {done_s:.1f} s")
    time.sleep(1)  # let the last log lines reach the files
    attempts = analyse_attempts(bench.db, schedule, t0_wall, published)
    logs = analyse_logs(worker.log(), beat.log(), t0_wall)
    return {
        "completed": done_s is not None,
        "seconds_to_all_succeeded": done_s,
        "store_s": store_s,
        "publish_s": publish_s,
        "effective_settings": {
            k: list(v) if isinstance(v, tuple) else v for k, v in effective.items()
        },
        "sampled": sampler.summary(),
        "vm_hwm_kib": hwm,
        "redis_used_memory_peak": info["used_memory_peak"],
        "cpu_s": cpu,
        "machine_cpu": machine_cpu,
        "attempts": attempts,
        "logs": logs,
        "timeline": sampler.samples,
    }


# --- report ----------------------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:7.1f}"


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:8.2f}"


def render(report: dict[str, Any]) -> str:
    meta, r = report["meta"], report["result"]
    s = r["sampled"]
    a = r["attempts"]
    out = [
        f"retry backlog `{meta['label']}` at {meta['commit']} on {meta['date']}: "
        f"{meta['events']} events, RETRY_SCHEDULE {meta['schedule']} s, jitter {meta['jitter']}, "
        f"handler fails attempts 1-{meta['fail_attempts']}, "
        f"REQUEUE_AFTER {meta['requeue_after']} s, "
        f"sweep every {meta['sweep_interval']} s, worker concurrency {meta['concurrency']}",
        "",
        (
            f"all succeeded after {r['seconds_to_all_succeeded']:.1f} s (from the first publish)"
            if r["completed"]
            else "NOT all events succeeded before the timeout"
        )
        + f"; stored in {r['store_s']:.1f} s, published in {r['publish_s']:.1f} s",
        f"attempts per event: {a['attempts_per_event']}  (events by status/attempts: "
        + ", ".join(
            f"{e['status']}/{e['attempts']}: {e['count']}" for e in a["events_by_status_attempts"]
        )
        + ")",
        "",
        "| attempt | triggers | outcomes | started, s after first publish | "
        "lateness p50 s | p90 s | p99 s | max s | min s | > 1 s | > 10 s | > 60 s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for number, row in a["per_attempt"].items():
        lat = row["lateness_s"]
        what = " (wait from publish)" if number == "1" else ""
        out.append(
            f"| {number}{what} | {row['triggers']} | {row['outcomes']} | "
            f"{row['first_start_s']:.1f} .. {row['last_start_s']:.1f} | {fmt_s(lat['p50'])} | "
            f"{fmt_s(lat['p90'])} | {fmt_s(lat['p99'])} | {fmt_s(lat['max'])} | "
            f"{fmt_s(lat['min'])} | {lat['over_1s']} | {lat['over_10s']} | {lat['over_60s']} |"
        )
    rss = s["rss_kib"]
    out += [
        "",
        "| worker RSS, MiB | sampled peak | final | VmHWM |",
        "|---|---:|---:|---:|",
        f"| main process | {mib(rss['main']['peak'])} | {mib(rss['main']['final'])} | "
        f"{mib(r['vm_hwm_kib']['main'])} |",
    ]
    for pid, row in rss["pool"].items():
        out.append(
            f"| pool process {pid} | {mib(row['peak'])} | {mib(row['final'])} | "
            f"{mib(r['vm_hwm_kib'].get(pid, 0))} |"
        )
    out.append(
        f"| sum (peak of the sum, at t={rss['sum']['peak_t']:.0f} s) | {mib(rss['sum']['peak'])} | "
        f"{mib(rss['sum']['final'])} | |"
    )
    b = s["broker"]
    out += [
        "",
        f"broker backlog peaks: queue LLEN {b['llen']['value']} (t={b['llen']['t']:.0f} s), "
        f"unacked HLEN {b['unacked']['value']} (t={b['unacked']['t']:.0f} s), "
        f"unacked_index ZCARD {b['unacked_index']['value']}, "
        f"LLEN+HLEN {b['llen_plus_unacked']['value']}; at the end {b['final']}",
        f"events `retrying` at once, peak: {s['retrying_peak']['value']} "
        f"(t={s['retrying_peak']['t']:.0f} s)",
        f"Redis used_memory: sampled peak {s['redis_used_memory']['value'] / 2**20:.1f} MiB, "
        f"INFO used_memory_peak {r['redis_used_memory_peak'] / 2**20:.1f} MiB",
        "CPU s during the run: " + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_s"].items()),
        f"other work on the machine meanwhile: {r['machine_cpu']['others_s']:.0f} CPU s "
        f"({r['machine_cpu']['others_cores_avg']:.2f} of {os.cpu_count()} cores on average; "
        f"1-min load average {min(x['loadavg_1m'] for x in r['timeline']):.1f} .. "
        f"{max(x['loadavg_1m'] for x in r['timeline']):.1f})",
    ]
    w, sw = r["logs"]["worker"], r["logs"]["sweeper"]
    wait = sw["queue_wait_s"]
    out += [
        f"worker log: received {w['received']}; process_event results "
        f"{w['process_event_results']}; retries {w['retries_logged']}; discarded (revoked or "
        f"expired) {w['discarded_revoked_or_expired']}; lines by level {w['log_lines_by_level']}",
        f"sweeper: beat sent {sw['sent_by_beat']}, worker received {sw['received_by_worker']}, "
        f"ran {sw['ran']}, re-enqueued {sw['requeued_total']} event(s); queue wait of a sweep "
        f"p50 {fmt_s(wait['p50']).strip()} s, max {fmt_s(wait['max']).strip()} s",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.retry_backlog",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=DEFAULTS["events"])
    parser.add_argument(
        "--label", default="latest", help="bench/results/retry-backlog-<label>.json"
    )
    parser.add_argument("--schedule", default=DEFAULTS["schedule"], help="RETRY_SCHEDULE, s")
    parser.add_argument("--jitter", default=DEFAULTS["jitter"], help="RETRY_JITTER")
    parser.add_argument(
        "--requeue-after", default=DEFAULTS["requeue_after"], help="REQUEUE_AFTER, s"
    )
    parser.add_argument(
        "--sweep-interval", default=DEFAULTS["sweep_interval"], help="WEBHOOKS_SWEEP_INTERVAL, s"
    )
    parser.add_argument("--fail-attempts", type=int, default=DEFAULTS["fail_attempts"])
    parser.add_argument("--concurrency", type=int, default=DEFAULTS["concurrency"])
    parser.add_argument("--timeout", type=float, default=1800, help="give up after this, s")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="another STRIPE_WEBHOOKS key for this run (repeatable)",
    )
    args = parser.parse_args(argv)

    work = ROOT / ".devstack" / f"retry-backlog-{os.getpid()}"
    bench = Bench(argparse.Namespace(), work)
    started = time.monotonic()
    try:
        result = run(args, bench)
    finally:
        log("stopping every process started")
        bench.stop_all()
        keep_logs = ROOT / ".devstack" / f"retry-backlog-logs-{args.label}"
        shutil.rmtree(keep_logs, ignore_errors=True)
        if bench.logs.exists():
            shutil.copytree(bench.logs, keep_logs)
            log(f"process logs kept in {keep_logs.relative_to(ROOT)}")
        shutil.rmtree(work, ignore_errors=True)

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()

    dirty = bool(git("status", "--porcelain", "--", *LIBRARY))
    report = {
        "meta": {
            "label": args.label,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else ""),
            # The last commit that changed the code measured (bench/ aside).
            "library_commit": git("log", "-1", "--format=%h", "--", *LIBRARY),
            "machine": machine(),
            "load_average_at_end": os.getloadavg(),
            "events": args.events,
            "schedule": args.schedule,
            "jitter": args.jitter,
            "requeue_after": args.requeue_after,
            "sweep_interval": args.sweep_interval,
            "fail_attempts": args.fail_attempts,
            "concurrency": args.concurrency,
            "extra_settings": args.set,
            "sample_interval_s": SAMPLE_INTERVAL,
            "wall_minutes": round((time.monotonic() - started) / 60, 1),
        },
        "result": result,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"retry-backlog-{args.label}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print("\n" + render(report) + "\n")
    log(f"wrote {path.relative_to(ROOT)}")
    return 0 if result["completed"] else 1


if __name__ == "__main__":
    sys.exit(main())
