"""Errors raised while receiving a webhook, and configuration errors."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class WebhookConfigurationError(ImproperlyConfigured):
    """A `STRIPE_WEBHOOKS` setting is missing or malformed."""


class MissingApiKey(WebhookConfigurationError):
    """A call to Stripe's API was needed and no secret key is configured for it."""


class RejectedDelivery(Exception):
    """A delivery refused before anything was stored.

    `code` names the class of error in the response body and in metrics;
    `detail` is a sentence safe to show the sender (never a secret or a
    traceback). 4xx tells Stripe not to bother retrying unchanged; 5xx asks it to.
    """

    status_code = 400
    code = "bad_request"
    default_detail = "The request was rejected."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class UnknownEndpoint(RejectedDelivery):
    """No endpoint with that name is configured."""

    status_code = 404
    code = "unknown_endpoint"
    default_detail = "No webhook endpoint with that name."


class EndpointNotConfigured(RejectedDelivery):
    """The endpoint exists but has no signing secret, so nothing can be verified."""

    status_code = 500
    code = "endpoint_not_configured"
    default_detail = "This endpoint has no signing secret configured."


class BodyTooLarge(RejectedDelivery):
    """The body is over `MAX_BODY_BYTES`."""

    status_code = 413
    code = "body_too_large"
    default_detail = "The request body is larger than this endpoint accepts."


class UnsupportedContentType(RejectedDelivery):
    """The request declares a content type other than JSON."""

    code = "unsupported_content_type"
    default_detail = "Stripe webhooks are sent as application/json."


class SignatureMissing(RejectedDelivery):
    """No `Stripe-Signature` header."""

    code = "missing_signature"
    default_detail = "The Stripe-Signature header is missing."


class SignatureMalformed(RejectedDelivery):
    """The `Stripe-Signature` header cannot be parsed."""

    code = "malformed_signature"
    default_detail = "The Stripe-Signature header is not of the form t=...,v1=...."


class SignatureMismatch(RejectedDelivery):
    """No `v1` signature matches the body under any configured secret."""

    code = "invalid_signature"
    default_detail = "No signature in the Stripe-Signature header matches the body."


class TimestampOutOfTolerance(RejectedDelivery):
    """The signed timestamp is too old (a replay) or too far in the future."""

    code = "timestamp_out_of_tolerance"
    default_detail = "The signature timestamp is outside the accepted tolerance."


class InvalidBody(RejectedDelivery):
    """The body is signed but is not a Stripe event."""

    code = "invalid_event"
    default_detail = "The body is not a Stripe event."


class WrongPayloadStyle(InvalidBody):
    """A snapshot event sent to a thin endpoint, or a thin one to a snapshot endpoint."""

    code = "wrong_payload_style"
    default_detail = "The event's payload style is not the one this endpoint receives."


class StorageUnavailable(RejectedDelivery):
    """The database could not take the event; the sender should retry."""

    status_code = 503
    code = "storage_unavailable"
    default_detail = "The event could not be stored right now; retry later."
