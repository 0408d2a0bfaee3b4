"""Worker alone: stored events drained by ours and by the floor, CPU split by process.

    python -m bench.drain                  # 3,000 events, 2 alternated rounds
    python -m bench.drain --events 4000 --rounds 4 --floor-with-django

Starts its own embedded Postgres and Redis, stores the events and publishes
one message per event before the worker starts, then times the drain until
every event is `succeeded` and reads the CPU of the worker's main process,
its pool processes and Postgres from /proc. No ingest runs meanwhile, so the
figures are the worker's alone. `--floor-with-django` adds the floor's worker
started with DJANGO_SETTINGS_MODULE set, as bench.run used to start it
(Celery then installs its Django fixup in the floor's worker).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from bench.run import Worker, cpu_seconds, cpu_used, django_bench, log, vm_hwm_kib
from tests.stack import child_pids, wait_until


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--floor-with-django", action="store_true")
    args = parser.parse_args(argv)
    with django_bench("bench-drain") as bench:
        from bench.floor_celery import process as floor_process
        from config.celery_app import app as our_app
        from webhook_ingest.models import WebhookEvent
        from webhook_ingest.parsing import parse_event
        from webhook_worker.enqueue import enqueue_or_mark

        # Importing the floor's app made it the current one; ours publishes
        # through shared tasks, which follow the current app.
        our_app.set_current()
        body = bench.bodies.template
        parsed = parse_event(body)
        names = ["ours", "floor"] + (["floor-django"] if args.floor_with_django else [])
        results: dict[str, list[str]] = {name: [] for name in names}
        trials = 0
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                bench.quiesce()
                trials += 1
                tag = f"D{trials:03d}x"  # no tag is a prefix of another: Bench.count's range
                ids = [f"evt_{tag}{n:012d}" for n in range(args.events)]
                for event_id in ids:
                    WebhookEvent.objects.record(replace(parsed, id=event_id), body, "default")
                for event_id in ids:
                    if name == "ours":
                        enqueue_or_mark(event_id, parsed.type)
                    else:
                        floor_process.delay(event_id)
                if name == "ours":
                    app, queue, env = "config", "celery", bench.env
                else:
                    app, queue = "bench.floor_celery", "floor"
                    env = bench.env if name == "floor-django" else bench.floor_env
                worker = Worker(name, app, queue, env, bench.logs, args.concurrency)
                bench.launch(worker)
                pool = worker.children()
                assert bench.pg.process is not None
                before = {pid: cpu_seconds(pid) for pid in [worker.pid, *pool]}
                before.update({pid: cpu_seconds(pid) for pid in child_pids(bench.pg.process.pid)})
                started = time.monotonic()
                wait_until(lambda t=tag: bench.count(t)[1] >= args.events, 600)
                seconds = time.monotonic() - started
                per_event = {
                    "main": cpu_used(before, [worker.pid]),
                    "pool": cpu_used(before, worker.children()),
                    "postgres": cpu_used(before, child_pids(bench.pg.process.pid)),
                }
                rss = max(vm_hwm_kib(pid) for pid in worker.children()) // 1024
                bench.halt(worker)
                line = f"{args.events / seconds:5.0f} events/s; CPU ms/event " + " ".join(
                    f"{k} {1000 * v / args.events:.2f}" for k, v in per_event.items()
                )
                line += f"; pool process {rss} MiB"
                results[name].append(line)
                log(f"  {name:<12} {line}")
        print()
        for name, lines in results.items():
            for line in lines:
                print(f"  {name:<12} {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
