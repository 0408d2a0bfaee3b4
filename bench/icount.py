"""Instructions per call, counted by valgrind: a measure the machine's noise cannot move.

    python -m bench.icount                  # every scenario
    python -m bench.icount attempt request  # some of them

On this shared machine the same code's CPU time moves by a third from one
minute to the next; the instructions it executes do not (two runs of the same
scenario agree to 0.01 %). Each scenario runs in a fresh process under
`valgrind --tool=callgrind`, once with a few calls and once with many, and
the difference divided by the extra calls is what one call costs, start-up
left out. Only the calling process is counted: Postgres' and Redis' own work
is not, nor the kernel's. Starts its own embedded Postgres and Redis.

Scenarios: `request` (our WSGI app, called in-process with a signed
4.3 KB event, the publish left out), `request-floor` (bench/floor_wsgi.py,
its LPUSH included), `attempt` (`dispatch.process` on a stored event, no
Celery around it), `attempt-floor` (the floor task's body), `task` and
`task-floor` (the same inside Celery's tracer, as a pool process runs a task:
task signals, with Celery's Django fixup for ours, and the INFO log lines),
`publish-batch`
(one batch of 10 events through the publisher, per event), `apply-async`
(one `process_event.apply_async`, as the publisher sends each message).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run import EVENTS_TABLE, ROOT, Bench, log, wsgi_caller

SCENARIOS = (
    "request",
    "request-floor",
    "attempt",
    "attempt-floor",
    "task",
    "task-floor",
    "publish-batch",
    "apply-async",
)
# Calls in the short and the long run of a scenario.
FEW, MANY = 100, 600
BATCH = 10


# Scenarios that process stored events: each has events of its own.
PROCESSING = ("attempt", "attempt-floor", "task", "task-floor")


def stored_event(scenario: str, n: int) -> str:
    return f"evt_ic{PROCESSING.index(scenario)}x{n:012d}"


def calls(scenario: str, first: int, count: int, work: Path) -> Callable[[int], None]:
    """The call to count, for call numbers `first` to `first + count - 1` (in the child)."""
    import django

    django.setup()
    if scenario.startswith("request"):
        bodies = pickle.loads((work / "bodies.pickle").read_bytes())
        if scenario == "request-floor":
            from bench.floor_wsgi import application
        else:
            from config.wsgi import application
            from webhook_ingest.models import WebhookEvent
            from webhook_ingest.signals import event_ready

            event_ready.disconnect(sender=WebhookEvent, dispatch_uid="webhook_worker.enqueue")
        call = wsgi_caller(application, bodies[first : first + count])
        return lambda n: call()
    if scenario.startswith("task"):
        return traced_task(scenario)
    if scenario.startswith("attempt"):
        from bench.floor_celery import process as floor_process
        from config.celery_app import app
        from webhook_worker import dispatch

        app.set_current()
        if scenario == "attempt":
            return lambda n: dispatch.process(stored_event(scenario, n), trigger="delivery")
        return lambda n: floor_process.run(stored_event(scenario, n))
    import contextvars

    from webhook_worker import enqueue, publisher

    if scenario == "publish-batch":
        # Each event with the context it was handed over in, as enqueue() keeps it.
        return lambda n: publisher.BackgroundPublisher._publish_batch(
            [
                (
                    f"evt_icpub{n:08d}{k:04d}",
                    "customer.subscription.updated",
                    contextvars.copy_context(),
                )
                for k in range(BATCH)
            ]
        )
    return lambda n: enqueue.enqueue(f"evt_icaa{n:012d}", "customer.subscription.updated")


def traced_task(scenario: str) -> Callable[[int], None]:
    """The task as a prefork pool process runs it: Celery's tracer, signals and log lines."""
    import logging
    import uuid

    from celery.app.trace import build_tracer

    from bench.floor_celery import app as floor_app
    from bench.floor_celery import process as floor_process
    from config.celery_app import app

    # What `celery worker --loglevel=INFO` sets up: the tracer's lines, formatted.
    handler = logging.FileHandler(os.devnull)
    handler.setFormatter(
        logging.Formatter("[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
    )
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    if scenario == "task":
        from celery.fixups.django import DjangoWorkerFixup

        from webhook_worker.tasks import process_event

        app.set_current()
        DjangoWorkerFixup(app).install().on_worker_process_init()
        task: Any = app.tasks[process_event.name]
        kwargs = {"trigger": "delivery", "event_type": "customer.subscription.updated"}
    else:
        floor_app.set_current()
        task, kwargs = floor_app.tasks[floor_process.name], {}
    trace = build_tracer(task.name, task, app=task.app, hostname="icount@localhost")

    def run(n: int) -> None:
        task_id = str(uuid.uuid4())
        request = {"id": task_id, "hostname": "icount@localhost", "delivery_info": {}}
        trace(task_id, [stored_event(scenario, n)], kwargs, request)

    return run


def child(scenario: str, first: int, count: int, work: Path) -> None:
    call = calls(scenario, first, count, work)
    for n in range(first, first + count):
        call(n)


def prepare(bench: Bench, work: Path) -> None:
    """Stored events for the attempts, and signed bodies for the requests."""
    from dataclasses import replace

    from webhook_ingest.models import WebhookEvent
    from webhook_ingest.parsing import parse_event
    from webhook_worker.stripe_events import sign_body

    body = bench.bodies.template
    parsed = parse_event(body)
    for scenario in PROCESSING:
        for n in range(FEW + MANY):
            event_id = stored_event(scenario, n)
            WebhookEvent.objects.record(replace(parsed, id=event_id), body, "default")
    # Good for the endpoint's 300 s tolerance: the whole run takes less.
    now = int(time.time()) + 240
    bodies = []
    for n in range(FEW + MANY):
        signed = body.replace(bench.bodies.template_id, f"evt_icreq{n:012d}")
        bodies.append((sign_body(signed, bench.secret, timestamp=now), signed.encode()))
    (work / "bodies.pickle").write_bytes(pickle.dumps(bodies))


def instructions(bench: Bench, work: Path, scenario: str, first: int, count: int) -> int:
    # The floor's code never touches Django; the child sets it up all the same.
    env = dict(bench.env, PYTHONHASHSEED="0")
    argv = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        sys.executable, "-m", "bench.icount",
        "--child", scenario, str(first), str(count), str(work),
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    match = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or not match:
        raise RuntimeError(f"{scenario}: valgrind failed\n{done.stderr[-3000:]}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.icount", description=__doc__)
    parser.add_argument("scenarios", nargs="*", help=f"any of {', '.join(SCENARIOS)}")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        scenario, first, count, work = args.child
        child(scenario, int(first), int(count), Path(work))
        return 0
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    from bench.run import django_bench

    with django_bench("bench-icount") as bench:
        prepare(bench, bench.work)
        rows = []
        for scenario in args.scenarios or SCENARIOS:
            few = instructions(bench, bench.work, scenario, 0, FEW)
            many = instructions(bench, bench.work, scenario, FEW, MANY)
            per_call = (many - few) / (MANY - FEW)
            if scenario == "publish-batch":
                per_call /= BATCH
            rows.append((scenario, per_call))
            log(f"  {scenario:<14} {per_call:12,.0f} instructions per call")
            bench.broker.flushdb()
            # The request scenarios post the same bodies: each stores them anew.
            bench.db.execute(f"DELETE FROM {EVENTS_TABLE} WHERE id LIKE 'evt_icreq%'")
        print()
        for scenario, per_call in rows:
            print(f"  {scenario:<14} {per_call:12,.0f} instructions per call")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    sys.exit(main())
