"""Stored events counted per status, type, endpoint, style and source, read from `EventCount`.

The counts are exact: Postgres triggers change them in the transaction that
changes the events (migration 0005), so a reader sees the committed state,
as a `count(*)` would, at the cost of summing a few rows per key instead of
reading the table.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, models, router
from django.db.models import Q, Sum

from .models import EventCount, WebhookEvent

Key = tuple[str, str, str, str, str]  # status, type, endpoint, style, source

# First key of the advisory lock that lets one session fold at a time ("WHK4").
FOLD_LOCK = 0x57484B34


def by_key() -> dict[Key, int]:
    """Events per (status, type, endpoint, style, source), for the keys with any."""
    rows = EventCount.objects.values_list(*EventCount.KEY).annotate(total=Sum("n"))
    return {row[:5]: row[5] for row in rows if row[5]}


def by_status() -> dict[str, int]:
    """Events per status, every status present."""
    counts = dict.fromkeys(WebhookEvent.Status.values, 0)
    rows = EventCount.objects.values_list("status").annotate(total=Sum("n"))
    for status, total in rows:
        counts[status] = counts.get(status, 0) + total
    return counts


def total(*conditions: Q, **lookups: Any) -> int:
    """Events matching conditions on the counted fields (`status="failed"`, `type="..."`)."""
    value = EventCount.objects.filter(*conditions, **lookups).aggregate(total=Sum("n"))["total"]
    return int(value or 0)


def present(field: str, **lookups: Any) -> list[str]:
    """The values of a counted field that stored events have, sorted."""
    rows = (
        EventCount.objects.filter(**lookups)
        .values_list(field)
        .annotate(total=Sum("n"))
        .filter(total__gt=0)
    )
    return sorted(value for value, _ in rows)


def fold_ended_sessions(model: type[models.Model] = EventCount) -> None:
    """Fold the count rows written by database sessions that have ended into session 0.

    Keeps a count table to about one row per key and live session. Rows of a
    live session are never touched (it may hold them); one session folds at a
    time (the others skip). Counts are unchanged: each row's value moves to
    session 0 in one statement. For `EventCount`, and for any table with the
    same shape (`KEY` fields, `session`, `n`).
    """
    alias = router.db_for_write(model)
    connection = connections[alias]
    qn = connection.ops.quote_name
    meta = model._meta
    table = qn(meta.db_table)
    columns = {field.name: str(field.column) for field in meta.concrete_fields}
    key = ", ".join(qn(columns[name]) for name in model.KEY)  # type: ignore[attr-defined]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH lock AS (SELECT pg_try_advisory_xact_lock({FOLD_LOCK}, hashtext(%s)) AS held),
            folded AS (
                DELETE FROM {table} AS c
                WHERE (SELECT held FROM lock) AND c.session <> 0
                  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = c.session)
                RETURNING {key}, n
            )
            INSERT INTO {table} AS c ({key}, session, n)
            SELECT {key}, 0, sum(n) FROM folded GROUP BY {key}
            ON CONFLICT ({key}, session) DO UPDATE SET n = c.n + excluded.n
            """,
            [meta.db_table],
        )
