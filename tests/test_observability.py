"""Sentry, OpenTelemetry, signals and logs, seen from real web and worker processes.

The processes are set up as the README's "Observability" section says
(tests/observability.py): the real sentry-sdk with a transport that keeps
envelopes, the real OpenTelemetry SDK with an exporter that keeps spans, and
receivers that record every signal, each to a file this test reads.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from django.utils import timezone

from webhook_ingest.models import WebhookEvent
from webhook_worker.stripe_events import encode_event

from . import stack
from .constants import API_KEY, SECRET
from .faults import deliver, make_lane
from .helpers import make_event, wait_for_status, wait_until
from .observability import REPORTED_IN_VIEW, SENTRY_FILE, SIGNALS_FILE, SPANS_FILE, read

pytestmark = pytest.mark.django_db(transaction=True)

HANDLER = "tests.testapp.webhooks.record_every_event"
# In every event's data: must not reach Sentry, a span or a log line.
BODY_MARKER = "jenny.rosen.private@example.com"


@dataclass
class Observed:
    directory: Path
    web: stack.Gunicorn
    worker: stack.Process
    env: dict[str, str]

    def sentry_events(self) -> list[dict[str, Any]]:
        items = read(self.directory / SENTRY_FILE)
        return [item["payload"] for item in items if item["type"] == "event"]

    def spans(self) -> list[dict[str, Any]]:
        return read(self.directory / SPANS_FILE)

    def signals(self, event_id: str) -> list[dict[str, Any]]:
        return [s for s in read(self.directory / SIGNALS_FILE) if s.get("event_id") == event_id]

    def deliver(self, event: dict[str, Any]) -> None:
        assert deliver(f"{self.web.url}/webhooks/stripe/", event) == 200


@pytest.fixture(scope="module")
def observed(
    stack_env: dict[str, str], log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    """A web server and a worker with Sentry and OpenTelemetry, on a queue of their own."""
    directory = tmp_path_factory.mktemp("observed")
    env = {
        **stack_env,
        "WEBHOOKS_TEST_OBSERVE": str(directory),
        "WEBHOOKS_TEST_QUEUE": f"{stack_env['WEBHOOKS_TEST_QUEUE']}-observed",
    }
    worker = stack.celery_worker(env, log_dir, concurrency=2, name="observed")
    # Threads, so deliveries arriving together are published in one batch.
    web = stack.gunicorn(env, log_dir, workers=1, extra=["--worker-class=gthread", "--threads=4"])
    yield Observed(directory, web, worker, env)
    web.stop()
    worker.stop()


def event_with_private_data(behavior: str) -> dict[str, Any]:
    event = make_event("customer.created", behavior=behavior)
    event["data"]["object"]["email"] = BODY_MARKER
    return event


def attempt_spans(observed: Observed, event_id: str) -> list[dict[str, Any]]:
    spans = [
        s
        for s in observed.spans()
        if s["name"] == "webhook.attempt" and s["attributes"].get("webhook.event_id") == event_id
    ]
    return sorted(spans, key=lambda s: s["attributes"]["webhook.attempt"])


def ancestors(spans: list[dict[str, Any]], span: dict[str, Any]) -> list[str]:
    """Names of the span's parents, nearest first, as far as the recorded spans go."""
    by_id = {s["context"]["span_id"]: s for s in spans}
    names = []
    while span.get("parent_id") in by_id:
        span = by_id[span["parent_id"]]
        names.append(span["name"])
    return names


