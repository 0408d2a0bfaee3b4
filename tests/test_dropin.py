"""A brand-new Django project, made as a user makes it: the wheel, `django-admin
startproject shop`, and the README's "Use it in your project" snippets, taken
from README.md itself so that the docs cannot drift from what is tested.

Then `check`, `migrate`, a real worker, beat and gunicorn, a signed delivery,
and the handler's row in the project's own table; on Redis, and on RabbitMQ
where one is reachable.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest
import requests
from django.conf import settings

from devstack.services import free_port, port_open
from webhook_worker.stripe_events import build_event, encode_event, post_event

from . import stack
from .stack import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.server]

README = stack.ROOT / "README.md"
SNIPPET = re.compile(
    r"<!-- dropin: (?P<path>\S+) (?P<how>append|create) -->\s*```python\n(?P<code>.*?)```",
    re.S,
)
SECRET = "whsec_dropin_" + uuid.uuid4().hex
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

# The project's own app, as a user writes it: not from the README, which
# shows a handler but not the app around it.
ORDERS_MODELS = """
from django.db import models


class PaidInvoice(models.Model):
    invoice = models.CharField(max_length=255, unique=True)
    event = models.CharField(max_length=255)
"""
ORDERS_WEBHOOKS = """
from webhook_worker import webhooks

from .models import PaidInvoice


@webhooks.handler("invoice.paid")
def record_paid_invoice(event, **kwargs):
    PaidInvoice.objects.create(invoice=event.data["object"]["id"], event=event.id)
"""


def readme_snippets() -> list[tuple[str, str, str]]:
    """(path, append|create, code) for each marked snippet, in README order."""
    found = [(m["path"], m["how"], m["code"]) for m in SNIPPET.finditer(README.read_text())]
    assert {path for path, _, _ in found} >= {
        "shop/settings.py",
        "shop/urls.py",
        "shop/celery.py",
        "shop/__init__.py",
    }, found
    return found


def rabbitmq_reachable() -> bool:
    parsed = urlparse(RABBITMQ_URL)
    try:
        socket.create_connection((parsed.hostname, parsed.port or 5672), 1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, unpacked into a folder of its own."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(stack.ROOT)],
        check=True,
        timeout=300,
    )
    [built] = out.glob("django_queued_webhooks-*.whl")
    site = out / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), built],
        check=True,
        timeout=300,
    )
    return site


@pytest.fixture
def database(test_db_url: str) -> Iterator[dict[str, str]]:
    """A database of the project's own on the suite's Postgres server."""
    name = f"dropin_{uuid.uuid4().hex[:10]}"
    server = urlparse(test_db_url)
    admin_url = server._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield {
        "NAME": name,
        "USER": server.username or "",
        "PASSWORD": server.password or "",
        "HOST": server.hostname or "127.0.0.1",
        "PORT": str(server.port or 5432),
    }
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_project(root: Path, database: dict[str, str], broker_url: str, queue: str) -> Path:
    """`startproject shop`, the README's snippets, the project's own app and machine."""
    clean = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    root.mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "shop", str(root)],
        check=True,
        timeout=60,
        env=clean,
    )
    for path, how, code in readme_snippets():
        target = root / path
        if how == "create":
            target.write_text(code)
        else:
            target.write_text(target.read_text() + "\n" + code)
    orders = root / "orders"
    subprocess.run(
        [sys.executable, "-m", "django", "startapp", "orders"],
        check=True,
        timeout=60,
        cwd=root,
        env=clean,
    )
    (orders / "models.py").write_text(ORDERS_MODELS)
    (orders / "webhooks.py").write_text(ORDERS_WEBHOOKS)
    # What differs from one machine to another: where the servers are.
    settings_py = root / "shop" / "settings.py"
    settings_py.write_text(
        settings_py.read_text()
        + f"""
