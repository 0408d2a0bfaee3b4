"""The cluster scenario (devstack/scenario.py) at CI's size: several hosts on one machine.

Two web hosts behind haproxy, three worker hosts each running beat's
schedule (`celery worker -B`), a database host and a broker host, each a
network namespace. 800 deliveries (10 % duplicates, 20 % of first attempts
failing) while a worker host's link goes down mid-handler, a web host is
killed, a worker host is killed with its beat, the broker restarts empty and
the database restarts. `make cluster` is the same with 20,000.
"""

from __future__ import annotations

import os

import pytest

from devstack import scenario
from devstack.cluster import Timing, tools_missing

pytestmark = [pytest.mark.server, pytest.mark.slow]

EVENTS = int(os.environ.get("CLUSTER_TEST_EVENTS", "800"))


def test_every_acknowledged_event_succeeds_once_while_hosts_fail():
    reason = tools_missing()
    if reason:
        pytest.skip(f"no cluster on this machine: {reason}")
    # Short windows, so that each fault's recovery takes seconds.
    timing = Timing(requeue_after=3, sweep_interval=1, keepalive=(1, 1, 2))
    plan = scenario.Plan(events=EVENTS, rate=20, clients=8)
    report = scenario.run(plan, timing)
    print("\n" + report.text())
    # Every acknowledged event succeeded with its handlers' rows written
    # once; the attempts that the cut link and the killed worker host were
    # running started again within the sweeper's window.
    assert not report.problems, report.text()
    assert [f.name for f in report.faults] == [
        "w1's link down mid-handler, then back",
        "web1 killed, started again",
        "w2 killed with its beat, started again",
        "broker restarted empty",
        "database restarted",
    ]
    assert report.faults[0].interrupted, "the link went down while no handler ran on w1"
    assert report.faults[2].interrupted, "w2 was killed while no handler ran on it"
    unique = EVENTS - int(EVENTS * plan.duplicate_share)
    assert report.figures["events acknowledged"] >= unique