def test_a_failing_then_succeeding_event_is_one_trace_and_no_sentry_issue(observed):
    event = event_with_private_data("fail_first")
    event_id = event["id"]

    observed.deliver(event)
    wait_for_status(event_id, "succeeded")
    # A span is exported when it ends: a parent after its child.
    wait_until(
        lambda: (
            [len(ancestors(observed.spans(), s)) for s in attempt_spans(observed, event_id)]
            == [3, 5]
        ),
        message="two attempt spans, down from the request",
    )

    # OpenTelemetry: both attempts in the delivery's trace, each a span with
    # the event's id, type, attempt, trigger and outcome.
    first, second = attempt_spans(observed, event_id)
    assert [s["attributes"] for s in (first, second)] == [
        {
            "webhook.event_id": event_id,
            "webhook.event_type": "customer.created",
            "webhook.attempt": 1,
            "webhook.trigger": "delivery",
            "webhook.handler": HANDLER,
            "webhook.outcome": "retry",
        },
        {
            "webhook.event_id": event_id,
            "webhook.event_type": "customer.created",
            "webhook.attempt": 2,
            "webhook.trigger": "retry",
            "webhook.outcome": "succeeded",
        },
    ]
    assert first["status"]["status_code"] == "ERROR"
    assert [e["name"] for e in first["events"]] == ["exception"]
    assert first["context"]["trace_id"] == second["context"]["trace_id"]
    spans = observed.spans()
    request_span = ancestors(spans, first)[-1]
    assert ancestors(spans, first) == [
        "run/webhook_worker.process_event",
        "apply_async/webhook_worker.process_event",
        request_span,
    ]
    assert request_span.startswith("POST ") and "webhooks/stripe" in request_span
    assert ancestors(spans, second)[:2] == [
        "run/webhook_worker.process_event",
        "apply_async/webhook_worker.process_event",  # the retry, published by attempt 1
    ]
    assert ancestors(spans, second)[-1] == request_span

    # Sentry: a retried attempt is a breadcrumb, not an issue.
    assert [e for e in observed.sentry_events() if event_id in str(e)] == []

    # Signals: each once, with the documented arguments, the state committed.
    assert [s for s in observed.signals(event_id) if s["signal"] != "delivery_accepted"] == [
        {
            "signal": "attempt_started",
            "in_atomic_block": False,
            "event_id": event_id,
            "event_status": "processing",
            "attempt": 1,
            "trigger": "delivery",
        },
        {
            "signal": "attempt_finished",
            "in_atomic_block": False,
            "event_id": event_id,
            "event_status": "retrying",
            "attempt": 1,
            "trigger": "delivery",
            "outcome": "retry",
            "exception": "RuntimeError",
        },
        {
            "signal": "attempt_started",
            "in_atomic_block": False,
            "event_id": event_id,
            "event_status": "processing",
            "attempt": 2,
            "trigger": "retry",
        },
        {
            "signal": "attempt_finished",
            "in_atomic_block": False,
            "event_id": event_id,
            "event_status": "succeeded",
            "attempt": 2,
            "trigger": "retry",
            "outcome": "succeeded",
            "exception": None,
        },
    ]
    [accepted] = [s for s in observed.signals(event_id) if s["signal"] == "delivery_accepted"]
    assert accepted == {
        "signal": "delivery_accepted",
        "in_atomic_block": False,
        "event_id": event_id,
        "event_type": "customer.created",
        "endpoint": "default",
        "duplicate": False,
    }


