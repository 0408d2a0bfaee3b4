"""The STRIPE_WEBHOOKS accessor, the retry policy, and the system checks."""

from __future__ import annotations

import ast
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from celery import Celery
from django.core.management import call_command
from django.test.utils import override_settings
from hypothesis import given
from hypothesis import strategies as st

from config import celery_app
from webhook_ingest import checks as ingest_checks
from webhook_ingest.checks import check_settings
from webhook_ingest.conf import DEFAULTS, webhook_settings
from webhook_ingest.exceptions import WebhookConfigurationError
from webhook_worker.celery import configure_celery
from webhook_worker.checks import check_celery
from webhook_worker.retry import retry_delay

from .stack import ROOT


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_defaults_apply_when_the_setting_is_absent(settings):
    del settings.STRIPE_WEBHOOKS
    webhook_settings.reload()  # deleting a setting sends no setting_changed
    try:
        assert webhook_settings.RETRY_SCHEDULE == tuple(DEFAULTS["RETRY_SCHEDULE"])
        assert webhook_settings.REQUEUE_AFTER == 300
        assert webhook_settings.MAX_BODY_BYTES == 2_097_152
        assert webhook_settings.endpoint("default").tolerance == 300
        assert webhook_settings.max_attempts == 8
    finally:
        settings.STRIPE_WEBHOOKS = {}
        del settings.STRIPE_WEBHOOKS


@pytest.fixture(autouse=True)
def fresh_settings_cache() -> Iterator[None]:
    webhook_settings.reload()
    yield
    webhook_settings.reload()


def test_override_settings_is_seen_immediately():
    assert webhook_settings.max_attempts == 4
    with override_settings(STRIPE_WEBHOOKS={"RETRY_SCHEDULE": [1, 2]}):
        assert webhook_settings.max_attempts == 3
    assert webhook_settings.max_attempts == 4


def test_secrets_may_be_a_comma_separated_string():
    with override_settings(
        STRIPE_WEBHOOKS={"ENDPOINTS": {"default": {"SECRETS": "whsec_a, whsec_b,"}}}
    ):
        assert webhook_settings.endpoint("default").secrets == ("whsec_a", "whsec_b")


@pytest.mark.parametrize(
    "value, message",
    [
        ({"RETRY_SCHEDULE": "10,60"}, "RETRY_SCHEDULE"),
        ({"RETRY_SCHEDULE": [10, -1]}, "RETRY_SCHEDULE"),
        ({"RETRY_JITTER": 1.5}, "RETRY_JITTER"),
        ({"ENDPOINTS": {"default": {"SECRET": ["whsec_typo"]}}}, "unknown keys"),
        ({"ENDPOINTS": {"a/b": {"SECRETS": []}}}, "endpoint names"),
        ({"ENDPOINTS": {"default": {"SECRETS": ["x"], "TOLERANCE": 0}}}, "TOLERANCE"),
        ({"RETRY_SCHEDUL": [1]}, "unknown keys"),
        ({"ENQUEUE_IN_BACKGROUND": "yes"}, "ENQUEUE_IN_BACKGROUND"),
        ({"ENDPOINTS": {"t": {"SECRETS": ["x"], "STYLE": "v2"}}}, "STYLE"),
        ({"ENDPOINTS": {"t": {"SECRETS": ["x"], "API_BASE": "api.stripe.com"}}}, "API_BASE"),
        ({"ENDPOINTS": {"t": {"SECRETS": ["x"], "ORDERING": "created"}}}, "ORDERING"),
        ({"ENDPOINTS": {"t": {"SECRETS": ["x"], "RECONCILE_EVERY": 5}}}, "RECONCILE_EVERY"),
        ({"API_KEY": 42}, "API_KEY"),
        ({"ORDERING": True}, "ORDERING"),
        ({"ORDERING_MAX_WAIT": -1}, "ORDERING_MAX_WAIT"),
        ({"SKIP_SUPERSEDED": 1}, "SKIP_SUPERSEDED"),
        ({"DEDUPLICATE_TWINS": "on"}, "DEDUPLICATE_TWINS"),
    ],
)
def test_malformed_settings_name_the_setting(value, message):
    with override_settings(STRIPE_WEBHOOKS=value):
        with pytest.raises(WebhookConfigurationError, match=message) as info:
            for key in DEFAULTS:
                getattr(webhook_settings, key)
        assert "STRIPE_WEBHOOKS" in str(info.value)
        assert ids(check_settings()) == ["webhook_ingest.E002"]


