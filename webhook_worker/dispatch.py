"""One attempt at an event: claim it, run its handlers atomically, record the outcome.

An attempt is three short transactions, all under a Postgres advisory lock
on the event id held by this worker's database session:

1. claim: one statement (attempt_sql.claim_sql) that takes the lock, leaves
   finished events alone, marks the event `processing`, counts the attempt
   and inserts its `WebhookAttempt` row. Committed, so the admin shows what
   is running, and a worker killed from here on leaves a trace.
2. run: call every matching handler inside one `transaction.atomic()`, and
   mark the event `succeeded` in the same transaction, fenced on the attempt
   number (attempt_sql.finish_sql, which also releases the lock once the
   event's row is locked by the update). Either all handler writes and the
   success commit, or none do.
3. on failure: after the rollback, record the error, traceback and the
   event's next state (`retrying` with a due time, or `failed`) in a
   transaction of its own, so a rolled-back attempt stays visible; then
   release the lock.

The advisory lock is what makes redelivery harmless. It belongs to the
database session, so it outlives the transactions above and vanishes when
the session does: a second copy of the message (a visibility-timeout
redelivery, a duplicate, the sweeper) cannot start while the first copy is
running, and an event found `processing` with the lock free was abandoned by
a worker that died.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.db import DatabaseError, OperationalError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.dispatch import Signal
from django.utils import timezone

from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import WebhookEvent

from . import attempt_sql, ordering
from .attempts import (
    WORKER_LOST_MESSAGE,
    AttemptResult,
    ClaimedAttempt,
    WorkerLost,
    error_class_name,
    record_failure,
)
from .handling import Progress, handler_name, run_handlers
from .models import WebhookAttempt
from .observability import AttemptReport, attempt_report, current_traceparent, log_fields
from .signals import attempt_finished, attempt_started, event_dead_lettered

logger = logging.getLogger(__name__)

Status = WebhookEvent.Status
Outcome = WebhookAttempt.Outcome

# The event's status once an attempt with this outcome committed.
STATUS_AFTER: dict[str, str] = {
    Outcome.SUCCEEDED: Status.SUCCEEDED,
    Outcome.SUPERSEDED: Status.SUCCEEDED,
    Outcome.TWIN: Status.SUCCEEDED,
    Outcome.RETRY: Status.RETRYING,
    Outcome.FAILED: Status.FAILED,
}

# How long a second copy waits for the lock before concluding that a live
# worker has the event. Long enough for Postgres to notice a killed worker's
# session and release its lock, short enough not to tie a worker up.
LOCK_WAIT_SECONDS = 3.0
# A retry message may arrive a little before the due time it was scheduled
# for (clocks of different workers); earlier than this, it is a stray copy.
EARLY_SLACK = timedelta(seconds=5)


class _EventLock:
    """The event's session-level advisory lock, as this session holds it or not."""

    def __init__(self, connection: BaseDatabaseWrapper, event_id: str) -> None:
        self.connection = connection
        self.params = {"event_id": event_id}
        self.held = False

    def wait(self, seconds: float) -> bool:
        """Block until the lock is free, for at most `seconds`; True if taken."""
        with self.connection.cursor() as cursor:
            timeout = f"{int(seconds * 1000)}ms"
            cursor.execute("SELECT set_config('lock_timeout', %s, false)", [timeout])
            try:
                cursor.execute(attempt_sql.LOCK_SQL, self.params)
                self.held = True
            except OperationalError:
                pass
            finally:
                cursor.execute("SELECT set_config('lock_timeout', '0', false)")
        return self.held

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(attempt_sql.UNLOCK_SQL, self.params)
        except DatabaseError:
            pass  # session gone, and the lock with it


