"""The ingest floor: a framework-free WSGI app doing only what correctness requires.

Verify the signature with `stripe`, `INSERT ... ON CONFLICT DO NOTHING` the raw
event with psycopg (autocommit: the statement is its own commit), push the id
to Redis, answer 200. It writes the same row into the same table as the
project (same columns, same indexes), so a comparison measures everything
around that row, not the schema. The Redis push is a Celery protocol-2
message for `floor.process` (bench/floor_celery.py), so the same app feeds the
end-to-end floor.

    gunicorn bench.floor_wsgi:application   # DATABASE_URL, CELERY_BROKER_URL,
                                            # STRIPE_WEBHOOK_SECRET
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis
import stripe

SECRET = os.environ["STRIPE_WEBHOOK_SECRET"].split(",")[0]
QUEUE = os.environ.get("FLOOR_QUEUE", "floor")
INSERT = (
    "INSERT INTO webhook_ingest_webhookevent (id, type, livemode, api_version, account, "
    "created, object_id, endpoint, body, status, attempts, received_at, due_at, scheduled, "
    "last_error, style, source, snapshot_event, waiting_for) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, 'default', %s, 'pending', 0, now(), now(), false, '', "
    "'snapshot', 'delivery', '', '') "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)

# One connection per thread, as Django keeps them (gunicorn's gthread workers).
_local = threading.local()
_redis: redis.Redis | None = None


def _conn() -> psycopg.Connection[Any]:
    db: psycopg.Connection[Any] | None = getattr(_local, "db", None)
    if db is None or db.closed:
        db = _local.db = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    return db


def _broker() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    return _redis


def celery_message(task: str, args: list[Any], queue: str) -> bytes:
    """A Celery protocol-2 message as kombu's Redis transport stores it."""
    task_id = str(uuid.uuid4())
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None}])
    return json.dumps(
        {
            "body": base64.b64encode(body.encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": task,
                "id": task_id,
                "root_id": task_id,
                "parent_id": None,
                "group": None,
                "retries": 0,
                "eta": None,
                "expires": None,
                "timelimit": [None, None],
                "ignore_result": True,
            },  # fmt: skip
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": task_id,
            },
        }
    ).encode()


def _reply(start_response: Callable[..., Any], status: str, payload: bytes) -> Iterable[bytes]:
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["REQUEST_METHOD"] != "POST":
        return _reply(start_response, "405 Method Not Allowed", b'{"error": "method"}')
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length).decode("utf-8")
    try:
        stripe.WebhookSignature.verify_header(
            body, environ.get("HTTP_STRIPE_SIGNATURE", ""), SECRET, tolerance=300
        )
    except stripe.SignatureVerificationError:
        return _reply(start_response, "400 Bad Request", b'{"error": "signature"}')
    event = json.loads(body)
    data_object = event["data"]["object"]
    row = (
        _conn()
        .execute(
            INSERT,
            (
                event["id"],
                event["type"],
                event["livemode"],
                event.get("api_version"),
                event.get("account"),
                datetime.fromtimestamp(event["created"], tz=UTC),
                data_object.get("id") or "",
                body,
            ),
        )
        .fetchone()
    )
    if row is not None:
        _broker().lpush(QUEUE, celery_message("floor.process", [event["id"]], QUEUE))
    return _reply(start_response, "200 OK", b'{"received": true}')
