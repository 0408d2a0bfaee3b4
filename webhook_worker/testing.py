"""Helpers for a project's own tests: deliver an event through the real view, run its handlers.

    from webhook_worker.testing import build_event, deliver, run_handlers

    event = deliver("invoice.paid")             # through the real view, then the handlers
    event = deliver(build_event("invoice.paid", metadata={"order": "42"}))
    event = run_handlers("customer.created")    # stored and handled, without the view
    event = deliver("v1.customer.updated", endpoint="thin")   # a thin event, to a thin endpoint

Both return the stored `WebhookEvent`, once its handlers have run in this
process, inside the test's transaction: they work in a plain Django
`TestCase` and in pytest-django tests, with no broker and no worker. A
handler's exception is raised (after the attempt is recorded) unless
`raise_errors=False`. The event builders of `webhook_worker.stripe_events`
are here too.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse

from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import WebhookEvent
from webhook_ingest.parsing import THIN_OBJECT, ParsedEvent, load_payload, parse_event
from webhook_ingest.thin import parse_thin_event

from . import dispatch
from .models import WebhookAttempt
from .stripe_events import build_event, build_thin_event, encode_event, sign_body

__all__ = [
    "build_event",
    "build_thin_event",
    "deliver",
    "encode_event",
    "run_handlers",
    "sign_body",
]


def _as_event(event: dict[str, Any] | str, endpoint: str) -> dict[str, Any]:
    """A dict as given; a type, built in the endpoint's style."""
    if not isinstance(event, str):
        return event
    config = webhook_settings.endpoint(endpoint)
    return build_thin_event(event) if config is not None and config.is_thin else build_event(event)


def _parse(body: str) -> ParsedEvent:
    payload = load_payload(body)
    return parse_thin_event(payload) if payload.get("object") == THIN_OBJECT else parse_event(body)


def _handle(event_id: str, raise_errors: bool) -> WebhookEvent:
    result = dispatch.process(event_id, trigger=WebhookAttempt.Trigger.DELIVERY, worker="tests")
    if raise_errors and isinstance(result.error, Exception):
        raise result.error
    return WebhookEvent.objects.get(pk=event_id)


def deliver(
    event: dict[str, Any] | str,
    *,
    endpoint: str = "default",
    client: Client | None = None,
    raise_errors: bool = True,
) -> WebhookEvent:
    """POST `event` (a dict, or a type for `build_event` / `build_thin_event` by the
    endpoint's style) to the endpoint, then run its handlers.

    The body is signed with the endpoint's first configured secret and goes
    through the project's own URLconf and the real view, exactly as Stripe's
    would. AssertionError if the view does not answer 200.
    """
    event = _as_event(event, endpoint)
    config = webhook_settings.endpoint(endpoint)
    if config is None or not config.secrets:
        raise ImproperlyConfigured(
            f'deliver() signs with STRIPE_WEBHOOKS["ENDPOINTS"]["{endpoint}"]["SECRETS"][0]; '
            "configure one in the test settings, or with override_settings."
        )
    body = encode_event(event)
    if endpoint == "default":
        url = reverse("webhook_ingest:stripe")
    else:
        url = reverse("webhook_ingest:stripe-endpoint", kwargs={"endpoint": endpoint})
    response = (client or Client()).post(
        url,
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_body(body, config.secrets[0]),
    )
    if response.status_code != 200:
        raise AssertionError(
            f"the webhook view answered {response.status_code}: {response.content[:500]!r}"
        )
    return _handle(event["id"], raise_errors)


def run_handlers(
    event: dict[str, Any] | str, *, endpoint: str = "default", raise_errors: bool = True
) -> WebhookEvent:
    """Store `event` (a dict, or a type built in the endpoint's style) unless stored, and
    run its handlers.

    No HTTP and no signature: for tests of the handlers themselves.
    """
    event = _as_event(event, endpoint)
    body = encode_event(event)
    WebhookEvent.objects.record(_parse(body), body, endpoint)
    return _handle(event["id"], raise_errors)
