"""Fuzzing the webhook view: arbitrary bodies, headers, content types and endpoints.

Hypothesis drives the real view through Django's test client, mixing pure
noise with near-misses of valid deliveries (a real event with fields
replaced, signed with the right or a wrong secret, at a good or a bad time).
Whatever arrives, the view must answer with one of its documented statuses
and a JSON error body, store a row only for a correctly signed Stripe event,
store that event's body byte for byte, and never leak a secret or a traceback.

Deterministic and quick in `make test`; for a longer run:

    make test PYTEST_ARGS="tests/test_fuzz.py" FUZZ_EXAMPLES=20000

and for coverage-guided fuzzing of the same contract, tests/fuzz_view_atheris.py.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from webhook_ingest.models import WebhookEvent
from webhook_worker.stripe_events import build_event, encode_event, sign_body

from .constants import CONNECT_SECRET, OLD_SECRET, OTHER_SECRET, SECRET

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
DOCUMENTED = {200, 400, 404, 405, 413}
SECRETS = {"default": (SECRET, OLD_SECRET), "connect": (CONNECT_SECRET,)}

json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
EVENT_FIELDS = ["id", "object", "type", "created", "livemode", "data", "api_version", "account"]


@st.composite
def near_miss_event(draw: st.DrawFn) -> str:
    """A real event, with some fields removed or replaced by arbitrary JSON."""
    event = build_event(
        draw(st.sampled_from(["customer.created", "invoice.paid", "charge.refunded"]))
    )
    for field in draw(st.lists(st.sampled_from(EVENT_FIELDS), max_size=3, unique=True)):
        if draw(st.booleans()):
            event.pop(field, None)
        else:
            event[field] = draw(json_value)
    if draw(st.booleans()):
        event["id"] = draw(
            st.one_of(
                st.text(max_size=30), st.from_regex(r"evt_[A-Za-z0-9_]{1,40}", fullmatch=True)
            )
        )
    return encode_event(event) if draw(st.booleans()) else json.dumps(event, separators=(",", ":"))


bodies = st.one_of(
    near_miss_event(),
    st.builds(lambda: encode_event(build_event("customer.created"))),
    st.text(max_size=300),
    st.binary(max_size=300),
    json_value.map(json.dumps),
    st.integers(1, 2000).map(
        lambda d: '{"id": "evt_x", "object": "event", "d": ' + "[" * d + "]" * d + "}"
    ),
)


@dataclass
class Delivery:
    body: bytes
    signature: str | None
    content_type: str
    endpoint: str | None
    correctly_signed: bool


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    body = draw(bodies)
    raw = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    endpoint = draw(st.sampled_from([None, None, None, None, "connect", "nope", "..", "default.x"]))
    text = raw.decode("utf-8", "replace")
    secrets = SECRETS.get(endpoint or "default", ())
    now = int(time.time())
    how = draw(
        st.sampled_from(["right", "right", "other secret", "stale", "future", "noise", "none"])
    )
    correctly_signed = False
    if how == "right" and secrets:
        signature: str | None = sign_body(text, draw(st.sampled_from(secrets)), now)
        correctly_signed = True
    elif how == "other secret":
        signature = sign_body(text, OTHER_SECRET, now)
    elif how == "stale":
        signature = sign_body(text, SECRET, now - draw(st.integers(301, 10**9)))
    elif how == "future":
        signature = sign_body(text, SECRET, now + draw(st.integers(301, 10**9)))
    elif how == "noise":
        signature = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200))
    else:
        signature = None
    content_type = draw(
        st.sampled_from(["application/json", "application/json; charset=utf-8"] * 3)
        | st.sampled_from(["application/vnd.x+json", "text/plain", "", "multipart/form-data"])
        | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30)
    )
    return Delivery(raw, signature, content_type, endpoint, correctly_signed)


def check_delivery(client: Client, delivery: Delivery) -> str:
    """The view's contract for one request, whatever it carries."""
    before = WebhookEvent.objects.count()
    url = (
        "/webhooks/stripe/"
        if delivery.endpoint is None
        else f"/webhooks/stripe/{delivery.endpoint}/"
    )
    extra: dict[str, Any] = {}
    if delivery.signature is not None:
        extra["HTTP_STRIPE_SIGNATURE"] = delivery.signature
    response = client.post(url, data=delivery.body, content_type=delivery.content_type, **extra)

    assert response.status_code in DOCUMENTED, response.content
    text = response.content.decode("utf-8", "replace")
    for secret in (SECRET, OLD_SECRET, CONNECT_SECRET):
        assert secret not in text
    assert "Traceback" not in text
    payload = response.json()
    if response.status_code == 200:
        assert delivery.correctly_signed, "an unsigned or wrongly signed body was accepted"
        stored = WebhookEvent.objects.get(pk=payload["id"])
        if payload["duplicate"]:  # the first body stored under this id stays
            assert WebhookEvent.objects.count() == before
        else:
            assert stored.body.encode() == delivery.body
            assert WebhookEvent.objects.count() == before + 1
    else:
        assert set(payload) == {"error", "detail"}
        assert WebhookEvent.objects.count() == before
    return f"{response.status_code} {payload.get('error', '')}"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(delivery=deliveries())
def test_fuzz_view(delivery):
    event(check_delivery(Client(), delivery))