def process(event_id: str, trigger: str, worker: str = "", task_id: str = "") -> AttemptResult:
    """Run one attempt at `event_id`. Safe to call any number of times, concurrently."""
    connection = connections[WebhookEvent.objects.db_for_write()]
    turn = ordering.take_turn(connection, event_id) if webhook_settings.ordering_enabled else None
    if isinstance(turn, ordering.Wait):
        return AttemptResult("waiting", detail=turn.detail)
    lock = _EventLock(connection, event_id)
    try:
        # One cursor for the claim and the finish.
        with connection.cursor() as cursor:
            claimed = _claim(cursor, lock, event_id, trigger, worker, task_id)
            if claimed is None:  # a live session has the lock, or its owner just died
                if LOCK_WAIT_SECONDS <= 0 or not lock.wait(LOCK_WAIT_SECONDS):
                    logger.info(
                        "event %s is being processed by another worker; leaving it",
                        event_id, extra=log_fields(None, None, event_id=event_id),
                    )  # fmt: skip
                    return AttemptResult("busy", detail="another worker holds the event")
                claimed = _claim(cursor, lock, event_id, trigger, worker, task_id)
            if isinstance(claimed, AttemptResult):
                return claimed
            assert claimed is not None
            event, attempt = claimed
            if turn is not None and turn.note:
                attempt = replace(attempt, note=turn.note)
            return _run(cursor, lock, event, attempt, trigger)
    finally:
        lock.release()
        if turn is not None:
            turn.release()


def _claim(
    cursor: CursorWrapper, lock: _EventLock, event_id: str, trigger: str, worker: str, task_id: str
) -> tuple[WebhookEvent, ClaimedAttempt] | AttemptResult | None:
    """Take the lock (unless held) and claim the event; None if another session has the lock."""
    connection = lock.connection
    now = timezone.now()
    manual = trigger == WebhookAttempt.Trigger.MANUAL
    worker, task_id = worker[:255], task_id[:255]
    # One autocommit statement (attempt_sql.claim_sql). Under the event's
    # lock, an event found `processing` has no live worker: that one died.
    taking = not lock.held
    # Until the statement says otherwise: if it fails after taking the
    # lock (session-level locks survive errors), release() gives it back.
    lock.held = True
    cursor.execute(
        attempt_sql.claim_sql(),
        {
            "lock": taking,
            # Not inside a caller's transaction: its commit is not ours to relax.
            "async_commit": not connection.in_atomic_block,
            "event_id": event_id,
            "now": now,
            "not_before": now + EARLY_SLACK,
            "manual": manual,
            "max_attempts": webhook_settings.max_attempts,
            "trigger": trigger,
            # The delivery's trace, which the sweeper's re-enqueues link back to.
            "traceparent": current_traceparent(),
            "worker": worker,
            "task_id": task_id,
            "lost_class": error_class_name(WorkerLost()),
            "lost_message": WORKER_LOST_MESSAGE,
            "lost_error": f"WorkerLost: {WORKER_LOST_MESSAGE}",
        },
    )
    row = cursor.fetchone()
    lock.held = bool(row[0])
    if not lock.held:
        return None
    fields = attempt_sql.event_fields()
    if row[1] is None:  # no event id: nothing claimed
        return _unclaimed(event_id, now, manual)
    event = WebhookEvent.from_db(connection.alias, fields, row[1 : len(fields) + 1])
    if event.status == Status.FAILED:
        lost = WorkerLost(WORKER_LOST_MESSAGE)
        logger.error(
            "event %s (%s) dead-lettered: its worker died on the last attempt",
            event_id, event.type,
            exc_info=lost, extra=log_fields(event, event.attempts, trigger=trigger),
        )  # fmt: skip
        _after_commit(
            connection, event_dead_lettered, event=event, attempt=event.attempts, exception=lost
        )
        return AttemptResult("failed", error=lost)
    return event, ClaimedAttempt(pk=row[len(fields) + 1], number=event.attempts)


def _unclaimed(event_id: str, now: datetime, manual: bool) -> AttemptResult:
    """Why the claim found nothing to do (missing, finished, or a retry not yet due)."""
    current = WebhookEvent.objects.filter(pk=event_id).values_list("status", "due_at").first()
    if current is None:
        logger.warning(
            "event %s not found (pruned, or never committed); dropping",
            event_id, extra=log_fields(None, None, event_id=event_id),
        )  # fmt: skip
        return AttemptResult("missing")
    status, due_at = current
    if status == Status.RETRYING and not manual and due_at > now + EARLY_SLACK:
        return AttemptResult("skipped", detail="retry not due yet")
    return AttemptResult("skipped", detail=f"already {status}")