def test_a_dead_lettered_event_is_one_error_grouped_by_handler_and_exception(observed):
    first, second = event_with_private_data("always_fail"), event_with_private_data("always_fail")
    permanent = event_with_private_data("permanent")
    for event in (first, second, permanent):
        observed.deliver(event)
    for event in (first, second, permanent):
        wait_for_status(event["id"], "failed")

    def errors(event_id: str) -> list[dict[str, Any]]:
        return [
            e for e in observed.sentry_events() if e["tags"].get("webhook.event_id") == event_id
        ]

    wait_until(lambda: all(errors(e["id"]) for e in (first, second, permanent)), message="errors")
    # One Sentry event per dead-lettered event (the logging and Celery
    # integrations see the same exception once), none for its retried attempts.
    [error] = errors(first["id"])
    [other] = errors(second["id"])
    [permanent_error] = errors(permanent["id"])
    assert error["level"] == "error"
    assert error["tags"] == {
        **error["tags"],
        "webhook.event_id": first["id"],
        "webhook.event_type": "customer.created",
        "webhook.attempt": "4",
        "webhook.trigger": "retry",
        "webhook.handler": HANDLER,
    }
    # One issue per handler and exception type, whatever the event and attempt.
    assert (
        error["fingerprint"] == other["fingerprint"] == ["webhook-handler", HANDLER, "ValueError"]
    )
    assert permanent_error["fingerprint"] == [
        "webhook-handler",
        HANDLER,
        "webhook_worker.webhooks.PermanentFailure",
    ]
    [exception] = error["exception"]["values"]
    assert (exception["type"], exception["value"]) == ("ValueError", "this handler always fails")
    assert exception["stacktrace"]["frames"][-1]["function"] == "record_every_event"
    assert error["logger"] == "webhook_worker.attempts"
    assert error["extra"] == {
        **error["extra"],
        "webhook_event_id": first["id"],
        "webhook_event_type": "customer.created",
        "webhook_attempt": 4,
        "webhook_outcome": "failed",
        "webhook_handler": HANDLER,
    }

    # Signals: the last attempt's outcome, then the dead-letter, once.
    wait_until(
        lambda: any(s["signal"] == "event_dead_lettered" for s in observed.signals(first["id"])),
        message="event_dead_lettered",
    )
    signals = [s for s in observed.signals(first["id"]) if s["signal"] != "attempt_started"]
    assert [(s["signal"], s.get("attempt"), s.get("outcome")) for s in signals] == [
        ("delivery_accepted", None, None),
        ("attempt_finished", 1, "retry"),
        ("attempt_finished", 2, "retry"),
        ("attempt_finished", 3, "retry"),
        ("attempt_finished", 4, "failed"),
        ("event_dead_lettered", 4, None),
    ]
    assert signals[-1] == {
        "signal": "event_dead_lettered",
        "in_atomic_block": False,
        "event_id": first["id"],
        "event_status": "failed",
        "attempt": 4,
        "exception": "ValueError",
    }
    attempt_span = attempt_spans(observed, first["id"])[-1]  # ended before the signals
    assert attempt_span["attributes"]["webhook.attempt"] == 4
    assert attempt_span["attributes"]["webhook.outcome"] == "failed"
    # Once its task has ended (its span too), Sentry's Celery integration has
    # seen the exception the task raised: deduplicated, not a second report.
    wait_until(
        lambda: (
            ancestors(observed.spans(), attempt_span)[:1] == ["run/webhook_worker.process_event"]
        ),
        message="the task's span",
    )
    untagged = [e for e in observed.sentry_events() if "webhook.event_id" not in e.get("tags", {})]
    assert untagged == []

    # A person retries it: announced once, then one manual attempt.
    result = stack.manage(observed.env, "webhooks_retry", first["id"])
    assert result.returncode == 0, result.stderr
    wait_until(
        lambda: (
            len([s for s in observed.signals(first["id"]) if s["signal"] == "attempt_finished"])
            == 5
        ),
        message="the manual attempt",
    )
    retried = [s for s in observed.signals(first["id"]) if s["signal"] == "event_retried"]
    assert retried == [
        {
            "signal": "event_retried",
            "in_atomic_block": False,
            "event_id": first["id"],
            "event_type": "customer.created",
            "previous_status": "failed",
            "source": "command",
            "user": None,
        }
    ]
    assert attempt_spans(observed, first["id"])[-1]["attributes"]["webhook.trigger"] == "manual"


def test_a_retry_the_sweeper_publishes_links_back_to_the_delivery_trace(observed, log_dir):
    """A retry longer than MAX_BROKER_DELAY waits in the database; the sweeper
    publishes it inside a `webhook.requeue` span linked to the delivery's trace,
    and the retried attempt is in the sweeper's trace."""
    lane = make_lane(
        observed.env,
        log_dir,
        WEBHOOKS_TEST_OVERRIDES=json.dumps(
            {"RETRY_SCHEDULE": [2], "RETRY_JITTER": 0, "MAX_BROKER_DELAY": 1}
        ),
    )
    try:
        web, _ = lane.web(workers=1, threads=2), lane.worker(concurrency=1)
        event = event_with_private_data("fail_first")
        event_id = event["id"]
        assert deliver(f"{web.url}/webhooks/stripe/", event) == 200

        waiting = wait_until(
            lambda: WebhookEvent.objects.filter(
                pk=event_id, status="retrying", scheduled=True
            ).first(),
            message="the retry to wait in the database",
        )
        wait_until(lambda: timezone.now() >= waiting.due_at, message="the retry to be due")
        swept = stack.manage(lane.env, "webhooks_requeue")
        assert swept.returncode == 0, swept.stderr
        assert swept.stdout.startswith("Published 1 due retry;"), swept.stdout
        wait_for_status(event_id, "succeeded")
        wait_until(
            lambda: (
                [len(ancestors(observed.spans(), s)) for s in attempt_spans(observed, event_id)]
                == [3, 3]
            ),
            message="two attempt spans, each down from its root",
        )
    finally:
        lane.stop()

    spans = observed.spans()
    first, second = attempt_spans(observed, event_id)
    assert ancestors(spans, first)[-1].startswith("POST ")  # the delivery's trace
    assert ancestors(spans, second) == [
        "run/webhook_worker.process_event",
        "apply_async/webhook_worker.process_event",
        "webhook.requeue",
    ]
    [requeue] = [
        s
        for s in spans
        if s["name"] == "webhook.requeue" and s["attributes"].get("webhook.event_id") == event_id
    ]
    assert requeue["attributes"] == {
        "webhook.event_id": event_id,
        "webhook.event_type": "customer.created",
        "webhook.trigger": "retry",
    }
    delivery_trace = first["context"]["trace_id"]
    assert second["context"]["trace_id"] == requeue["context"]["trace_id"] != delivery_trace
    [link] = requeue["links"]
    assert link["context"]["trace_id"] == delivery_trace
    # What the link came from: the first attempt's trace context, on the event.
    stored = WebhookEvent.objects.get(pk=event_id).traceparent
    assert stored.split("-")[1] == delivery_trace.removeprefix("0x")


