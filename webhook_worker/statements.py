"""The worker's hot-path statements, each a single round trip.

A successful attempt costs six round trips: take the advisory lock, claim
(one autocommit statement), BEGIN, finish (one statement, after the
handlers' own queries), COMMIT, release the lock. They are written in SQL
because the ORM needs a round trip per row it touches, and on a busy worker
each round trip costs about as much CPU as a handler that does little.
"""

from __future__ import annotations

from functools import cache

from django.db import connection
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


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _col(model: type[Model], name: str) -> str:
    field = model._meta.get_field(name)
    return connection.ops.quote_name(field.column)  # type: ignore[union-attr,arg-type]


def event_fields() -> list[str]:
    """Attribute names of the columns `claim_sql` returns, in order."""
    return [f.attname for f in WebhookEvent._meta.concrete_fields]


# Appended to the claim where the driver sends it as one query (client-side
# binding, Django's default): the two statements then form one implicit
# transaction, and its commit does not wait for the WAL flush. Lost in a
# crash, a claim only means the attempt runs again; the run's commit, later
# in the same WAL, flushes it anyway. One WAL flush per attempt instead of two.
ASYNC_COMMIT = ";\nSET LOCAL synchronous_commit TO off"


@cache
def claim_sql() -> str:
    """Claim an event for an attempt, or return no row.

    In one statement: an unfinished event (a `retrying` one only once due,
    unless the attempt is manual) becomes `processing` with one more attempt,
    attempts left `running` by a dead worker become `lost`, and the new
    attempt's row is inserted. An event found `processing` with no attempts
    left (its worker died on the last one) becomes `failed` instead.
    Returns the event's columns and the new attempt's id.
    """
    E, A = WebhookEvent, WebhookAttempt
    e = lambda name: f"e.{_col(E, name)}"  # noqa: E731
    exhausted = f"({e('status')} = '{PROCESSING}' AND {e('attempts')} >= %(max_attempts)s)"
    returning = ", ".join(f"e.{_col(E, f.name)}" for f in E._meta.concrete_fields)
    claimed_id, claimed_attempts = "claimed." + _col(E, "id"), "claimed." + _col(E, "attempts")
    attempt_columns = ", ".join(
        _col(A, name)
        for name in (
            "event", "number", "trigger", "outcome", "started_at",
            "error_class", "error_message", "traceback", "worker", "task_id",
        )
    )  # fmt: skip
    return f"""
        WITH claimed AS (
            UPDATE {_table(E)} AS e SET
                {_col(E, "status")} = CASE WHEN {exhausted}
                    THEN '{FAILED}' ELSE '{PROCESSING}' END,
                {_col(E, "attempts")} = CASE WHEN {exhausted}
                    THEN {e("attempts")} ELSE {e("attempts")} + 1 END,
                {_col(E, "due_at")} = %(now)s,
                {_col(E, "last_error")} = CASE WHEN {exhausted}
                    THEN %(lost_error)s ELSE {e("last_error")} END
            WHERE {e("id")} = %(event_id)s
              AND {e("status")} IN ('{PENDING}', '{RETRYING}', '{PROCESSING}')
              AND ({e("status")} <> '{RETRYING}' OR %(manual)s OR {e("due_at")} <= %(not_before)s)
            RETURNING {returning}
        ),
        lost AS (
            UPDATE {_table(A)} AS a SET
                {_col(A, "outcome")} = '{LOST}',
                {_col(A, "finished_at")} = %(now)s,
                {_col(A, "error_class")} = %(lost_class)s,
                {_col(A, "error_message")} = %(lost_message)s
            FROM claimed
            WHERE a.{_col(A, "event")} = {claimed_id} AND a.{_col(A, "outcome")} = '{RUNNING}'
        ),
        new_attempt AS (
            INSERT INTO {_table(A)} ({attempt_columns})
            SELECT {claimed_id}, {claimed_attempts}, %(trigger)s, '{RUNNING}', %(now)s,
                   '', '', '', %(worker)s, %(task_id)s
            FROM claimed WHERE claimed.{_col(E, "status")} = '{PROCESSING}'
            RETURNING {_col(A, "id")}
        )
        SELECT claimed.*, (SELECT {_col(A, "id")} FROM new_attempt) FROM claimed
    """


@cache
def finish_sql() -> str:
    """Mark the event `succeeded` and its attempt with it, if the attempt is still current.

    Updates one row (the attempt) when it is, none when another attempt took
    the event over: the caller then rolls the handlers' writes back.
    """
    E, A = WebhookEvent, WebhookAttempt
    return f"""
        WITH done AS (
            UPDATE {_table(E)} SET
                {_col(E, "status")} = '{SUCCEEDED}',
                {_col(E, "processed_at")} = %(now)s,
                {_col(E, "last_error")} = ''
            WHERE {_col(E, "id")} = %(event_id)s
              AND {_col(E, "status")} = '{PROCESSING}'
              AND {_col(E, "attempts")} = %(number)s
            RETURNING 1
        )
        UPDATE {_table(A)} SET
            {_col(A, "outcome")} = '{_Outcome.SUCCEEDED.value}',
            {_col(A, "finished_at")} = %(now)s,
            {_col(A, "duration_ms")} = %(duration_ms)s
        WHERE {_col(A, "id")} = %(attempt_id)s AND EXISTS (SELECT 1 FROM done)
    """
