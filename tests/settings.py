"""Settings for the test suite and the worker/web processes it starts.

Built on the reference project's settings; subprocesses inherit them through
DJANGO_SETTINGS_MODULE=tests.settings, so web, worker and test agree.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-not-a-secret")

from config.settings import *  # noqa: E402,F403
from config.settings import INSTALLED_APPS  # noqa: E402
from devstack.services import free_port  # noqa: E402

from .constants import API_KEY, CONNECT_SECRET, OLD_SECRET, SECRET, THIN_SECRET  # noqa: E402

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

# The loopback stand-in for Stripe's API (tests/stripe_standin.py): one port
# for the whole run, chosen once and inherited by every process it starts.
STRIPE_STANDIN_PORT = int(os.environ.setdefault("WEBHOOKS_TEST_STRIPE_PORT", str(free_port())))
STRIPE_API_KEY = API_KEY

STRIPE_WEBHOOKS = {
    "ENDPOINTS": {
        "default": {"SECRETS": [SECRET, OLD_SECRET], "TOLERANCE": 300},
        "connect": {"SECRETS": [CONNECT_SECRET], "TOLERANCE": 60},
        "thin": {"SECRETS": [THIN_SECRET], "STYLE": "thin"},
    },
    "API_BASE": f"http://127.0.0.1:{STRIPE_STANDIN_PORT}",
    # Short delays so retry scenarios finish in seconds; four attempts in all.
    "RETRY_SCHEDULE": [0.5, 1.0, 1.0],
    "RETRY_JITTER": 0.2,
    "REQUEUE_AFTER": 2,
    "MAX_BODY_BYTES": 256 * 1024,
}
# A test that starts its own processes can change these for them.
STRIPE_WEBHOOKS.update(json.loads(os.environ.get("WEBHOOKS_TEST_OVERRIDES", "{}")))
# ...and the broker transport options (e.g. a tiny visibility timeout).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **globals().get("CELERY_BROKER_TRANSPORT_OPTIONS", {}),
    **json.loads(os.environ.get("WEBHOOKS_TEST_TRANSPORT_OPTIONS", "{}")),
}

# One queue per test session, so a shared broker never hands us old messages.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("WEBHOOKS_TEST_QUEUE") or f"webhooks-tests-{os.getpid()}"

# Where test handlers append a line per call (kept even when their writes roll back).
HANDLER_LOG = os.environ.get("WEBHOOKS_HANDLER_LOG", "")

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Serve admin static files from the apps in gunicorn too (no collectstatic in tests).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True

ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]

# tests/test_observability.py: Sentry set up in settings, as Sentry documents
# for Django and Celery, in the processes that test starts.
if os.environ.get("WEBHOOKS_TEST_OBSERVE"):
    from .observability import init_sentry  # noqa: E402

    init_sentry()
