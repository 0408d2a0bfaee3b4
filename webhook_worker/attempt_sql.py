"""The SQL of an attempt (claim, finish) and of the event's advisory lock.

A successful attempt costs four round trips: claim (one autocommit
statement that also takes the event's advisory lock), BEGIN, finish (one
statement, after the handlers' own queries, that also releases the lock),
COMMIT. They are written in SQL because the ORM needs a round trip per row
it touches.

The lock's key is encoded here only: as the SQL that takes and releases it,
and as the condition that finds it in `pg_locks` (the sweeper's "no live
worker has this event").
"""

from __future__ import annotations

from functools import cache

from django.db import connections
from django.db.models import Model

from webhook_ingest.models import WebhookEvent

from .models import WebhookAttempt

_Status, _Outcome = WebhookEvent.Status, WebhookAttempt.Outcome
PENDING, PROCESSING, RETRYING = (
    _Status.PENDING.value,
    _Status.PROCESSING.value,
    _Status.RETRYING.value,
)
SUCCEEDED, FAILED = _Status.SUCCEEDED.value, _Status.FAILED.value
RUNNING, LOST = _Outcome.RUNNING.value, _Outcome.LOST.value


def _quote(name: str) -> str:
    return connections[WebhookEvent.objects.db_for_write()].ops.quote_name(name)


def table(model: type[Model]) -> str:
    """The quoted table name of `model`."""
    return _quote(model._meta.db_table)


def column(model: type[Model], name: str) -> str:
    """The quoted column name of `model`'s field `name`."""
    field = model._meta.get_field(name)
    return _quote(field.column)  # type: ignore[union-attr,arg-type]


# First key of the two-key advisory lock on an event: keeps our locks apart
# from any the project takes itself. (ASCII "WHK1".) The second key is the
# hash of the event id.
LOCK_NAMESPACE = 0x57484B31
LOCK_KEY = f"{LOCK_NAMESPACE}::int4, hashtext(%(event_id)s::text)"
LOCK_SQL = f"SELECT pg_advisory_lock({LOCK_KEY})"
UNLOCK_SQL = f"SELECT pg_advisory_unlock({LOCK_KEY})"

# With DEDUPLICATE_TWINS: a snapshot event and its thin twin ("WHK3" and the
# hash of the snapshot event's id), held by the transaction running handlers.
TWIN_LOCK_SQL = f"SELECT pg_advisory_xact_lock({0x57484B33}::int4, hashtext(%(event_id)s::text))"


def lock_free_sql() -> str:
    """SQL true when no session holds the advisory lock of the event row at hand.

    The same key as LOCK_KEY, as `pg_locks` shows a two-int4-key advisory lock.
    """
    id_column = f"{table(WebhookEvent)}.{column(WebhookEvent, 'id')}"
    return (
        "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' "
        f"AND l.classid = {LOCK_NAMESPACE} AND l.objsubid = 2 "
        f"AND l.objid = hashtext({id_column})::oid)"
    )


@cache
def event_fields() -> list[str]:
    """Attribute names of the columns `claim_sql` returns after the lock flag, in order."""
    return [f.attname for f in WebhookEvent._meta.concrete_fields]