def test_events_published_together_each_continue_their_own_request_trace(observed):
    events = [event_with_private_data("") for _ in range(6)]
    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        list(pool.map(observed.deliver, events))
    for event in events:
        wait_for_status(event["id"], "succeeded")
    wait_until(
        lambda: all(
            len(ancestors(observed.spans(), span)) == 3
            for e in events
            for span in attempt_spans(observed, e["id"]) or [{}]
        ),
        message="attempt spans, down from their requests",
    )

    spans = observed.spans()
    traces = []
    for event in events:
        [attempt] = attempt_spans(observed, event["id"])
        trace_id = attempt["context"]["trace_id"]
        servers = [
            s
            for s in spans
            if s["context"]["trace_id"] == trace_id and s["kind"] == "SpanKind.SERVER"
        ]
        assert len(servers) == 1, servers  # the delivery's request, and no other
        traces.append(trace_id)
    assert len(set(traces)) == len(events)


def test_a_rejected_delivery_is_signalled_and_nothing_private_is_captured(observed):
    # An error reported while the web process handles a delivery: Sentry's
    # Django integration attaches the request, but the view read the body
    # from the stream itself, so there is no body to attach.
    reported = event_with_private_data("")
    reported["type"] = REPORTED_IN_VIEW
    observed.deliver(reported)
    in_view = wait_until(
        lambda: [e for e in observed.sentry_events() if reported["id"] in str(e.get("logentry"))],
        message="the error reported in the view",
    )
    assert in_view[0]["request"]["url"].endswith("/webhooks/stripe/")
    assert "data" not in in_view[0]["request"]

    body = encode_event(event_with_private_data(""))
    response = requests.post(
        f"{observed.web.url}/webhooks/stripe/",
        data=body.encode(),
        headers={
            "Stripe-Signature": f"t=1,v1={uuid.uuid4().hex}",
            "Content-Type": "application/json",
        },
        timeout=30,
    )
    assert response.status_code == 400
    wait_until(
        lambda: [
            s for s in read(observed.directory / SIGNALS_FILE) if s["signal"] == "delivery_rejected"
        ],
        message="delivery_rejected",
    )
    [rejected] = [
        s for s in read(observed.directory / SIGNALS_FILE) if s["signal"] == "delivery_rejected"
    ]
    assert rejected == {
        "signal": "delivery_rejected",
        "in_atomic_block": False,
        "endpoint": "default",
        "reason": "invalid_signature",
        "status_code": 400,
    }

    # Everything captured by this module's processes: Sentry envelopes, spans
    # and signal records, and the worker's log.
    captured = "\n".join(
        (observed.directory / name).read_text() for name in (SENTRY_FILE, SPANS_FILE)
    )
    assert "webhook.attempt" in captured and '"level": "error"' in captured
    for private in (BODY_MARKER, SECRET, API_KEY, "tests-only-not-a-secret", body[:40]):
        assert private not in captured
        assert private not in observed.worker.log()
        assert private not in observed.web.log()
