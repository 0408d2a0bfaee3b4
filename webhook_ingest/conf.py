"""The `STRIPE_WEBHOOKS` setting: one namespaced dict, one accessor, defaults here.

    from webhook_ingest.conf import webhook_settings
    webhook_settings.RETRY_SCHEDULE
    webhook_settings.endpoint("default").secrets

The cache is dropped on Django's `setting_changed`, so `override_settings`
works in tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from .endpoints import (
    DEFAULT_TOLERANCE,
    INHERITED_KEYS,
    SNAPSHOT,
    Endpoint,
    inherited_value,
    parse_endpoints,
)
from .validate import SETTING_NAME, fail, flag, number

__all__ = ["DEFAULTS", "SETTING_NAME", "Endpoint", "WebhookSettings", "webhook_settings"]

# The Django setting the API key falls back to (the reference project reads
# it from the environment).
API_KEY_SETTING = "STRIPE_API_KEY"

DEFAULTS: dict[str, Any] = {
    # Endpoint name -> its signing secrets (any may match: rotation), the
    # accepted clock skew in seconds, and its payload STYLE ("snapshot" or
    # "thin"). POST /webhooks/stripe/ is "default".
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
    # The secret key for the library's own calls to Stripe's API (thin-event
    # fetches, backfill, reconciliation); None: the STRIPE_API_KEY setting.
    "API_KEY": None,
    # Where those calls go; None: Stripe's own API.
    "API_BASE": None,
    # "object": events about one object are processed one at a time, in the
    # order Stripe created them. None: no ordering.
    "ORDERING": None,
    # With ORDERING, how long (seconds after it was received) a failing event
    # holds its object's later events; then they run without it.
    "ORDERING_MAX_WAIT": 300,
    # Every handler of every endpoint skips events that are superseded (a
    # newer event about the same object already succeeded).
    "SKIP_SUPERSEDED": False,
    # A thin event and its snapshot twin (`snapshot_event`) run handlers
    # once between them: whichever comes second is skipped.
    "DEDUPLICATE_TWINS": False,
    # Seconds between reconciliation runs (beat): events missing from the
    # database are fetched from Stripe's Events API. None: off.
    "RECONCILE_EVERY": None,
}

# Redis redelivers a message unacknowledged for an hour (kombu's default
# visibility_timeout); RabbitMQ cancels a consumer holding one for 30 minutes.
MAX_BROKER_DELAY_LIMIT = 900


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
            raise fail("must be a dict.")
        unknown = set(value) - set(DEFAULTS)
        if unknown:
            raise fail(f"unknown keys {sorted(unknown)}; known keys are {sorted(DEFAULTS)}.")
        return value

    def __getattr__(self, key: str) -> Any:
        if key not in DEFAULTS:
            raise AttributeError(f"{SETTING_NAME} has no setting {key!r}")
        if key not in self._cache:
            self._cache[key] = self._validate(key, self.user_settings.get(key, DEFAULTS[key]))
        return self._cache[key]

    def _validate(self, key: str, value: Any) -> Any:
        if key == "ENDPOINTS":
            return parse_endpoints(value, self._inherited())
        if key in INHERITED_KEYS:
            return inherited_value(key, value, key)
        if key == "RETRY_SCHEDULE":
            if not isinstance(value, list | tuple):
                raise fail("RETRY_SCHEDULE must be a list of delays in seconds.")
            return tuple(number(v, "RETRY_SCHEDULE entries") for v in value)
        if key == "RETRY_JITTER":
            jitter = number(value, "RETRY_JITTER")
            if jitter >= 1:
                raise fail(f"RETRY_JITTER must be below 1 (a fraction), got {value!r}.")
            return jitter
        if key == "MAX_BROKER_DELAY":
            delay = number(value, "MAX_BROKER_DELAY")
            if delay > MAX_BROKER_DELAY_LIMIT:
                raise fail(
                    f"MAX_BROKER_DELAY must be at most {MAX_BROKER_DELAY_LIMIT} seconds (well "
                    "below Redis' visibility timeout and RabbitMQ's consumer_timeout), "
                    f"got {value!r}."
                )
            return delay
        if key in ("REQUEUE_AFTER", "ORDERING_MAX_WAIT"):
            return number(value, key)
        if key == "MAX_BODY_BYTES":
            return int(number(value, "MAX_BODY_BYTES", 1))
        if key in ("ENQUEUE_IN_BACKGROUND", "DEDUPLICATE_TWINS"):
            return flag(value, key)
        return value

    def endpoint(self, name: str) -> Endpoint | None:
        endpoints: dict[str, Endpoint] = self.ENDPOINTS
        return endpoints.get(name)

    def endpoint_or_defaults(self, name: str) -> Endpoint:
        """The endpoint `name`, or for a name no longer configured (an event stored
        before a rename) a snapshot endpoint with the top-level values."""
        endpoint = self.endpoint(name)
        if endpoint is not None:
            return endpoint
        return parse_endpoints({name: {"STYLE": SNAPSHOT}}, self._inherited())[name]

    def _inherited(self) -> dict[str, Any]:
        """What endpoints inherit: the top-level values, the key from STRIPE_API_KEY if unset."""
        values = {name: getattr(self, name) for name in INHERITED_KEYS}
        if values["API_KEY"] is None:
            django_key = getattr(settings, API_KEY_SETTING, None)
            values["API_KEY"] = inherited_value("API_KEY", django_key, API_KEY_SETTING)
        return values

    @property
    def ordering_enabled(self) -> bool:
        """Whether any endpoint processes its events in order (one query per attempt more)."""
        return any(e.ordering for e in self.ENDPOINTS.values()) or self.ORDERING is not None

    @property
    def max_attempts(self) -> int:
        """Attempts before an event is dead-lettered: one per retry delay, plus the first."""
        return len(self.RETRY_SCHEDULE) + 1


webhook_settings = WebhookSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTING_NAME, API_KEY_SETTING):
        webhook_settings.reload()


setting_changed.connect(_reload)