class _TakenOver(Exception):
    """Another attempt took the event over; commit nothing."""


def _run(
    cursor: CursorWrapper,
    lock: _EventLock,
    event: WebhookEvent,
    attempt: ClaimedAttempt,
    trigger: str,
) -> AttemptResult:
    """Run the claimed attempt, tell Sentry, OpenTelemetry and the signals how it went."""
    with attempt_report(event, attempt.number, trigger) as report:
        attempt_started.send_robust(
            WebhookEvent, event=event, attempt=attempt.number, trigger=trigger
        )
        result, outcome = _handle(cursor, lock, event, attempt, trigger, report)
        report.finished(outcome, result.error)
    # The instance the signals carry shows the status its attempt committed.
    event.status = STATUS_AFTER.get(outcome, event.status)
    # Each step above committed (autocommit); inside a caller's transaction
    # (tests), the signals wait for its commit.
    finished = {"event": event, "attempt": attempt.number, "exception": result.error}
    _after_commit(lock.connection, attempt_finished, trigger=trigger, outcome=outcome, **finished)
    if result.outcome == "failed":
        _after_commit(lock.connection, event_dead_lettered, **finished)
    return result


def _handle(
    cursor: CursorWrapper,
    lock: _EventLock,
    event: WebhookEvent,
    attempt: ClaimedAttempt,
    trigger: str,
    report: AttemptReport,
) -> tuple[AttemptResult, str]:
    """The attempt itself; returns its result and the outcome recorded in its history."""
    started = time.perf_counter()
    progress = Progress()
    try:
        # Everything from here on closes the attempt, whatever raises: the
        # registry, a handler, the finish. Never an event left `processing`.
        with transaction.atomic(using=lock.connection.alias):
            ran = run_handlers(event, progress)
            # Succeeded only if this attempt is still the event's current one
            # (a manual retry may have reset it meanwhile); else roll back.
            # The same statement releases the lock (see finish_sql).
            cursor.execute(
                attempt_sql.finish_sql(),
                {
                    "event_id": event.pk,
                    "number": attempt.number,
                    "attempt_id": attempt.pk,
                    "now": timezone.now(),
                    "duration_ms": (time.perf_counter() - started) * 1000,
                    "outcome": ran.outcome,
                    "skipped": ran.skipped,
                    "note": _joined(attempt.note, ran.note),
                },
            )
            marked, _ = cursor.fetchone()
            lock.held = False
            if marked != 1:
                raise _TakenOver
    except _TakenOver:
        return AttemptResult("skipped", detail="taken over by a later attempt"), Outcome.LOST
    except Exception as exc:
        handler = handler_name(progress.handler) if progress.handler else "(no handler)"
        report.failing(handler, error_class_name(exc))
        result = record_failure(lock.connection, event, attempt, exc, started, trigger, handler)
        outcome = {"retry": Outcome.RETRY, "failed": Outcome.FAILED}.get(result.outcome)
        return result, outcome or Outcome.LOST
    # Celery's worker already logs each task's outcome and the attempt log
    # has the details: success is DEBUG.
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "event %s (%s) attempt %d %s in %.1f ms",
            event.pk, event.type, attempt.number, ran.outcome,
            (time.perf_counter() - started) * 1000,
            extra=log_fields(event, attempt.number, trigger=trigger, outcome=ran.outcome),
        )  # fmt: skip
    return AttemptResult("succeeded"), ran.outcome


def _after_commit(connection: BaseDatabaseWrapper, signal: Signal, **kwargs: Any) -> None:
    transaction.on_commit(
        partial(signal.send_robust, WebhookEvent, **kwargs), using=connection.alias
    )


def _joined(*notes: str) -> str:
    return "; ".join(note for note in notes if note)
