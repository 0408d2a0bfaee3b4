"""What an attempt tells the tools a team already runs: log fields, Sentry, OpenTelemetry.

Neither sentry-sdk nor OpenTelemetry is required. When installed, each is
used through its public API, and does nothing until the project sets it up:

- Sentry: each attempt runs in a scope of its own tagged `webhook.event_id`,
  `webhook.event_type`, `webhook.attempt` and `webhook.trigger`, so whatever
  is reported during it carries them (our failure logs, a handler's own
  reports). A failed attempt's fingerprint is the handler and the exception
  class: one issue per handler and exception type, whatever the attempt.
- OpenTelemetry: each attempt is a span `webhook.attempt` with the same
  attributes plus `webhook.outcome`, inside the Celery instrumentation's
  task span, so inside the delivery's trace (the publisher runs each publish
  in the context of the request that handed the event over). The first
  attempt's claim stores that trace context on the event (`traceparent`);
  when the sweeper publishes the event again (a retry that waited in the
  database, a stale event), it does so inside a span `webhook.requeue` that
  links to it: the next attempt is in the sweeper's trace, linked back to
  the delivery's.

Log lines about an event carry `log_fields()` as `extra`, for JSON formatters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from webhook_ingest.models import WebhookEvent

try:
    import sentry_sdk
except ImportError:  # optional: tags and grouping when the project uses Sentry
    sentry_sdk = None  # type: ignore[assignment]
try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # optional: the attempt span when the project uses OpenTelemetry
    trace = None  # type: ignore[assignment]
    TraceContextTextMapPropagator = None  # type: ignore[assignment,misc]

SPAN_NAME = "webhook.attempt"
REQUEUE_SPAN_NAME = "webhook.requeue"
# A proxy until the project sets its tracer provider up (the global provider
# is a ProxyTracerProvider until then), then that provider's.
tracer = trace.get_tracer(__name__) if trace is not None else None
# W3C trace context whatever propagators the project configured: the stored
# value is a `traceparent` header.
w3c: Any = TraceContextTextMapPropagator() if TraceContextTextMapPropagator is not None else None
TRACEPARENT_MAX_LENGTH = 128  # WebhookEvent.traceparent


def tracing() -> bool:
    """True when OpenTelemetry is installed and the project has set a tracer provider up."""
    return tracer is not None and not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider
    )


def current_traceparent() -> str:
    """The current span's trace context as a W3C `traceparent`; "" when not tracing."""
    # The current span first: without tracing there is none, and looking it
    # up costs an attempt about half of what `tracing()` does.
    if trace is None or not trace.get_current_span().get_span_context().is_valid or not tracing():
        return ""
    carrier: dict[str, str] = {}
    w3c.inject(carrier)
    return carrier.get("traceparent", "")[:TRACEPARENT_MAX_LENGTH]


@contextmanager
def requeue_span(event_id: str, event_type: str, trigger: str, traceparent: str) -> Iterator[None]:
    """Publish an event again inside a span linked to its stored trace context.

    A span only when tracing; a link only when `traceparent` is a valid one
    (it is "" for an event no attempt has claimed while tracing).
    """
    if not tracing():
        yield
        return
    links = []
    if traceparent:
        stored = trace.get_current_span(w3c.extract({"traceparent": traceparent}))
        if stored.get_span_context().is_valid:
            links.append(trace.Link(stored.get_span_context()))
    attributes = {
        "webhook.event_id": event_id,
        "webhook.event_type": event_type,
        "webhook.trigger": trigger,
    }
    with tracer.start_as_current_span(REQUEUE_SPAN_NAME, links=links, attributes=attributes):
        yield


def log_fields(event: WebhookEvent | None, attempt: int | None, **more: Any) -> dict[str, Any]:
    """The structured fields of a log line about `event` (`extra=`), with `more` prefixed."""
    fields: dict[str, Any] = {
        "webhook_event_id": getattr(event, "pk", None),
        "webhook_event_type": getattr(event, "type", None),
        "webhook_attempt": attempt,
    }
    fields.update({f"webhook_{key}": value for key, value in more.items()})
    return fields


class AttemptReport:
    """The attempt's Sentry scope and span, told how the attempt ended."""

    def __init__(self, scope: Any, span: Any) -> None:
        self.scope = scope
        self.span = span

    def failing(self, handler: str, error_class: str) -> None:
        """Group what is reported about this failure by handler and exception class."""
        if self.scope is not None:
            self.scope.set_tag("webhook.handler", handler)
            self.scope.fingerprint = ["webhook-handler", handler, error_class]
        if self.span is not None:
            self.span.set_attribute("webhook.handler", handler)

    def finished(self, outcome: str, exc: BaseException | None) -> None:
        if self.span is None:
            return
        self.span.set_attribute("webhook.outcome", outcome)
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_status(trace.StatusCode.ERROR, type(exc).__qualname__)


@contextmanager
def attempt_report(event: WebhookEvent, attempt: int, trigger: str) -> Iterator[AttemptReport]:
    """Run the attempt inside its Sentry scope and its span.

    The scope only when sentry-sdk is installed and initialised, the span only
    when OpenTelemetry is installed (a no-op span until a tracer provider is set).
    """
    tags: dict[str, str | int] = {
        "webhook.event_id": event.pk,
        "webhook.event_type": event.type,
        "webhook.attempt": attempt,
        "webhook.trigger": trigger,
    }
    # Neither costs an attempt anything until the project sets it up.
    sentry = sentry_sdk is not None and sentry_sdk.get_client().is_active()
    scoped: Any = sentry_sdk.new_scope() if sentry else nullcontext()
    spanned: Any = (
        tracer.start_as_current_span(
            SPAN_NAME, attributes=tags, record_exception=False, set_status_on_exception=False
        )
        if tracing()
        else nullcontext()
    )
    with scoped as scope, spanned as span:
        if scope is not None:
            scope.set_tags({key: str(value) for key, value in tags.items()})
        yield AttemptReport(scope, span)
