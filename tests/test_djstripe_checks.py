"""The dj-stripe bridge's system checks and setting, which need no dj-stripe to run."""

from __future__ import annotations

import pytest
from django.test import override_settings

from webhook_worker.contrib.djstripe import checks
from webhook_worker.contrib.djstripe.conf import bridge_setting, problems


@pytest.mark.parametrize(
    "found, stripe",
    [("2.10.0", "14.4.2"), ("2.10.4", "12.0.0"), ("2.11.0", "15.6.2"), ("2.11.3", "15.0.1")],
)
def test_dj_stripe_2_10_and_2_11_are_supported(found, stripe):
    assert checks.unsupported_version(found, stripe) is None


@pytest.mark.parametrize("found", ["2.9.2", "2.8.4", "2.12.0", "3.0.0", "not-a-version"])
def test_another_dj_stripe_is_named_as_unsupported(found):
    assert checks.unsupported_version(found, "15.6.2") == (
        f"dj-stripe {found} is installed; the bridge supports dj-stripe 2.10 and 2.11."
    )


def test_dj_stripe_2_10_with_stripe_15_is_named_with_the_fix():
    why = checks.unsupported_version("2.10.4", "15.6.2")
    assert why is not None
    assert "dj-stripe 2.10.4 is installed with stripe 15.6.2" in why
    assert 'pip install "stripe>=14,<15"' in why


def test_without_dj_stripe_the_checks_say_what_is_missing(monkeypatch):
    monkeypatch.setattr(checks, "version", {"dj-stripe": "2.9.2", "stripe": "15.6.2"}.get)
    monkeypatch.setattr(checks.apps, "is_installed", lambda label: False)
    messages = {m.id: m for m in checks.check_djstripe_bridge()}
    assert "dj-stripe 2.9.2 is installed" in messages["webhooks_djstripe.E001"].msg
    assert "django-queued-webhooks[djstripe]" in messages["webhooks_djstripe.E001"].hint
    assert '"djstripe"' in messages["webhooks_djstripe.E002"].hint


def test_the_setting_defaults_to_every_snapshot_endpoint_and_dj_stripes_key():
    assert bridge_setting("ENDPOINTS") is None
    assert bridge_setting("API_KEY") is None
    assert problems() == []


@pytest.mark.parametrize(
    "value, message",
    [
        ({"ENDPOINT": ["default"]}, "unknown keys ['ENDPOINT']"),
        ({"ENDPOINTS": "default"}, '["ENDPOINTS"] is a list of endpoint names or None'),
        ({"API_KEY": ""}, '["API_KEY"] is a secret key'),
        (["default"], "must be a dict"),
    ],
)
def test_a_malformed_setting_is_an_error_naming_it(value, message):
    with override_settings(STRIPE_WEBHOOKS_DJSTRIPE=value):
        found = [m for m in checks.check_djstripe_bridge() if m.id == "webhooks_djstripe.E003"]
    assert len(found) == 1
    assert message in found[0].msg
    assert "STRIPE_WEBHOOKS_DJSTRIPE" in found[0].msg


@pytest.mark.parametrize(
    "name, message",
    [("nowhere", "'nowhere', which is not in"), ("thin", "'thin', a thin endpoint")],
)
def test_an_endpoint_the_bridge_cannot_sync_is_an_error(name, message):
    with override_settings(STRIPE_WEBHOOKS_DJSTRIPE={"ENDPOINTS": ["default", name]}):
        found = [m for m in checks.check_djstripe_bridge() if m.id == "webhooks_djstripe.E003"]
    assert [message in m.msg for m in found] == [True]
