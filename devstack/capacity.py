"""Capacity on paper: the measured cost of an event (devstack/meter.py) turned into sizes.

`tables(per_event, figures)` gives two Markdown tables for docs/scaling.md:
events/s per core of each role, and what 1×, 10× and 100× a busy account's
load need. The arithmetic, so that a reader can redo it with their own
figures:

    cores of a role     = peak events/s × CPU seconds per event / UTILISATION
    worker processes    = max(worker cores, peak × attempt seconds / UTILISATION)
    WAL per second      = peak × WAL bytes per event
    stored, 30 days     = events a month × stored bytes per event
"""

from __future__ import annotations

import math
from typing import Any

# Plan for busy hosts at this share of their cores, not all of them.
UTILISATION = 0.65
# Deliveries per event: Stripe sends some twice (the cluster sends 10 %).
DELIVERIES_PER_EVENT = 1 / 0.9
# (name, events a month, peak events/s). "Today" is a busy account: 2,000,000
# events a month (0.8/s on average) arriving in bursts, such as a billing
# run, of up to 50/s.
LOADS = (("today", 2_000_000, 50), ("10×", 20_000_000, 500), ("100×", 200_000_000, 5_000))
WEB_THREADS = 32  # per gunicorn process, as the README recommends


def per_core(per_event: dict[str, float]) -> list[tuple[str, float, float]]:
    """(role, CPU ms per event, events/s one core sustains)."""
    web = per_event["web CPU ms per delivery"] * DELIVERIES_PER_EVENT
    rows = [
        ("web (gunicorn, Django)", web),
        ("worker (Celery, handlers)", per_event["worker CPU ms"]),
        ("Postgres", per_event["postgres CPU ms"]),
        ("Redis", per_event["redis CPU ms"]),
        ("haproxy", per_event["haproxy CPU ms per delivery"] * DELIVERIES_PER_EVENT),
    ]
    return [(role, ms, 1000 / ms if ms else math.inf) for role, ms in rows]


def tables(per_event: dict[str, float], figures: dict[str, Any]) -> str:
    if not per_event:
        return "(no cost was measured in this run)"
    lines = [
        "| role | CPU ms per event | events/s per core |",
        "|---|---:|---:|",
    ]
    lines += [f"| {role} | {ms:.2f} | {rate:,.0f} |" for role, ms, rate in per_core(per_event)]
    cost = {role: ms for role, ms, _ in per_core(per_event)}
    attempt_s = float(figures.get("median succeeded attempt, ms", 0)) / 1000
    stored = float(figures.get("stored bytes per event (events, attempts, indexes)", 0))
    lines += [
        "",
        "| load | peak events/s | web cores | worker cores | worker processes | Postgres cores "
        "| Postgres transactions/s | WAL MB/s | Postgres connections, direct | with PgBouncer "
        "(session mode) | stored, 30 days |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, monthly, peak in LOADS:
        web = _cores(peak, cost["web (gunicorn, Django)"])
        workers = _cores(peak, cost["worker (Celery, handlers)"])
        processes = max(workers, math.ceil(peak * attempt_s / UTILISATION))
        postgres = _cores(peak, cost["Postgres"])
        # Without a pooler every web thread keeps a connection (CONN_MAX_AGE);
        # behind PgBouncer the web connects per request and shares a small
        # pool, while each worker process keeps its session (the event's
        # advisory lock lives in it).
        direct = web * WEB_THREADS + processes + 5
        pooled = processes + 2 * postgres + 5
        lines.append(
            f"| {name} ({monthly / 1e6:g} M events a month) | {peak:,} | {web} | {workers} "
            f"| {processes} | {postgres} "
            f"| {peak * per_event['postgres transactions']:,.0f} "
            f"| {peak * per_event['postgres WAL bytes'] / 1e6:.1f} | {direct:,} | {pooled:,} "
            f"| {monthly * stored / 1e9:,.1f} GB |"
        )
    return "\n".join(lines)


def _cores(peak: float, ms_per_event: float) -> int:
    return max(1, math.ceil(peak * ms_per_event / 1000 / UTILISATION))
