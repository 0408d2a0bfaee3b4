"""Stripe signature verification over the raw body, with secret rotation.

The HMAC is computed and compared by the `stripe` library. We add what it
leaves to the caller: trying every secret of the endpoint, telling a
malformed header from a mismatch, and refusing timestamps too far in the
future as well as too far in the past.
"""

from __future__ import annotations

import time

import stripe

from .conf import Endpoint
from .exceptions import (
    EndpointNotConfigured,
    SignatureMalformed,
    SignatureMismatch,
    SignatureMissing,
    TimestampOutOfTolerance,
)

# A real header is "t=<10 digits>" plus one "v1=<64 hex>" per active secret
# (and sometimes a "v0="); anything this long is not from Stripe.
MAX_HEADER_LENGTH = 4096


def signed_timestamp(header: str) -> int:
    """The single `t=` of a `Stripe-Signature` header; SignatureMalformed otherwise."""
    if len(header) > MAX_HEADER_LENGTH:
        raise SignatureMalformed("The Stripe-Signature header is too long.")
    timestamps = []
    has_v1 = False
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or not value:
            raise SignatureMalformed()
        if key == "t":
            timestamps.append(value)
        elif key == "v1":
            has_v1 = True
    if len(timestamps) != 1 or not timestamps[0].isascii() or not timestamps[0].isdigit():
        raise SignatureMalformed(
            "The Stripe-Signature header must carry exactly one t=<unix time>."
        )
    if not has_v1:
        raise SignatureMalformed("The Stripe-Signature header carries no v1 signature.")
    return int(timestamps[0])


def verify_signature(
    body: str, header: str | None, endpoint: Endpoint, now: float | None = None
) -> int:
    """Check `header` signs `body` under one of the endpoint's secrets, recently.

    Returns the signed timestamp. Raises a `RejectedDelivery` subclass that
    says which check failed.
    """
    return verified_secret(body, header, endpoint, now)[0]


def verified_secret(
    body: str, header: str | None, endpoint: Endpoint, now: float | None = None
) -> tuple[int, str]:
    """As `verify_signature`; returns the signed timestamp and the secret that matched."""
    if not endpoint.secrets:
        raise EndpointNotConfigured()
    if not header:
        raise SignatureMissing()
    timestamp = signed_timestamp(header)
    for secret in endpoint.secrets:
        try:
            # tolerance=None: the library only checks the past; we check both ways below.
            stripe.WebhookSignature.verify_header(body, header, secret, tolerance=None)
        except stripe.SignatureVerificationError:
            continue
        break
    else:
        raise SignatureMismatch()
    age = (time.time() if now is None else now) - timestamp
    if age > endpoint.tolerance:
        raise TimestampOutOfTolerance(
            f"The signature timestamp is {int(age)}s old; this endpoint accepts "
            f"{endpoint.tolerance}s (a replayed delivery?)."
        )
    if -age > endpoint.tolerance:
        raise TimestampOutOfTolerance(
            f"The signature timestamp is {int(-age)}s in the future; this endpoint accepts "
            f"{endpoint.tolerance}s of clock skew."
        )
    return timestamp, secret
