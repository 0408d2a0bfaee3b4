"""Settings for the dj-stripe bridge's tests (`make test-djstripe`, in .venv-djstripe-<version>).

The suite's settings plus dj-stripe, the bridge, and a project app with a
`djstripe_receiver` (tests/djstripeapp). dj-stripe's own calls to Stripe's
API go through stripe-python's module-level `api_base`, pointed here at the
suite's stand-in for Stripe's API, as a project would point it at a proxy.
"""

from __future__ import annotations

import stripe

from .settings import *  # noqa: F403
from .settings import INSTALLED_APPS, STRIPE_STANDIN_PORT

INSTALLED_APPS = [
    *INSTALLED_APPS,
    "djstripe",
    "webhook_worker.contrib.djstripe",
    "tests.djstripeapp",
]
ROOT_URLCONF = "tests.urls_djstripe"

stripe.api_base = f"http://127.0.0.1:{STRIPE_STANDIN_PORT}"
# dj-stripe's keys: the key its sync uses by default (the bridge's API_KEY is unset).
STRIPE_LIVE_MODE = False
STRIPE_TEST_SECRET_KEY = "sk_test_51DjStripeStandIn0123456789abcdef"
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
# Only the default endpoint's events are synced (the "connect" one is not).
STRIPE_WEBHOOKS_DJSTRIPE = {"ENDPOINTS": ["default"]}
