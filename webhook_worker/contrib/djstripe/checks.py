"""System checks of the dj-stripe bridge: a dj-stripe it does not support, a bad setting."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from django.apps import apps
from django.core.checks import CheckMessage, Error
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from webhook_ingest.conf import webhook_settings
from webhook_ingest.exceptions import WebhookConfigurationError

from .conf import SETTING_NAME, bridge_setting, problems

# The releases whose Event.process the bridge is tested against.
SUPPORTED = SpecifierSet(">=2.10,<2.12")
# dj-stripe 2.10 allows stripe 15 but cannot save what it returns (stripe 15's
# objects are no longer dicts; 2.11 carries a shim for that).
STRIPE_FOR_2_10 = SpecifierSet("<15")
INSTALL_HINT = 'pip install "django-queued-webhooks[djstripe]" (dj-stripe 2.10 or 2.11).'


def unsupported_version(found: str | None, stripe_found: str) -> str | None:
    """Why dj-stripe `found` (None: not installed) with stripe `stripe_found` will
    not do; None if it will."""
    if found is None:
        return "dj-stripe is not installed."
    try:
        release = Version(found)
    except InvalidVersion:
        release = None
    if release is None or release not in SUPPORTED:
        return f"dj-stripe {found} is installed; the bridge supports dj-stripe 2.10 and 2.11."
    if release < Version("2.11") and Version(stripe_found) not in STRIPE_FOR_2_10:
        return (
            f"dj-stripe {found} is installed with stripe {stripe_found}: dj-stripe 2.10 "
            "fails to sync with stripe 15 or later. Install stripe 14 "
            '(pip install "stripe>=14,<15") or dj-stripe 2.11.'
        )
    return None


def check_djstripe_bridge(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The bridge's system checks; its AppConfig registers them, so they run only
    where the bridge is installed."""
    messages: list[CheckMessage] = []
    try:
        found: str | None = version("dj-stripe")
    except PackageNotFoundError:
        found = None
    why = unsupported_version(found, version("stripe"))
    if why is not None:
        messages.append(
            Error(
                f"webhook_worker.contrib.djstripe: {why}",
                hint=INSTALL_HINT,
                id="webhooks_djstripe.E001",
            )
        )
    if not apps.is_installed("djstripe"):
        messages.append(
            Error(
                "webhook_worker.contrib.djstripe is installed without dj-stripe's app: "
                "its models would not exist.",
                hint='Add "djstripe" to INSTALLED_APPS, before "webhook_worker.contrib.djstripe".',
                id="webhooks_djstripe.E002",
            )
        )
    found_problems = problems()
    if not found_problems:
        found_problems = _endpoint_problems()
    messages.extend(
        Error(problem, hint=f"See {SETTING_NAME} in the README.", id="webhooks_djstripe.E003")
        for problem in found_problems
    )
    return messages


def _endpoint_problems() -> list[str]:
    names = bridge_setting("ENDPOINTS")
    if names is None:
        return []
    try:
        endpoints = webhook_settings.ENDPOINTS
    except WebhookConfigurationError:
        return []  # reported by webhook_ingest.E002
    found = []
    for name in names:
        endpoint = endpoints.get(name)
        if endpoint is None:
            found.append(
                f'{SETTING_NAME}["ENDPOINTS"] names {name!r}, which is not in '
                f'STRIPE_WEBHOOKS["ENDPOINTS"] ({", ".join(sorted(endpoints))}).'
            )
        elif endpoint.is_thin:
            found.append(
                f'{SETTING_NAME}["ENDPOINTS"] names {name!r}, a thin endpoint: dj-stripe '
                "processes snapshot events only."
            )
    return found
