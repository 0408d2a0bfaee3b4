"""Fixtures: the test database's URL, and real worker / web processes against it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.test import TransactionTestCase

from . import stack
from .stripe_standin import StandIn, StandInServer


@pytest.fixture(scope="session")
def test_db_url(django_db_setup: None, django_db_blocker: object) -> str:
    """URL of the database pytest-django created, for subprocesses."""
    s = connection.settings_dict
    auth = quote(s["USER"] or "")
    if s.get("PASSWORD"):
        auth += ":" + quote(s["PASSWORD"])
    host = s.get("HOST") or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{s['NAME']}"


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("process-logs")


@pytest.fixture(scope="session")
def handler_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """File every test handler call is appended to, by any process."""
    path = tmp_path_factory.mktemp("handlers") / "calls.log"
    path.touch()
    settings.HANDLER_LOG = str(path)
    return path


@pytest.fixture(scope="session")
def stack_env(test_db_url: str, handler_log: Path) -> dict[str, str]:
    """Environment for web/worker subprocesses: same settings, database and queue."""
    env = dict(os.environ)
    env.update(
        # tests.settings, or the module the run was started with (--ds).
        DJANGO_SETTINGS_MODULE=settings.SETTINGS_MODULE,
        DATABASE_URL=test_db_url,
        WEBHOOKS_TEST_QUEUE=settings.CELERY_TASK_DEFAULT_QUEUE,
        WEBHOOKS_HANDLER_LOG=str(handler_log),
        PYTHONPATH=str(stack.ROOT),
        # The system checks ran in the test process already.
        CELERY_SKIP_CHECKS="1",
    )
    return env


@pytest.fixture(scope="session")
def worker(stack_env: dict[str, str], log_dir: Path) -> Iterator[stack.Process]:
    """One real prefork `celery worker` (2 processes) for the whole session."""
    proc = stack.celery_worker(stack_env, log_dir, concurrency=2, name="session")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def web(stack_env: dict[str, str], log_dir: Path) -> Iterator[stack.Gunicorn]:
    """gunicorn serving the project, for tests that need a real HTTP server."""
    proc = stack.gunicorn(stack_env, log_dir)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[StandInServer]:
    """The stand-in for Stripe's API on the port every process of the run points at."""
    server = StandInServer(settings.STRIPE_STANDIN_PORT).start()
    yield server
    server.stop()


@pytest.fixture
def stripe_api(stripe_server: StandInServer) -> Iterator[StandIn]:
    """The stand-in's state, empty at the start of each test."""
    stripe_server.standin.reset()
    yield stripe_server.standin
    stripe_server.standin.reset()


def pytest_configure(config: pytest.Config) -> None:
    # Make the test process's own log lines visible on failures.
    os.environ.setdefault("WEBHOOKS_LOG_LEVEL", "INFO")
    config.addinivalue_line(
        "markers", "server: needs a running Postgres, Redis or process (deselect: make test-fast)"
    )


# Fixtures that reach a server: the database, a broker, real processes.
SERVER_FIXTURES = {
    "db",
    "transactional_db",
    "django_db_setup",
    "test_db_url",
    "stack_env",
    "worker",
    "web",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a server, so `make test-fast` can leave them out."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        cls = getattr(item, "cls", None)
        django_db_case = isinstance(cls, type) and issubclass(cls, TransactionTestCase)
        if fixtures & SERVER_FIXTURES or item.get_closest_marker("django_db") or django_db_case:
            item.add_marker(pytest.mark.server)