def test_missing_secret_is_an_error_outside_debug():
    conf = {"ENDPOINTS": {"default": {"SECRETS": []}, "ok": {"SECRETS": ["whsec_x"]}}}
    with override_settings(STRIPE_WEBHOOKS=conf, DEBUG=False):
        messages = check_settings()
    assert ids(messages) == ["webhook_ingest.E001"]
    assert "'default'" in messages[0].msg
    assert "STRIPE_WEBHOOK_SECRET" in messages[0].hint


def test_endpoint_settings_fall_back_to_the_top_level_then_to_stripe_api_key():
    conf = {
        "API_KEY": "sk_test_top",
        "API_BASE": "https://stripe.internal/",
        "ORDERING": "object",
        "ENDPOINTS": {
            "a": {"SECRETS": ["whsec_a"]},
            "b": {
                "SECRETS": ["whsec_b"],
                "STYLE": "thin",
                "API_KEY": "sk_test_b",
                "ORDERING": None,
            },
        },
    }
    with override_settings(STRIPE_WEBHOOKS=conf, STRIPE_API_KEY="sk_test_django"):
        a, b = webhook_settings.endpoint("a"), webhook_settings.endpoint("b")
        assert (a.style, a.api_key, a.api_base, a.ordering) == (
            "snapshot",
            "sk_test_top",
            "https://stripe.internal",
            "object",
        )
        assert (b.style, b.api_key, b.ordering) == ("thin", "sk_test_b", None)
    with override_settings(STRIPE_WEBHOOKS={"ENDPOINTS": conf["ENDPOINTS"]}, STRIPE_API_KEY="sk_x"):
        assert webhook_settings.endpoint("a").api_key == "sk_x"
        assert webhook_settings.endpoint("a").api_base is None


def test_a_thin_endpoint_needs_a_stripe_library_that_parses_thin_events(monkeypatch):
    conf = {"ENDPOINTS": {"thin": {"SECRETS": ["whsec_x"], "STYLE": "thin"}}}
    with override_settings(STRIPE_WEBHOOKS=conf):
        assert check_settings() == []
        monkeypatch.setattr(ingest_checks, "supports_thin_events", lambda: False)
        [error] = check_settings()
    assert error.id == "webhook_ingest.E004" and "stripe>=13" in error.hint


def test_a_thin_or_reconciled_endpoint_without_an_api_key_is_warned():
    conf = {
        "ENDPOINTS": {
            "thin": {"SECRETS": ["whsec_x"], "STYLE": "thin"},
            "default": {"SECRETS": ["whsec_y"], "RECONCILE_EVERY": 600},
        }
    }
    with override_settings(STRIPE_WEBHOOKS=conf, STRIPE_API_KEY=""):
        messages = check_settings()
    assert ids(messages) == ["webhook_ingest.W003", "webhook_ingest.W003"]
    assert "fetch related objects" in messages[0].msg and "reconciled" in messages[1].msg


def test_missing_secret_is_a_warning_in_debug():
    with override_settings(STRIPE_WEBHOOKS={"ENDPOINTS": {"default": {"SECRETS": []}}}, DEBUG=True):
        assert ids(check_settings()) == ["webhook_ingest.W001"]


