"""Where an ingest request's CPU goes: ours and the floor, called in-process, no HTTP.

    python -m bench.profile                  # CPU per request and per component
    python -m bench.profile --pyinstrument   # plus a pyinstrument profile of ours

Starts its own embedded Postgres and Redis, then calls each WSGI app (and each
step of ours on its own) in batches, reporting the 25th percentile of the
per-batch CPU time (process_time): on a shared machine the low percentiles
are what the code costs, the high ones what the neighbours cost. Under load,
`py-spy record -p <gunicorn worker pid>` shows the same split with the server.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from bench.run import Bench, cpu_seconds, cpu_used, django_bench, wsgi_caller
from tests.stack import child_pids

BATCH = 100
BATCHES = 20


def empty_view(request: HttpRequest) -> JsonResponse:
    """Django's share of a request: read the body, answer what our view answers."""
    request.read()
    return JsonResponse({"received": True, "id": "evt_empty", "duplicate": False})


# This module is also the URLconf of the empty-view measurement.
urlpatterns = [
    path("webhooks/stripe/", csrf_exempt(transaction.non_atomic_requests(empty_view))),
]


def cpu_us(fn: Callable[[], object], batch: int = BATCH, batches: int = BATCHES) -> float:
    """CPU microseconds per call: 25th percentile over `batches` batches (plus one warm-up)."""
    for _ in range(batch):
        fn()
    samples = []
    for _ in range(batches):
        start = time.process_time()
        for _ in range(batch):
            fn()
        samples.append((time.process_time() - start) / batch)
    samples.sort()
    return 1e6 * samples[len(samples) // 4]


def client_backends(bench: Bench) -> list[int]:
    """The Postgres processes serving client connections (not the background workers)."""
    assert bench.pg.process is not None
    pids = []
    for pid in child_pids(bench.pg.process.pid):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"127.0.0.1" in title or b"[local]" in title:
            pids.append(pid)
    return pids


def postgres_cpu_us(bench: Bench, fn: Callable[[], object], calls: int = 2000) -> float:
    """CPU microseconds per call in the Postgres backends serving clients, read from /proc."""
    before = {pid: cpu_seconds(pid) for pid in client_backends(bench)}
    for _ in range(calls):
        fn()
    return 1e6 * cpu_used(before, client_backends(bench)) / calls


def signed_bodies(bench: Bench, count: int) -> list[tuple[str, bytes]]:
    _, prefix = bench.bodies.write(count)
    data = Path(f"{prefix}-0.dat").read_bytes()
    bench.bodies.remove(prefix)
    out, pos = [], 0
    while pos < len(data):
        newline = data.index(b"\n", pos)
        signature, length = data[pos:newline].split(b" ")
        end = newline + 1 + int(length)
        out.append((signature.decode(), data[newline + 1 : end]))
        pos = end
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--pyinstrument", action="store_true", help="profile ours as well")
    args = parser.parse_args(argv)
    with django_bench("bench-profile") as bench:
        from bench.floor_wsgi import application as floor_app
        from bench.floor_wsgi import celery_message
        from config.wsgi import application as our_app
        from webhook_ingest.conf import webhook_settings
        from webhook_ingest.models import WebhookEvent
        from webhook_ingest.parsing import parse_event
        from webhook_ingest.signals import event_ready
        from webhook_ingest.signature import verify_signature
        from webhook_worker.enqueue import enqueue_or_mark
        from webhook_worker.publisher import enqueue_accepted
        from webhook_worker.stripe_events import sign_body

        total = (BATCHES + 1) * BATCH
        rows: list[tuple[str, float]] = []
        rows.append(
            ("ours: whole request", cpu_us(wsgi_caller(our_app, signed_bodies(bench, total))))
        )
        rows.append(
            ("floor: whole request", cpu_us(wsgi_caller(floor_app, signed_bodies(bench, total))))
        )
        # The same request with the publish left out, and Django alone: an
        # empty view behind the same middleware, URL resolution and response.
        from django.test import override_settings

        event_ready.disconnect(sender=WebhookEvent, dispatch_uid="webhook_worker.enqueue")
        try:
            rows.append(
                (
                    "ours: whole request, no publish",
                    cpu_us(wsgi_caller(our_app, signed_bodies(bench, total))),
                )
            )
        finally:
            event_ready.connect(
                enqueue_accepted, sender=WebhookEvent, dispatch_uid="webhook_worker.enqueue"
            )
        with override_settings(ROOT_URLCONF="bench.profile"):
            rows.append(
                (
                    "Django: empty view, same middleware",
                    cpu_us(wsgi_caller(our_app, signed_bodies(bench, total))),
                )
            )
        body = bench.bodies.template
        header = sign_body(body, bench.secret)
        endpoint = webhook_settings.endpoint("default")
        assert endpoint is not None
        parsed = parse_event(body)
        ids = (f"evt_profile{n:012d}" for n in itertools.count())
        rows += [
            ("ours: verify_signature", cpu_us(lambda: verify_signature(body, header, endpoint))),
            ("ours: parse_event", cpu_us(lambda: parse_event(body))),
            (
                "ours: INSERT (WebhookEvent.objects.record)",
                cpu_us(
                    lambda: WebhookEvent.objects.record(
                        replace(parsed, id=next(ids)), body, "default"
                    )
                ),
            ),
            (
                "ours: publish (enqueue_or_mark)",
                cpu_us(lambda: enqueue_or_mark(parsed.id, parsed.type)),
            ),
        ]
        import redis

        broker = redis.Redis.from_url(bench.env["CELERY_BROKER_URL"])
        rows.append(
            (
                "floor: publish (LPUSH of a Celery message)",
                cpu_us(lambda: broker.lpush("profile", celery_message("x", [parsed.id], "x"))),
            )
        )
        # The worker's share: one attempt in a pool process, without Celery around it.
        from bench.floor_celery import process as floor_process
        from webhook_worker import dispatch

        def stored_ids(count: int) -> Iterable[str]:
            out = []
            for _ in range(count):
                event_id = next(ids)
                WebhookEvent.objects.record(replace(parsed, id=event_id), body, "default")
                out.append(event_id)
            return iter(out)

        ours_ids, floor_ids = stored_ids(total), stored_ids(total)
        rows += [
            (
                "ours: one attempt (dispatch.process)",
                cpu_us(lambda: dispatch.process(next(ours_ids), trigger="delivery")),
            ),
            (
                "floor: one attempt (lock, update, commit)",
                cpu_us(lambda: floor_process.run(next(floor_ids))),
            ),
        ]
        # Postgres' side of the same work (new event ids, same table).
        calls = 2000
        server_rows = [
            (
                "Postgres: ours, one request",
                postgres_cpu_us(bench, wsgi_caller(our_app, signed_bodies(bench, calls)), calls),
            ),
            (
                "Postgres: floor, one request",
                postgres_cpu_us(bench, wsgi_caller(floor_app, signed_bodies(bench, calls)), calls),
            ),
        ]
        ours_ids, floor_ids = stored_ids(calls), stored_ids(calls)
        server_rows += [
            (
                "Postgres: ours, one attempt",
                postgres_cpu_us(
                    bench, lambda: dispatch.process(next(ours_ids), trigger="delivery"), calls
                ),
            ),
            (
                "Postgres: floor, one attempt",
                postgres_cpu_us(bench, lambda: floor_process.run(next(floor_ids)), calls),
            ),
        ]
        print()
        for name, value in rows:
            print(f"  {name:<46} {value:7.0f} µs CPU")
        for name, value in server_rows:
            print(f"  {name:<46} {value:7.0f} µs CPU (server)")
        print()
        if args.pyinstrument:
            from pyinstrument import Profiler

            call = wsgi_caller(our_app, signed_bodies(bench, 2000))
            profiler = Profiler(interval=0.0002)
            profiler.start()
            for _ in range(2000):
                call()
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