# The claim's commit does not wait for the WAL flush: lost in a crash, a claim
# only means the attempt runs again, and the run's commit, later in the same
# WAL, flushes it anyway. One WAL flush per attempt instead of two. Set inside
# the statement (`set_config(..., true)` lasts until its commit), so it holds
# with either parameter binding and with prepared statements; `%(async_commit)s`
# is false inside a caller's transaction, whose commit it would otherwise change.
@cache
def claim_sql() -> str:
    """Take the event's advisory lock and claim the event for an attempt.

    With `%(lock)s` true, first try the session-level advisory lock
    (`pg_try_advisory_lock`, before any row is read: the UPDATE's condition
    on it is a one-time filter); with it false, the caller holds it already.
    Then, in the same statement: an unfinished event (a `retrying` one only once due,
    unless the attempt is manual) becomes `processing` with one more attempt,
    attempts left `running` by a dead worker become `lost`, and the new
    attempt's row is inserted; an event with no stored trace context keeps
    `%(traceparent)s` (the attempt's, "" when not tracing). An event found
    `processing` with no attempts left (its worker died on the last one)
    becomes `failed` instead.
    Returns one row: whether the lock is held, then the event's columns and
    the new attempt's id (all NULL when nothing was claimed). The statement's
    snapshot predates the lock; a row another session changed since is
    re-read by the UPDATE (READ COMMITTED), so a finished attempt is seen.
    """
    E, A = WebhookEvent, WebhookAttempt
    e = lambda name: f"e.{column(E, name)}"  # noqa: E731
    exhausted = f"({e('status')} = '{PROCESSING}' AND {e('attempts')} >= %(max_attempts)s)"
    returning = ", ".join(f"e.{column(E, f.name)}" for f in E._meta.concrete_fields)
    claimed_id, claimed_attempts = "claimed." + column(E, "id"), "claimed." + column(E, "attempts")
    attempt_columns = ", ".join(
        column(A, name)
        for name in (
            "event", "number", "trigger", "outcome", "started_at",
            "error_class", "error_message", "traceback", "worker", "task_id",
            "skipped", "note",
        )
    )  # fmt: skip
    return f"""
        WITH lock AS (
            SELECT CASE WHEN %(lock)s THEN pg_try_advisory_lock({LOCK_KEY}) ELSE true END AS held,
                   CASE WHEN %(async_commit)s
                       THEN set_config('synchronous_commit', 'off', true) END AS async_commit
        ),
        claimed AS (
            UPDATE {table(E)} AS e SET
                {column(E, "status")} = CASE WHEN {exhausted}
                    THEN '{FAILED}' ELSE '{PROCESSING}' END,
                {column(E, "attempts")} = CASE WHEN {exhausted}
                    THEN {e("attempts")} ELSE {e("attempts")} + 1 END,
                {column(E, "due_at")} = %(now)s,
                {column(E, "scheduled")} = false,
                {column(E, "waiting_for")} = '',
                {column(E, "traceparent")} = CASE WHEN {e("traceparent")} = ''
                    THEN %(traceparent)s ELSE {e("traceparent")} END,
                {column(E, "last_error")} = CASE WHEN {exhausted}
                    THEN %(lost_error)s ELSE {e("last_error")} END
            WHERE (SELECT held FROM lock) AND {e("id")} = %(event_id)s
              AND {e("status")} IN ('{PENDING}', '{RETRYING}', '{PROCESSING}')
              AND ({e("status")} <> '{RETRYING}' OR %(manual)s OR {e("due_at")} <= %(not_before)s)
            RETURNING {returning}
        ),
        lost AS (
            UPDATE {table(A)} AS a SET
                {column(A, "outcome")} = '{LOST}',
                {column(A, "finished_at")} = %(now)s,
                {column(A, "error_class")} = %(lost_class)s,
                {column(A, "error_message")} = %(lost_message)s
            FROM claimed
            WHERE a.{column(A, "event")} = {claimed_id} AND a.{column(A, "outcome")} = '{RUNNING}'
        ),
        new_attempt AS (
            INSERT INTO {table(A)} ({attempt_columns})
            SELECT {claimed_id}, {claimed_attempts}, %(trigger)s, '{RUNNING}', %(now)s,
                   '', '', '', %(worker)s, %(task_id)s, '', ''
            FROM claimed WHERE claimed.{column(E, "status")} = '{PROCESSING}'
            RETURNING {column(A, "id")}
        )
        SELECT lock.held, claimed.*, (SELECT {column(A, "id")} FROM new_attempt)
        FROM lock LEFT JOIN claimed ON true
    """


@cache
def finish_sql() -> str:
    """Mark the event `succeeded` and its attempt `%(outcome)s`, if current; release the lock.

    The attempt's outcome is `succeeded`, or the reason no handler ran
    (`superseded`, `twin`); `%(skipped)s` and `%(note)s` say which handlers
    were skipped and why.

    Returns how many attempts it marked: 1 when the attempt is still the
    event's current one, 0 when another attempt took the event over (the
    caller then rolls the handlers' writes back). The lock is released only
    after the event's row is updated, and so locked until this transaction
    ends: a second copy that takes the lock then waits on the row, and sees
    the outcome once this commits or rolls back. A session-level unlock takes
    effect at once, whatever becomes of the transaction.
    """
    E, A = WebhookEvent, WebhookAttempt
    return f"""
        WITH done AS (
            UPDATE {table(E)} SET
                {column(E, "status")} = '{SUCCEEDED}',
                {column(E, "processed_at")} = %(now)s,
                {column(E, "last_error")} = ''
            WHERE {column(E, "id")} = %(event_id)s
              AND {column(E, "status")} = '{PROCESSING}'
              AND {column(E, "attempts")} = %(number)s
            RETURNING 1
        ),
        finished AS (
            UPDATE {table(A)} SET
                {column(A, "outcome")} = %(outcome)s,
                {column(A, "finished_at")} = %(now)s,
                {column(A, "duration_ms")} = %(duration_ms)s,
                {column(A, "skipped")} = %(skipped)s,
                {column(A, "note")} = %(note)s
            WHERE {column(A, "id")} = %(attempt_id)s AND EXISTS (SELECT 1 FROM done)
            RETURNING 1
        )
        -- The aggregate reads every row of `finished` before the unlock runs.
        SELECT marked.n, pg_advisory_unlock({LOCK_KEY})
        FROM (SELECT count(*) AS n FROM finished) AS marked
    """
