"""The worker floor: a bare Celery task that locks, updates and commits the row.

Same broker, same at-least-once settings as the project (acks late, reject on
worker lost, prefetch 1, JSON), no Django: one psycopg connection per pool
process, one transaction per event.

    celery -A bench.floor_celery worker -Q floor   # DATABASE_URL, CELERY_BROKER_URL
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from celery import Celery

app = Celery("floor", broker=os.environ["CELERY_BROKER_URL"])
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=os.environ.get("FLOOR_QUEUE", "floor"),
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 7200},
)

_db: psycopg.Connection[Any] | None = None


def _conn() -> psycopg.Connection[Any]:
    global _db
    if _db is None or _db.closed:
        _db = psycopg.connect(os.environ["DATABASE_URL"])
    return _db


@app.task(name="floor.process")
def process(event_id: str) -> None:
    conn = _conn()
    with conn.transaction():
        row = conn.execute(
            "SELECT status FROM webhook_ingest_webhookevent WHERE id = %s FOR UPDATE",
            (event_id,),
        ).fetchone()
        if row is None or row[0] == "succeeded":
            return
        conn.execute(
            "UPDATE webhook_ingest_webhookevent SET status = 'succeeded', "
            "attempts = attempts + 1, processed_at = now() WHERE id = %s",
            (event_id,),
        )
