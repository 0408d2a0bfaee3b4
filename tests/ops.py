"""Helpers for the operations tests: events stored in a given state, a private broker."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis as redis_client
from django.utils import timezone

from devstack.services import EmbeddedRedis
from webhook_ingest.models import WebhookEvent
from webhook_ingest.parsing import parse_event
from webhook_worker.models import WebhookAttempt
from webhook_worker.stripe_events import encode_event

from .helpers import make_event


def store(
    event_type: str = "customer.created",
    status: str = "succeeded",
    *,
    attempts: int | None = None,
    age: timedelta = timedelta(0),
    behavior: str | None = None,
    endpoint: str = "default",
    **kwargs: Any,
) -> WebhookEvent:
    """A realistic event stored as ingest stores it, then put in `status`, `age` old."""
    body = encode_event(make_event(event_type, behavior=behavior, **kwargs))
    parsed = parse_event(body)
    WebhookEvent.objects.record(parsed, body, endpoint)
    received = timezone.now() - age
    if attempts is None:
        attempts = 0 if status == "pending" else 1
    WebhookEvent.objects.filter(pk=parsed.id).update(
        status=status,
        attempts=attempts,
        received_at=received,
        due_at=received,
        processed_at=received if status == "succeeded" else None,
        last_error="RuntimeError: boom" if status in ("failed", "retrying") else "",
    )
    return WebhookEvent.objects.get(pk=parsed.id)


def add_attempt(event: WebhookEvent, number: int, outcome: str, **kwargs: Any) -> WebhookAttempt:
    started: datetime = kwargs.pop("started_at", timezone.now())
    return WebhookAttempt.objects.create(
        event=event,
        number=number,
        trigger=kwargs.pop("trigger", "delivery" if number == 1 else "retry"),
        outcome=outcome,
        started_at=started,
        finished_at=None if outcome == "running" else started + timedelta(milliseconds=12),
        duration_ms=None if outcome == "running" else 12.0,
        **kwargs,
    )


class PrivateBroker:
    """An embedded Redis of the test's own, and a queue nobody else consumes."""

    def __init__(self, data_dir: Path) -> None:
        self.redis = EmbeddedRedis(data_dir)
        self.queue = f"ops-{uuid.uuid4().hex[:8]}"

    def start(self) -> PrivateBroker:
        self.redis.start()
        return self

    def env(self, base: dict[str, str], **extra: str) -> dict[str, str]:
        return {
            **base,
            "CELERY_BROKER_URL": self.redis.url,
            "WEBHOOKS_TEST_QUEUE": self.queue,
            **extra,
        }

    def client(self) -> redis_client.Redis:
        return redis_client.Redis.from_url(self.redis.url)

    def queued_event_ids(self) -> list[str]:
        """Event ids of the messages waiting in the queue."""
        ids = []
        for raw in self.client().lrange(self.queue, 0, -1):
            message = json.loads(raw)
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            ids.append(args[0])
        return ids

    def stop(self) -> None:
        self.redis.stop()
