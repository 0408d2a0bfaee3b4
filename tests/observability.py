"""Sentry, OpenTelemetry and the signals, recorded to files by the processes tests start.

tests/settings.py and the test app's ready() call these when
WEBHOOKS_TEST_OBSERVE names a directory (tests/test_observability.py). The
set-up is the one the README documents: `sentry_sdk.init()` in settings (its
Django and Celery integrations enable themselves), OpenTelemetry's Django and
Celery instrumentations in every process (web and worker). Only where the
data goes differs: envelopes and spans are appended to files, since the
worker and the web server are other processes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sentry_sdk
from django.db import connection
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from webhook_ingest import signals as ingest_signals
from webhook_worker import signals as worker_signals

logger = logging.getLogger(__name__)

# A delivery of this type makes the web process report an error to Sentry
# while it handles the request: what Sentry's Django integration attaches.
REPORTED_IN_VIEW = "customer.deleted"

SENTRY_FILE = "sentry.jsonl"
SPANS_FILE = "spans.jsonl"
SIGNALS_FILE = "signals.jsonl"


def append(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, in one write (O_APPEND): whole lines from any number of processes."""
    line = (json.dumps(record, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line]
    except FileNotFoundError:
        return []


class FileTransport(Transport):
    """Keeps every envelope item Sentry would send, as a JSON line."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.path = Path(os.environ["WEBHOOKS_TEST_OBSERVE"]) / SENTRY_FILE

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            append(self.path, {"type": item.type, "payload": item.payload.json})


class FileSpanExporter(SpanExporter):
    """Appends each finished span as a JSON line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            append(self.path, json.loads(span.to_json(indent=None)))
        return SpanExportResult.SUCCESS


def init_sentry() -> None:
    """What a project's settings.py does (with its DSN), plus where the events go."""
    sentry_sdk.init(dsn="https://public@sentry.invalid/1", transport=FileTransport)


def init_tracing(directory: Path) -> None:
    """What a project's wsgi.py and celery.py do, with an exporter writing to a file."""
    provider = TracerProvider(resource=Resource.create({"service.name": "webhooks-tests"}))
    provider.add_span_processor(SimpleSpanProcessor(FileSpanExporter(directory / SPANS_FILE)))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()
    CeleryInstrumentor().instrument()


def record_signals(directory: Path) -> None:
    """Append each signal this library sends, with its arguments, to SIGNALS_FILE."""
    path = directory / SIGNALS_FILE
    signals = {
        "delivery_accepted": ingest_signals.delivery_accepted,
        "delivery_rejected": ingest_signals.delivery_rejected,
        "attempt_started": worker_signals.attempt_started,
        "attempt_finished": worker_signals.attempt_finished,
        "event_dead_lettered": worker_signals.event_dead_lettered,
        "event_retried": worker_signals.event_retried,
    }
    for name, signal in signals.items():

        def receiver(sender: Any, name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            record: dict[str, Any] = {"signal": name, "in_atomic_block": connection.in_atomic_block}
            for key, value in kwargs.items():
                if key == "event":
                    record["event_id"] = value.pk
                    record["event_status"] = value.status
                elif isinstance(value, BaseException):
                    record[key] = type(value).__name__
                else:
                    record[key] = value
            append(path, record)

        signal.connect(receiver, weak=False, dispatch_uid=f"tests.observability.{name}")
    ingest_signals.delivery_accepted.connect(
        report_in_view, weak=False, dispatch_uid="tests.observability.report"
    )


def report_in_view(sender: Any, event_id: str, event_type: str, **kwargs: Any) -> None:
    if event_type == REPORTED_IN_VIEW:
        logger.error("reported during the delivery of %s", event_id)
