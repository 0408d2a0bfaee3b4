"""`make bench-djstripe`: dj-stripe's models kept in sync by its own view, and by the bridge.

    python -m devstack exec -- python -m bench.djstripe [--events 400] [--senders 8]

Run in .venv-djstripe-<version> (the make target does). The same N events
(half `customer.subscription.updated`, half `invoice.paid`, each about
objects of its own) are sent, `--senders` at a time, twice:

1. to dj-stripe's view (`/stripe/webhook/<uuid>/`): it verifies, syncs from
   Stripe's API and runs the receivers inside the request, so every event is
   synced when its response arrives;
2. to ours (`/webhooks/stripe/`) with `webhook_worker.contrib.djstripe`: the
   response comes once the event is stored, and a Celery worker runs the same
   `Event.process`; done when every event has succeeded.

Same gunicorn (2 sync workers) for both, a worker with 2 processes for ours,
one embedded Postgres and Redis, the suite's stand-in for Stripe's API
(tests/stripe_standin.py, in this process) answering dj-stripe's calls.
Between the phases dj-stripe's tables are emptied. Prints events/s from the
first request until every event is synced, and the response times Stripe
would see; writes bench/results/djstripe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

import django
import requests

os.environ["DJANGO_SETTINGS_MODULE"] = "bench.djstripe_settings"
django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from djstripe.models import Event  # noqa: E402

from tests.constants import SECRET  # noqa: E402
from tests.djstripe_support import (  # noqa: E402
    ACCOUNT,
    create_webhook_endpoint,
    empty_djstripe_tables,
    template,
)
from tests.stack import celery_worker, gunicorn, wait_until  # noqa: E402
from tests.stripe_standin import StandIn, StandInServer  # noqa: E402
from webhook_ingest.models import WebhookEvent  # noqa: E402
from webhook_worker.stripe_events import build_event, encode_event, sign_body  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "djstripe.json"
TYPES = {"customer.subscription.updated": "subscriptions", "invoice.paid": "invoices"}


def objects_for(number: int) -> dict[str, dict[str, Any]]:
    """The customer, subscription and invoice of event `number`, by API path.

    Stripe's example objects with their ids made unique, references included.
    """
    originals = {
        "customers": template("customer.updated"),
        "subscriptions": template("customer.subscription.updated"),
        "invoices": template("invoice.paid"),
    }
    renames = {}
    for obj in originals.values():
        renames[obj["id"]] = f"{obj['id']}x{number}"
    sub, inv = originals["subscriptions"], originals["invoices"]
    for item in sub["items"]["data"] + inv["lines"]["data"]:
        renames[item["id"]] = f"{item['id']}x{number}"
    served = {}
    for collection, obj in originals.items():
        text = json.dumps(obj)
        for old, new in renames.items():
            text = text.replace(f'"{old}"', f'"{new}"')
        renamed = json.loads(text)
        served[f"/v1/{collection}/{renamed['id']}"] = renamed
    return served


def prepare(standin: StandIn, count: int) -> list[dict[str, Any]]:
    """Serve every object the events name; return the events."""
    product = template("product.updated")
    standin.objects["/v1/account"] = ACCOUNT
    standin.objects[f"/v1/products/{product['id']}"] = product
    standin.objects[f"/v1/prices/{template('price.updated')['id']}"] = template("price.updated")
    standin.objects[f"/v1/products/{product['id']}/features"] = {
        "object": "list",
        "data": [],
        "has_more": False,
        "url": f"/v1/products/{product['id']}/features",
    }
    events = []
    for number in range(count):
        served = objects_for(number)
        standin.objects.update(served)
        event_type = list(TYPES)[number % 2]
        obj = next(o for path, o in served.items() if path.startswith(f"/v1/{TYPES[event_type]}/"))
        events.append(build_event(event_type, data_object=obj))
    return events


def send_all(url: str, events: list[dict[str, Any]], senders: int) -> tuple[float, list[float]]:
    """POST every event, `senders` at a time; (start time, response times in ms)."""
    bodies = [encode_event(event) for event in events]
    sessions: dict[int, requests.Session] = {}

    def send(body: str) -> float:
        session = sessions.setdefault(threading.get_ident(), requests.Session())
        started = time.perf_counter()
        response = session.post(
            url,
            data=body.encode(),
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": sign_body(body, SECRET),
            },
            timeout=120,
        )
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.text[:300]}")
        return (time.perf_counter() - started) * 1000

    start = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        latencies = list(pool.map(send, bodies))
    return start, latencies


def summary(name: str, count: int, seconds: float, latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "name": name,
        "events": count,
        "seconds": round(seconds, 2),
        "events_per_second": round(count / seconds, 1),
        "response_ms_median": round(statistics.median(ordered), 1),
        "response_ms_p95": round(ordered[int(len(ordered) * 0.95) - 1], 1),
        "response_ms_max": round(ordered[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--senders", type=int, default=8)
    args = parser.parse_args()

    print("bench.djstripe: migrating", flush=True)
    call_command("migrate", verbosity=0)
    server = StandInServer(settings.STRIPE_STANDIN_PORT).start()
    events = prepare(server.standin, args.events)
    ids = [event["id"] for event in events]
    empty_djstripe_tables()
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.djstripe_settings",
        WEBHOOKS_TEST_QUEUE=settings.CELERY_TASK_DEFAULT_QUEUE,
        PYTHONPATH=str(ROOT),
        CELERY_SKIP_CHECKS="1",
    )
    logs = Path(tempfile.mkdtemp(prefix="bench-djstripe-"))
    web = gunicorn(env, logs, workers=2)
    worker = celery_worker(env, logs, concurrency=2, name="bench")
    results = []
    try:
        endpoint = create_webhook_endpoint()
        print(f"bench.djstripe: {args.events} events to dj-stripe's view", flush=True)
        start, latencies = send_all(
            f"{web.url}/stripe/webhook/{endpoint.djstripe_uuid}/", events, args.senders
        )
        elapsed = time.perf_counter() - start
        assert Event.objects.filter(id__in=ids).count() == args.events
        results.append(summary("dj-stripe's view (synchronous)", args.events, elapsed, latencies))

        empty_djstripe_tables()
        print("bench.djstripe: the same events to ours, with the bridge", flush=True)
        start, latencies = send_all(f"{web.url}/webhooks/stripe/", events, args.senders)
        wait_until(
            lambda: (
                WebhookEvent.objects.filter(pk__in=ids, status="succeeded").count() == args.events
            ),
            timeout=600,
            interval=0.05,
            message="every event to succeed",
        )
        elapsed = time.perf_counter() - start
        assert Event.objects.filter(id__in=ids).count() == args.events
        results.append(summary("ours + bridge (queued)", args.events, elapsed, latencies))
    finally:
        worker.stop()
        web.stop()
        server.stop()

    report = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "versions": {name: version(name) for name in ("dj-stripe", "stripe", "django", "celery")},
        "senders": args.senders,
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["versions"]))
    header = f"{'':34} {'events/s':>9} {'seconds':>8} {'resp p50':>9} {'p95':>8} {'max':>8}"
    print(header)
    for r in results:
        print(
            f"{r['name']:34} {r['events_per_second']:9.1f} {r['seconds']:8.1f} "
            f"{r['response_ms_median']:8.1f}ms {r['response_ms_p95']:6.1f}ms "
            f"{r['response_ms_max']:6.1f}ms"
        )
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