# --- this machine -----------------------------------------------------------
INSTALLED_APPS += ["orders"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.postgresql", **{database!r}}}}}
CELERY_BROKER_URL = {broker_url!r}
CELERY_TASK_DEFAULT_QUEUE = {queue!r}
"""
    )
    return root


def project_env(wheel: Path, project: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "CELERY_", "WEBHOOKS_", "DATABASE_URL"))
    }
    env.update(
        PYTHONPATH=os.pathsep.join([str(wheel), str(project)]),
        DJANGO_SETTINGS_MODULE="shop.settings",
        STRIPE_WEBHOOK_SECRET=SECRET,
    )
    return env


def manage(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def paid_invoices(database: dict[str, str]) -> list[tuple[str, str]]:
    with psycopg.connect(
        dbname=database["NAME"],
        user=database["USER"],
        password=database["PASSWORD"],
        host=database["HOST"],
        port=database["PORT"],
    ) as conn:
        return list(conn.execute("SELECT invoice, event FROM orders_paidinvoice").fetchall())


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_new_project_from_the_readme_processes_a_signed_event(
    broker: str, wheel: Path, database: dict[str, str], tmp_path: Path, log_dir: Path
):
    if broker == "rabbitmq" and not rabbitmq_reachable():
        pytest.skip(f"no RabbitMQ at {RABBITMQ_URL}")
    broker_url = settings.CELERY_BROKER_URL if broker == "redis" else RABBITMQ_URL
    queue = f"dropin-{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path / "shop", database, broker_url, queue)
    env = project_env(wheel, project)

    # The library comes from the wheel, not from this checkout.
    def project_python(code: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    where = project_python("import webhook_worker; print(webhook_worker.__file__)")
    assert where.startswith(str(wheel)), where

    checked = manage(project, env, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "webhook" not in checked.stdout + checked.stderr  # no warning of ours either
    made = manage(project, env, "makemigrations", "orders")
    assert made.returncode == 0, made.stdout + made.stderr
    migrated = manage(project, env, "migrate", "--no-input")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    # Beat's schedule has the sweeper and the reconciliation check under the names the README gives.
    schedule = project_python(
        "import json; from shop.celery import app; "
        "print(json.dumps([e['task'] for e in app.conf.beat_schedule.values()]))"
    )
    assert json.loads(schedule) == ["webhook_worker.requeue_stale", "webhook_worker.reconcile"]

    celery = [sys.executable, "-m", "celery", "-A", "shop"]
    port = free_port()
    procs = [
        stack.Process(
            "dropin-worker",
            [*celery, "worker", "--concurrency=1", "--loglevel=INFO"],
            env,
            log_dir,
            cwd=project,
        ).start(),
        stack.Process(
            "dropin-beat",
            [*celery, "beat", f"--schedule={tmp_path / 'beat-schedule'}"],
            env,
            log_dir,
            cwd=project,
        ).start(),
        stack.Process(
            "dropin-web",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "shop.wsgi:application",
                f"--bind=127.0.0.1:{port}",
                "--worker-class=gthread",
                "--threads=8",
            ],  # fmt: skip
            env,
            log_dir,
            cwd=project,
        ).start(),
    ]
    try:
        wait_until(lambda: port_open(port), timeout=60, message=lambda: procs[2].log_tail())
        event = build_event("invoice.paid")
        status, body = post_event(
            f"http://127.0.0.1:{port}/webhooks/stripe/", encode_event(event), SECRET
        )
        assert (status, body["id"]) == (200, event["id"]), body

        rows = wait_until(
            lambda: paid_invoices(database),
            timeout=90,
            message=lambda: "the handler's row\n" + "\n".join(p.log_tail(30) for p in procs),
        )
        assert rows == [(event["data"]["object"]["id"], event["id"])]

        health = requests.get(f"http://127.0.0.1:{port}/webhooks/health/", timeout=10)
        assert health.status_code == 200, health.text
        assert json.loads(health.text)["events"]["succeeded"] == 1
        # The worker runs the sweeper beat sends: the task is registered under that name.
        assert "webhook_worker.requeue_stale" in procs[0].log()
        assert all(p.alive for p in procs), "\n".join(p.log_tail(30) for p in procs)
    finally:
        for proc in procs:
            proc.stop()
