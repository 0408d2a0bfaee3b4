"""The `STRIPE_WEBHOOKS` setting: one namespaced dict, one accessor, defaults here.

    from webhook_ingest.conf import webhook_settings
    webhook_settings.RETRY_SCHEDULE
    webhook_settings.endpoint("default").secrets

The cache is dropped on Django's `setting_changed`, so `override_settings`
works in tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from .exceptions import WebhookConfigurationError

SETTING_NAME = "STRIPE_WEBHOOKS"

DEFAULT_TOLERANCE = 300

DEFAULTS: dict[str, Any] = {
    # Endpoint name -> its signing secrets (any may match: rotation) and the
    # accepted clock skew in seconds. POST /webhooks/stripe/ is "default".
    "ENDPOINTS": {"default": {"SECRETS": [], "TOLERANCE": DEFAULT_TOLERANCE}},
    # Seconds to wait before attempt 2, 3, ...; max attempts = len + 1.
    "RETRY_SCHEDULE": [10, 60, 300, 1800, 3600, 3600, 3600],
    # +/- fraction applied to each delay, so a failing burst does not retry in lockstep.
    "RETRY_JITTER": 0.2,
    # Longest delay a retry waits in the broker (a countdown message). A longer
    # one waits in the database, and the sweeper (beat) publishes it when due.
    "MAX_BROKER_DELAY": 30,
    # Sweeper: an event pending, retrying or processing this long past due is re-enqueued.
    "REQUEUE_AFTER": 300,
    # Bodies larger than this are refused with 413 before being read.
    "MAX_BODY_BYTES": 2_097_152,
    # The view hands each stored event to a publisher thread of its process
    # (batched publishes, no broker round trip in the response); False
    # publishes inside the request, before the response.
    "ENQUEUE_IN_BACKGROUND": True,
}

ENDPOINT_KEYS = {"SECRETS", "TOLERANCE"}
# Redis redelivers a message unacknowledged for an hour (kombu's default
# visibility_timeout); RabbitMQ cancels a consumer holding one for 30 minutes.
MAX_BROKER_DELAY_LIMIT = 900


@dataclass(frozen=True)
class Endpoint:
    """One receiving URL: its name, accepted secrets and timestamp tolerance."""

    name: str
    secrets: tuple[str, ...]
    tolerance: int

    def __repr__(self) -> str:  # never print secrets, even in debug pages
        return (
            f"Endpoint(name={self.name!r}, secrets=<{len(self.secrets)} hidden>, "
            f"tolerance={self.tolerance})"
        )


def _fail(message: str) -> WebhookConfigurationError:
    return WebhookConfigurationError(f"{SETTING_NAME}: {message}")


def _number(value: Any, key: str, minimum: float = 0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(f"{key} must be a number, got {value!r}.")
    if value < minimum:
        raise _fail(f"{key} must be >= {minimum}, got {value!r}.")
    return value


def _endpoints(raw: Any) -> dict[str, Endpoint]:
    if not isinstance(raw, dict) or not raw:
        raise _fail('ENDPOINTS must be a dict such as {"default": {"SECRETS": ["whsec_..."]}}.')
    endpoints = {}
    for name, conf in raw.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise _fail(f"endpoint names must be non-empty strings without '/', got {name!r}.")
        if not isinstance(conf, dict):
            raise _fail(f'ENDPOINTS["{name}"] must be a dict with "SECRETS" and "TOLERANCE".')
        unknown = set(conf) - ENDPOINT_KEYS
        if unknown:
            raise _fail(f'ENDPOINTS["{name}"] has unknown keys {sorted(unknown)}.')
        secrets = conf.get("SECRETS", [])
        if isinstance(secrets, str):
            secrets = secrets.split(",")
        if not isinstance(secrets, list | tuple) or not all(isinstance(s, str) for s in secrets):
            raise _fail(f'ENDPOINTS["{name}"]["SECRETS"] must be a list of strings.')
        tolerance = _number(
            conf.get("TOLERANCE", DEFAULT_TOLERANCE), f'ENDPOINTS["{name}"]["TOLERANCE"]', 1
        )
        endpoints[name] = Endpoint(
            name=name,
            secrets=tuple(s.strip() for s in secrets if s.strip()),
            tolerance=int(tolerance),
        )
    return endpoints


class WebhookSettings:
    """Attribute access to `STRIPE_WEBHOOKS`, validated, with defaults filled in."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def reload(self) -> None:
        self._cache.clear()

    @property
    def user_settings(self) -> dict[str, Any]:
        value = getattr(settings, SETTING_NAME, {})
        if not isinstance(value, dict):
            raise _fail("must be a dict.")
        unknown = set(value) - set(DEFAULTS)
        if unknown:
            raise _fail(f"unknown keys {sorted(unknown)}; known keys are {sorted(DEFAULTS)}.")
        return value

    def __getattr__(self, key: str) -> Any:
        if key not in DEFAULTS:
            raise AttributeError(f"{SETTING_NAME} has no setting {key!r}")
        if key not in self._cache:
            self._cache[key] = self._validate(key, self.user_settings.get(key, DEFAULTS[key]))
        return self._cache[key]

    def _validate(self, key: str, value: Any) -> Any:
        if key == "ENDPOINTS":
            return _endpoints(value)
        if key == "RETRY_SCHEDULE":
            if not isinstance(value, list | tuple):
                raise _fail("RETRY_SCHEDULE must be a list of delays in seconds.")
            return tuple(_number(v, "RETRY_SCHEDULE entries") for v in value)
        if key == "RETRY_JITTER":
            jitter = _number(value, "RETRY_JITTER")
            if jitter >= 1:
                raise _fail(f"RETRY_JITTER must be below 1 (a fraction), got {value!r}.")
            return jitter
        if key == "MAX_BROKER_DELAY":
            delay = _number(value, "MAX_BROKER_DELAY")
            if delay > MAX_BROKER_DELAY_LIMIT:
                raise _fail(
                    f"MAX_BROKER_DELAY must be at most {MAX_BROKER_DELAY_LIMIT} seconds (well "
                    "below Redis' visibility timeout and RabbitMQ's consumer_timeout), "
                    f"got {value!r}."
                )
            return delay
        if key == "REQUEUE_AFTER":
            return _number(value, "REQUEUE_AFTER")
        if key == "MAX_BODY_BYTES":
            return int(_number(value, "MAX_BODY_BYTES", 1))
        if key == "ENQUEUE_IN_BACKGROUND":
            if not isinstance(value, bool):
                raise _fail(f"ENQUEUE_IN_BACKGROUND must be True or False, got {value!r}.")
            return value
        return value

    def endpoint(self, name: str) -> Endpoint | None:
        endpoints: dict[str, Endpoint] = self.ENDPOINTS
        return endpoints.get(name)

    @property
    def max_attempts(self) -> int:
        """Attempts before an event is dead-lettered: one per retry delay, plus the first."""
        return len(self.RETRY_SCHEDULE) + 1


webhook_settings = WebhookSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        webhook_settings.reload()


setting_changed.connect(_reload)