@contextmanager
def project_app(**conf: Any) -> Iterator[Celery]:
    """A project's Celery app configured with `conf` and `configure_celery`, current meanwhile."""
    app = Celery("project", set_as_current=False)
    app.config_from_object(conf)
    configure_celery(app)
    app.set_current()
    try:
        yield app
    finally:
        celery_app.set_current()


def test_any_retry_schedule_passes_on_redis_and_rabbitmq(monkeypatch):
    """Long retries wait in the database: no schedule depends on Redis' visibility
    timeout or RabbitMQ's consumer_timeout, so the default one (1 h delays) and a
    day-long one pass against both brokers' defaults."""
    for url in ("redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672//"):
        # Celery reads the broker URL from the environment before its own settings.
        monkeypatch.setenv("CELERY_BROKER_URL", url)
        for schedule in (DEFAULTS["RETRY_SCHEDULE"], [60, 3600, 86400]):
            with project_app(), override_settings(STRIPE_WEBHOOKS={"RETRY_SCHEDULE": schedule}):
                assert check_celery() == []


def test_max_broker_delay_not_below_the_visibility_timeout_is_an_error():
    options = {"visibility_timeout": 20}
    with project_app(broker_transport_options=options):
        with override_settings(STRIPE_WEBHOOKS={"MAX_BROKER_DELAY": 30}):
            messages = check_celery()
    assert ids(messages) == ["webhook_worker.E004"]
    assert "30s" in messages[0].msg and "20s" in messages[0].msg


def test_max_broker_delay_is_bounded():
    with override_settings(STRIPE_WEBHOOKS={"MAX_BROKER_DELAY": 3600}):
        with pytest.raises(WebhookConfigurationError, match="MAX_BROKER_DELAY must be at most"):
            _ = webhook_settings.MAX_BROKER_DELAY


def test_no_celery_app_for_the_project_is_an_error():
    """Without the project's Celery app, messages would go to Celery's fallback app."""
    fallback = Celery("default", fixups=[], set_as_current=False)
    fallback.set_current()
    try:
        messages = check_celery()
    finally:
        celery_app.set_current()
    assert ids(messages) == ["webhook_worker.E001"]
    assert "configure_celery" in messages[0].hint


def test_sweeper_missing_from_beat_is_a_warning():
    app = Celery("project", set_as_current=False)  # no configure_celery(app)
    app.set_current()
    try:
        messages = check_celery()
    finally:
        celery_app.set_current()
    assert ids(messages) == ["webhook_worker.W002"]
    assert "webhook_worker.requeue_stale" in messages[0].msg


def test_reconciliation_without_its_beat_entry_is_warned():
    conf = {"ENDPOINTS": {"default": {"SECRETS": ["whsec_y"], "RECONCILE_EVERY": 600}}}
    with override_settings(STRIPE_WEBHOOKS=conf):
        with project_app():
            assert check_celery() == []
        with project_app() as app:
            app.conf.beat_schedule = {
                name: entry
                for name, entry in app.conf.beat_schedule.items()
                if entry["task"] != "webhook_worker.reconcile"
            }
            messages = check_celery()
    assert ids(messages) == ["webhook_worker.W003"]
    assert "webhook_worker.reconcile" in messages[0].msg


def test_a_worker_that_refuses_json_is_an_error():
    with project_app(accept_content=["pickle"]):
        assert ids(check_celery()) == ["webhook_worker.E003"]


def test_an_in_process_broker_outside_debug_is_an_error(monkeypatch):
    monkeypatch.setenv("CELERY_BROKER_URL", "memory://")
    assert ids(check_celery()) == ["webhook_worker.E002"]
    with override_settings(DEBUG=True):
        assert check_celery() == []


