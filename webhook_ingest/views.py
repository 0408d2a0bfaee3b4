"""The endpoint Stripe posts to.

Status-code contract. Stripe retries every non-2xx delivery for up to three
days, so the code is the whole conversation:

    200  stored now, or already stored (a duplicate). Handlers run later, in a
         worker; the response never waits for them.
    400  not a verifiable Stripe event (signature missing, malformed, wrong or
         expired; body not UTF-8, not JSON, not an event, or an event of the
         other payload style: snapshot to a thin endpoint or thin to a
         snapshot one). Never stored.
    404  no endpoint of that name.          405  not a POST.
    413  body over MAX_BODY_BYTES, refused before it is read.
    5xx  we could not take it (database down, endpoint without a secret):
         nothing was lost, Stripe will deliver it again.

Error bodies name the class of error and never echo secrets or tracebacks.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .conf import webhook_settings
from .exceptions import (
    BodyTooLarge,
    InvalidBody,
    RejectedDelivery,
    StorageUnavailable,
    UnknownEndpoint,
    UnsupportedContentType,
)
from .models import WebhookEvent
from .parsing import ParsedEvent, decode_body, parse_event
from .signals import delivery_accepted, delivery_rejected, event_ready
from .signature import verify_signature
from .thin import parse_thin_delivery

logger = logging.getLogger(__name__)

JSON_CONTENT_TYPES = {"", "application/json"}


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


def _read_body(request: HttpRequest, max_bytes: int) -> bytes:
    length = request.META.get("CONTENT_LENGTH") or "0"
    try:
        declared = int(length)
    except ValueError:
        raise InvalidBody("The Content-Length header is not a number.") from None
    if declared > max_bytes:
        raise BodyTooLarge(f"The request body is over {max_bytes} bytes.")
    # Read the stream directly: request.body would apply Django's
    # DATA_UPLOAD_MAX_MEMORY_SIZE instead of this endpoint's own limit.
    stream: Any = request
    if not request.META.get("CONTENT_LENGTH") and request.META.get("wsgi.input_terminated"):
        # A chunked body has no length up front (Django would read it as
        # empty); the server marks where it ends. The same limit applies.
        stream = request.META["wsgi.input"]
    raw = stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise BodyTooLarge(f"The request body is over {max_bytes} bytes.")
    return raw


def _record(parsed: ParsedEvent, body: str, endpoint: str) -> bool:
    """Store the event; on a connection the server dropped, reconnect once and retry.

    Connections are reused across requests without Django's per-request
    health check (a `SELECT 1` round trip on every webhook). A connection
    closed under us (database restart, failover, idle timeout) fails here
    instead, and the INSERT is idempotent, so it is simply sent again on a
    fresh connection. Any other error, or a second failure, propagates.
    """
    connection = connections[WebhookEvent.objects.db_for_write()]
    reused = connection.connection is not None
    try:
        return WebhookEvent.objects.record(parsed, body, endpoint)
    except (InterfaceError, OperationalError):
        if not reused or connection.in_atomic_block or connection.is_usable():
            raise
        connection.close()
    return WebhookEvent.objects.record(parsed, body, endpoint)


def _accept(request: HttpRequest, endpoint_name: str) -> tuple[str, str, bool, bool]:
    """Verify and store; returns (event id, type, duplicate, enqueue)."""
    endpoint = webhook_settings.endpoint(endpoint_name)
    if endpoint is None:
        raise UnknownEndpoint()
    raw = _read_body(request, webhook_settings.MAX_BODY_BYTES)
    content_type = (request.content_type or "").lower()
    if content_type not in JSON_CONTENT_TYPES and not content_type.endswith("+json"):
        raise UnsupportedContentType()
    body = decode_body(raw)
    # Verify first, over the exact bytes received, before parsing or storing anything.
    header = request.META.get("HTTP_STRIPE_SIGNATURE")
    if endpoint.is_thin:
        parsed = parse_thin_delivery(body, header, endpoint)
    else:
        verify_signature(body, header, endpoint)
        parsed = parse_event(body)
    try:
        created = _record(parsed, body, endpoint.name)
        if created:
            return parsed.id, parsed.type, False, True
        status = WebhookEvent.objects.filter(pk=parsed.id).values_list("status", flat=True).first()
    except DatabaseError:
        logger.exception(
            "could not store event %s from endpoint %s",
            parsed.id, endpoint.name,
            extra={"webhook_event_id": parsed.id, "webhook_event_type": parsed.type},
        )  # fmt: skip
        raise StorageUnavailable() from None
    # A duplicate whose first delivery never reached a worker is enqueued
    # again; processing is idempotent, so an extra message costs nothing.
    return parsed.id, parsed.type, True, status == WebhookEvent.Status.PENDING


@csrf_exempt
@transaction.non_atomic_requests
def receive(request: HttpRequest, endpoint: str = "default") -> JsonResponse:
    """Receive one Stripe webhook delivery on the named endpoint."""
    if request.method != "POST":
        response = _error(405, "method_not_allowed", "Only POST is accepted.")
        response["Allow"] = "POST"
        return response
    try:
        event_id, event_type, duplicate, enqueue = _accept(request, endpoint)
    except RejectedDelivery as exc:
        logger.warning(
            "rejected webhook on endpoint %r: %s (%s)", endpoint[:64], exc.code, exc.detail
        )
        delivery_rejected.send(
            sender=WebhookEvent, endpoint=endpoint, reason=exc.code, status_code=exc.status_code
        )
        return _error(exc.status_code, exc.code, exc.detail)
    if enqueue:
        # Autocommit here (non_atomic_requests), so this runs at once, after
        # the INSERT committed: whatever a receiver hands the id to can never
        # see it before the row.
        transaction.on_commit(
            partial(
                event_ready.send,
                sender=WebhookEvent,
                event_id=event_id,
                event_type=event_type,
                endpoint=endpoint,
            ),
            using=WebhookEvent.objects.db_for_write(),
        )
    delivery_accepted.send(
        sender=WebhookEvent,
        event_id=event_id,
        event_type=event_type,
        endpoint=endpoint,
        duplicate=duplicate,
    )
    return JsonResponse({"received": True, "id": event_id, "duplicate": duplicate})
