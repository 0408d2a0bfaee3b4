"""Checks shared by the `STRIPE_WEBHOOKS` accessor and its endpoint table.

Each raises `WebhookConfigurationError` with a message that names the exact
setting, so the system check (`webhook_ingest.E002`) can print it as is.
"""

from __future__ import annotations

import math
from typing import Any

from .exceptions import WebhookConfigurationError

SETTING_NAME = "STRIPE_WEBHOOKS"


def fail(message: str) -> WebhookConfigurationError:
    return WebhookConfigurationError(f"{SETTING_NAME}: {message}")


def number(value: Any, key: str, minimum: float = 0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise fail(f"{key} must be a number, got {value!r}.")
    if value < minimum:
        raise fail(f"{key} must be >= {minimum}, got {value!r}.")
    return value


def optional_number(value: Any, key: str, minimum: float) -> float | None:
    """None (off), or a number of at least `minimum`."""
    return None if value is None else number(value, key, minimum)


def flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise fail(f"{key} must be True or False, got {value!r}.")
    return value


def choice(value: Any, key: str, allowed: tuple[Any, ...]) -> Any:
    if value not in allowed:
        raise fail(f"{key} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")
    return value


def optional_text(value: Any, key: str) -> str | None:
    """None or "" (not set), or a non-empty string."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise fail(f"{key} must be a string, got {type(value).__name__}.")
    return value.strip() or None


def api_base(value: Any, key: str) -> str | None:
    """An http(s) URL without a trailing slash, or None for Stripe's own."""
    text = optional_text(value, key)
    if text is None:
        return None
    if not text.startswith(("https://", "http://")):
        raise fail(f"{key} must be an http(s) URL such as https://api.stripe.com, got {text!r}.")
    return text.rstrip("/")