def test_configure_celery_changes_celerys_defaults_not_the_projects_settings():
    app = Celery("example", set_as_current=False)
    configure_celery(app, sweep_interval=30)
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.get("CELERY_DB_REUSE_MAX") == 1000
    schedule = {e["task"]: e["schedule"] for e in app.conf.beat_schedule.values()}
    assert schedule == {"webhook_worker.requeue_stale": 30, "webhook_worker.reconcile": 60}

    own = Celery("example", set_as_current=False)
    own.config_from_object({"worker_prefetch_multiplier": 8, "CELERY_DB_REUSE_MAX": 50})
    configure_celery(own)
    assert own.conf.worker_prefetch_multiplier == 8
    assert own.conf.get("CELERY_DB_REUSE_MAX") == 50


def test_reference_project_settings_pass():
    with override_settings(STRIPE_WEBHOOKS={}):
        assert check_celery() == []


def test_eager_mode_outside_debug_is_warned():
    celery_app.conf.task_always_eager = True
    try:
        with override_settings(DEBUG=False):
            assert "webhook_worker.W001" in ids(check_celery())
    finally:
        celery_app.conf.task_always_eager = False


def test_the_test_projects_own_checks_are_clean():
    call_command("check", fail_level="WARNING")


def test_retry_delays_follow_the_schedule_and_stop():
    schedule = (10.0, 60.0, 300.0)
    rng = random.Random(4)
    for attempt, base in enumerate(schedule, start=1):
        delay = retry_delay(attempt, schedule, 0.2, rng)
        assert delay is not None and base * 0.8 <= delay <= base * 1.2
    assert retry_delay(4, schedule, 0.2, rng) is None
    assert retry_delay(0, schedule, 0.2, rng) is None


@given(
    schedule=st.lists(st.floats(0, 10_000), min_size=1, max_size=10),
    jitter=st.floats(0, 0.99),
    seed=st.integers(),
)
def test_property_jitter_stays_within_bounds(schedule, jitter, seed):
    rng = random.Random(seed)
    for attempt, base in enumerate(schedule, start=1):
        delay = retry_delay(attempt, tuple(schedule), jitter, rng)
        assert delay is not None
        assert base * (1 - jitter) - 1e-6 <= delay <= base * (1 + jitter) + 1e-6


def reference_database_options(database_url: str) -> dict[str, object]:
    """OPTIONS of the reference settings' database, as built from this DATABASE_URL."""
    code = "import config.settings as s; print(repr(s.DATABASES['default']['OPTIONS']))"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
        "DJANGO_SECRET_KEY": "x",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    options: dict[str, object] = ast.literal_eval(out)
    return options


@pytest.mark.parametrize(
    ("query", "binding", "threshold"),
    [
        ("", True, 5),
        ("?prepare_threshold=none", True, None),
        ("?prepare_threshold=1&server_side_binding=false", False, 1),
    ],
)
def test_prepared_statements_are_on_by_default_and_can_be_turned_off_from_the_url(
    query, binding, threshold
):
    """Behind PgBouncer's transaction pooling (before 1.21) prepared statements must be off."""
    options = reference_database_options(f"postgres://u:p@db.example:5432/app{query}")
    assert options["server_side_binding"] is binding
    assert options["prepare_threshold"] == threshold
    assert options["connect_timeout"] == 5


NO_CELERY_APP = """
import django
from django.conf import settings

settings.configure(
    INSTALLED_APPS=[
        "django.contrib.contenttypes", "django.contrib.auth", "webhook_ingest", "webhook_worker",
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "unused"}},
    STRIPE_WEBHOOKS={"ENDPOINTS": {"default": {"SECRETS": ["whsec_x"]}}},
)
django.setup()
from django.core.management import call_command
from django.core.management.base import SystemCheckError

try:
    call_command("check")
except SystemCheckError as exc:
    print(exc)
"""


def test_a_project_that_never_loads_its_celery_app_fails_the_check():
    """Celery's real fallback app, as a project without celery.py (or without the
    import in its __init__.py) gets: what E001 recognises, checked against Celery itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", NO_CELERY_APP],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "webhook_worker.E001" in out
    assert "No Celery app is loaded for this Django project" in out
