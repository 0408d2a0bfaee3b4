"""The reference project's production settings, with the benchmark's handler.

Everything comes from config/settings.py (DEBUG off, CONN_MAX_AGE, Celery
settings); the only change is the set of handlers: the demo app's logging
handler is replaced by bench/webhooks.py. The BENCH_* variables below switch
one setting back at a time, to measure what it is worth.
"""

from __future__ import annotations

import os

from config.settings import *  # noqa: F403
from config.settings import DATABASES, INSTALLED_APPS, STRIPE_WEBHOOKS, prepared_statement_options

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "demo"] + ["bench"]

# Variants: one setting at a time, for `bench.run --variant/--e2e-variant NAME:VAR=VALUE`.
if os.environ.get("BENCH_CONN_HEALTH_CHECKS"):
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = os.environ["BENCH_CONN_HEALTH_CHECKS"] == "1"
if os.environ.get("BENCH_CONN_MAX_AGE"):
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ["BENCH_CONN_MAX_AGE"])
if os.environ.get("BENCH_TASK_SEND_SENT_EVENT"):
    CELERY_TASK_SEND_SENT_EVENT = os.environ["BENCH_TASK_SEND_SENT_EVENT"] == "1"
if os.environ.get("BENCH_WORKER_SEND_TASK_EVENTS"):
    CELERY_WORKER_SEND_TASK_EVENTS = os.environ["BENCH_WORKER_SEND_TASK_EVENTS"] == "1"
if os.environ.get("BENCH_ENQUEUE_IN_BACKGROUND"):  # 0: publish inside the request
    STRIPE_WEBHOOKS["ENQUEUE_IN_BACKGROUND"] = os.environ["BENCH_ENQUEUE_IN_BACKGROUND"] == "1"
# Out-of-order protection (bench.ordering): every handler skips superseded
# events; events about one object one at a time, in created order.
if os.environ.get("BENCH_SKIP_SUPERSEDED") == "1":
    STRIPE_WEBHOOKS["SKIP_SUPERSEDED"] = True
if os.environ.get("BENCH_ORDERING"):
    STRIPE_WEBHOOKS["ORDERING"] = os.environ["BENCH_ORDERING"]
if os.environ.get("BENCH_WEBHOOK_MIDDLEWARE") == "0":  # deliveries through every middleware
    MIDDLEWARE = [m for m in MIDDLEWARE if m != "webhook_ingest.middleware.WebhookMiddleware"]  # noqa: F405
# psycopg 3's binding and preparing, as DATABASE_URL's query string would set them.
for _option in ("server_side_binding", "prepare_threshold"):
    if os.environ.get(f"BENCH_{_option.upper()}"):
        DATABASES["default"]["OPTIONS"][_option] = os.environ[f"BENCH_{_option.upper()}"]
prepared_statement_options(DATABASES["default"]["OPTIONS"])
