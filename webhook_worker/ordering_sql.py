"""The statements of `ORDERING = "object"` (ordering.py): an object's lock, its events' turns.

Written in SQL for the same reason as attempt_sql.py: they run around every
attempt of an ordered event, and the ORM would cost a compile each time.
"""

from __future__ import annotations

from functools import cache

from webhook_ingest.models import WebhookEvent

from .attempt_sql import PENDING, PROCESSING, RETRYING, column, table

# An object's lock ("WHK2" and the hash of its id), held by the session
# running an attempt at one of its events.
OBJECT_NAMESPACE = 0x57484B32
OBJECT_LOCK_KEY = f"{OBJECT_NAMESPACE}::int4, hashtext(%(object_id)s::text)"
OBJECT_LOCK_SQL = f"SELECT pg_advisory_lock({OBJECT_LOCK_KEY})"
OBJECT_UNLOCK_SQL = f"SELECT pg_advisory_unlock({OBJECT_LOCK_KEY})"

E = WebhookEvent


@cache
def take_object_sql() -> str:
    """Read an ordered event's object and try its lock, in one statement.

    One row for an unfinished event with an object id on one of
    `%(endpoints)s` (those with ordering on): object id, created, type, and
    whether this session now holds the object's lock; no row otherwise.
    """
    return f"""
        SELECT {column(E, "object_id")}, {column(E, "created")}, {column(E, "type")},
               pg_try_advisory_lock({OBJECT_NAMESPACE}::int4, hashtext({column(E, "object_id")}))
        FROM {table(E)}
        WHERE {column(E, "id")} = %(event_id)s
          AND {column(E, "status")} IN ('{PENDING}', '{PROCESSING}', '{RETRYING}')
          AND {column(E, "object_id")} <> ''
          AND {column(E, "endpoint")} = ANY(%(endpoints)s)
    """


@cache
def earlier_sql() -> str:
    """The object's unfinished events before `%(event_id)s` in (created, id) order:
    id, status, received_at, at most `%(limit)s`."""
    return f"""
        SELECT {column(E, "id")}, {column(E, "status")}, {column(E, "received_at")}
        FROM {table(E)}
        WHERE {column(E, "object_id")} = %(object_id)s
          AND {column(E, "status")} IN ('{PENDING}', '{PROCESSING}', '{RETRYING}')
          AND ({column(E, "created")}, {column(E, "id")}) < (%(created)s, %(event_id)s)
        ORDER BY {column(E, "created")}, {column(E, "id")}
        LIMIT %(limit)s
    """


@cache
def wait_sql() -> str:
    """Leave a pending or retrying event waiting for `%(earlier)s` until `%(due)s`."""
    return f"""
        UPDATE {table(E)} SET
            {column(E, "due_at")} = %(due)s,
            {column(E, "scheduled")} = %(scheduled)s,
            {column(E, "waiting_for")} = %(earlier)s
        WHERE {column(E, "id")} = %(event_id)s
          AND {column(E, "status")} IN ('{PENDING}', '{RETRYING}')
    """


@cache
def release_object_sql() -> str:
    """Make the object's first waiting event due now, and release the object's lock.

    Returns one row: the woken event's id and type (NULL if none waits), and
    whether the lock was held.
    """
    return f"""
        WITH next AS (
            SELECT {column(E, "id")} AS id FROM {table(E)}
            WHERE {column(E, "object_id")} = %(object_id)s
              AND {column(E, "waiting_for")} <> ''
              AND {column(E, "status")} IN ('{PENDING}', '{RETRYING}')
            ORDER BY {column(E, "created")}, {column(E, "id")}
            LIMIT 1
        ),
        woken AS (
            UPDATE {table(E)} AS e SET
                {column(E, "due_at")} = %(now)s,
                {column(E, "scheduled")} = false
            FROM next WHERE e.{column(E, "id")} = next.id
            RETURNING e.{column(E, "id")} AS id, e.{column(E, "type")} AS type
        )
        SELECT (SELECT id FROM woken), (SELECT type FROM woken),
               pg_advisory_unlock({OBJECT_LOCK_KEY})
    """
