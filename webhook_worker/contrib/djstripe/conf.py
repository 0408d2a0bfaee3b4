"""The bridge's setting, `STRIPE_WEBHOOKS_DJSTRIPE`, and its defaults.

    STRIPE_WEBHOOKS_DJSTRIPE = {
        # Names of the endpoints whose events dj-stripe syncs; None: every
        # snapshot endpoint (thin events are not dj-stripe's to process).
        "ENDPOINTS": None,
        # The secret key dj-stripe's sync calls Stripe's API with; None:
        # dj-stripe's own for the event's mode (its get_default_api_key), as
        # dj-stripe's view uses.
        "API_KEY": None,
    }

Read on every call, so `override_settings` works as it is; the system check
webhooks_djstripe.E003 reports a malformed value.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

SETTING_NAME = "STRIPE_WEBHOOKS_DJSTRIPE"
DEFAULTS: dict[str, Any] = {"ENDPOINTS": None, "API_KEY": None}


def bridge_setting(key: str) -> Any:
    """`STRIPE_WEBHOOKS_DJSTRIPE[key]`, or its default."""
    value = getattr(settings, SETTING_NAME, None)
    return (value if isinstance(value, dict) else DEFAULTS).get(key, DEFAULTS[key])


def problems() -> list[str]:
    """What is wrong with the setting, as sentences; empty when nothing is."""
    value = getattr(settings, SETTING_NAME, {})
    if not isinstance(value, dict):
        return [f"{SETTING_NAME} must be a dict, got {value!r}."]
    found = []
    unknown = sorted(set(value) - set(DEFAULTS))
    if unknown:
        found.append(f"{SETTING_NAME} has unknown keys {unknown}; known: {sorted(DEFAULTS)}.")
    names = value.get("ENDPOINTS")
    if names is not None and not (
        isinstance(names, list | tuple) and all(isinstance(name, str) for name in names)
    ):
        found.append(f'{SETTING_NAME}["ENDPOINTS"] is a list of endpoint names or None.')
    key = value.get("API_KEY")
    if key is not None and not (isinstance(key, str) and key):
        found.append(f'{SETTING_NAME}["API_KEY"] is a secret key (sk_… or rk_…) or None.')
    return found
