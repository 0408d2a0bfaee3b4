"""Settings for bench/djstripe.py: the bridge's test settings without the suite's own apps
(their handlers and receivers), so both sides run dj-stripe's sync alone."""

from __future__ import annotations

from tests.settings_djstripe import *  # noqa: F403
from tests.settings_djstripe import INSTALLED_APPS

INSTALLED_APPS = [app for app in INSTALLED_APPS if not app.startswith("tests.")]
