"""Flower, the live view: each task shows its event type, retries included."""

from __future__ import annotations

import pytest
import requests

from devstack.services import free_port, port_open

from . import stack
from .helpers import make_event, post_signed, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("worker")]


@pytest.fixture
def flower(stack_env, log_dir):
    port = free_port()
    argv = [
        stack.python(), "-m", "celery", "-A", "config", "flower",
        "--address=127.0.0.1", f"--port={port}",
    ]  # fmt: skip
    proc = stack.Process("flower", argv, stack_env, log_dir).start()
    url = f"http://127.0.0.1:{port}"
    wait_until(
        lambda: port_open(port) or not proc.alive,
        timeout=60,
        message=lambda: f"Flower to start\n{proc.log_tail()}",
    )
    assert proc.alive, proc.log_tail()
    yield url
    proc.stop()


def flower_task(url: str, event_id: str) -> dict | None:
    """The task Flower lists for this event id, as its task table shows it."""
    response = requests.get(
        f"{url}/tasks/datatable",
        params={
            "draw": 1,
            "start": 0,
            "length": 100,
            "search[value]": event_id,
            "order[0][column]": 0,
            "order[0][dir]": "desc",
            "columns[0][data]": "received",
        },
        timeout=5,
    )
    rows = [row for row in response.json()["data"] if event_id in row["args"]]
    return rows[0] if rows else None


def test_flower_lists_each_task_under_its_event_type_with_its_retries(client, flower):
    # Flower hears only events sent after it connected: wait until it sees one.
    def warmed_up() -> bool:
        marker = make_event("customer.created")
        post_signed(client, marker)
        return bool(wait_until_or_none(lambda: flower_task(flower, marker["id"])))

    wait_until(warmed_up, timeout=60, interval=0, message="Flower to receive task events")

    event = make_event("invoice.paid", behavior="fail_first")
    post_signed(client, event)

    task = wait_until(
        lambda: (row := flower_task(flower, event["id"])) and row["state"] == "SUCCESS" and row,
        timeout=30,
        message=lambda: f"Flower to show the task succeeded: {flower_task(flower, event['id'])}",
    )
    assert task["name"] == "process_event[invoice.paid]"
    assert task["retries"] == 1
    assert "'trigger': 'retry'" in task["kwargs"]


def wait_until_or_none(predicate, timeout: float = 3):
    try:
        return wait_until(predicate, timeout=timeout, interval=0.1)
    except AssertionError:
        return None
