"""`make run` end to end: the whole stack starts, serves a signed event, and stops on Ctrl-C.

`python -m devstack run` (what `make run` calls) runs here against a
throwaway database on the suite's Postgres and the suite's broker, with its
state in a temporary directory; `make send` (`devstack attach`) sends it a
signed event from outside and waits until a worker processed it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from devstack.services import free_port, port_open

from .stack import ROOT, Process, wait_until


@pytest.fixture
def scratch_database(test_db_url: str) -> Iterator[str]:
    """URL of a new, empty database on the suite's Postgres, dropped afterwards."""
    name = f"make_run_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(test_db_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(test_db_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(test_db_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_make_run_serves_a_signed_event_and_stops_on_ctrl_c(scratch_database, tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        DATABASE_URL=scratch_database,
        DEVSTACK_STATE=str(tmp_path / "state"),
        WEB_PORT=str(free_port()),
        FLOWER_PORT=str(free_port()),
    )
    web_port, flower_port = int(env["WEB_PORT"]), int(env["FLOWER_PORT"])
    # In its own process group, as in a terminal.
    run = Process("make-run", [sys.executable, "-m", "devstack", "run"], env, tmp_path).start()
    try:
        wait_until(
            lambda: port_open(web_port) and port_open(flower_port),
            timeout=90,
            message=lambda: f"the stack to listen:\n{run.log()}",
        )
        banner = run.log()
        secret = json.loads((tmp_path / "state" / "run" / "attach.json").read_text())["env"][
            "STRIPE_WEBHOOK_SECRET"
        ]
        for line in (
            f"webhook URL     http://127.0.0.1:{web_port}/webhooks/stripe/",
            f"admin           http://127.0.0.1:{web_port}/admin/",
            f"Flower          http://127.0.0.1:{flower_port}/",
            f"signing secret  {secret}",
            "make send",
        ):
            assert line in banner, banner

        send = subprocess.run(
            [sys.executable, "-m", "devstack", "attach", "--"]
            + [sys.executable, "manage.py", "webhooks_send_test", "invoice.paid", "--wait", "60"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert send.returncode == 0, send.stdout + send.stderr + run.log()
        assert ": 200 " in send.stdout
        assert "succeeded after 1 attempt(s)" in send.stdout, send.stdout
    finally:
        # Ctrl-C in the terminal: SIGINT to the whole foreground process group.
        os.killpg(run.pid, signal.SIGINT)
        try:
            wait_until(lambda: not run.alive, timeout=60, message=run.log_tail)
        finally:
            if run.alive:  # it did not stop: the test has failed; clean up
                run.kill()
    wait_until(lambda: not group_alive(run.pid), timeout=30, message="every process to exit")
    assert not port_open(web_port) and not port_open(flower_port)
    assert not (tmp_path / "state" / "run" / "attach.json").exists()
    # With the stack gone, `make send` says so instead of failing obscurely.
    refused = subprocess.run(
        [sys.executable, "-m", "devstack", "attach", "--", "true"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2
    assert "no stack is running" in refused.stderr
