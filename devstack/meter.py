"""What an event costs each host of a cluster: CPU, Postgres statements and WAL, broker commands.

`snapshot()` reads cumulative counters; the difference of two snapshots,
divided by the events processed between them, is the cost per event:

- CPU seconds of every process a host runs (Linux /proc: a process's own
  time, and the time of its children that have exited: gunicorn's and
  Celery's pool processes, Postgres' backends);
- Postgres: statements (pg_stat_statements), transactions committed and WAL
  bytes written;
- Redis: commands processed and its own CPU (INFO).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from .cluster import DATABASE, WEB_HOSTS, WORKER_HOSTS, Cluster

TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found = []
    for task in tasks:
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time of these processes and of all their descendants, living or reaped."""
    total = 0.0
    stack = list(pids)
    while stack:
        pid = stack.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime: fields 14 to 17 of proc(5), 12 to 15 after the name.
        total += sum(int(f) for f in fields[11:15]) / TICKS
        stack += _children(pid)
    return total


def snapshot(c: Cluster, query: Any) -> dict[str, float]:
    """Cumulative counters now; `query(url, sql)` runs SQL on the cluster's database."""
    url = c.db.url(DATABASE)
    values: dict[str, float] = {}
    roles = {"web": WEB_HOSTS, "worker": WORKER_HOSTS, "lb": ("lb",)}
    for role, names in roles.items():
        pids = [p.popen.pid for n in names for p in c.hosts[n].procs if p.popen is not None]
        values[f"cpu {role}"] = cpu_seconds(pids)
    values["cpu postgres"] = cpu_seconds([c.db.process.pid] if c.db.process else [])
    own = os.times()  # this process alone: the load and the checks
    values["cpu driver"] = own.user + own.system
    ((statements, commits, wal, succeeded),) = query(
        url,
        "SELECT (SELECT sum(calls) FROM pg_stat_statements), "
        "(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), "
        "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0'), "
        "(SELECT count(*) FROM webhook_ingest_webhookevent WHERE status = 'succeeded')",
    )
    values.update(
        {
            "pg statements": float(statements or 0),
            "pg commits": float(commits or 0),
            "pg wal bytes": float(wal),
            "events succeeded": float(succeeded),
        }
    )
    client = redis.Redis.from_url(c.broker.url)
    try:
        stats = client.info("commandstats")
        cpu = client.info("cpu")
    finally:
        client.close()
    values["redis commands"] = float(sum(v["calls"] for v in stats.values()))
    values["cpu redis"] = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return values


def per_event(
    before: dict[str, float], after: dict[str, float], deliveries: int
) -> dict[str, float]:
    """Costs per event processed between two snapshots (web and haproxy: per delivery)."""
    events = after["events succeeded"] - before["events succeeded"]
    if events <= 0 or deliveries <= 0:
        return {}
    delta = {k: after[k] - before[k] for k in after}
    return {
        "events measured": events,
        "postgres statements": delta["pg statements"] / events,
        "postgres transactions": delta["pg commits"] / events,
        "postgres WAL bytes": delta["pg wal bytes"] / events,
        "postgres CPU ms": 1000 * delta["cpu postgres"] / events,
        "worker CPU ms": 1000 * delta["cpu worker"] / events,
        "web CPU ms per delivery": 1000 * delta["cpu web"] / deliveries,
        "haproxy CPU ms per delivery": 1000 * delta["cpu lb"] / deliveries,
        "redis commands": delta["redis commands"] / events,
        "redis CPU ms": 1000 * delta["cpu redis"] / events,
        "load generator CPU ms per delivery": 1000 * delta["cpu driver"] / deliveries,
    }
