"""`ORDERING = "object"`: events about one object, one at a time, in the order Stripe created them.

Before an attempt at an event with an object id (`data.object.id`, or a thin
event's `related_object.id`) on an endpoint with ordering on, the worker:

1. takes the object's advisory lock (session-level, waiting up to
   LOCK_WAIT_SECONDS; if another attempt on the object still runs, the
   message comes back BUSY_DELAY later). Two attempts for one object never
   overlap.
2. looks for an earlier unfinished event of the object: created before it,
   or in the same instant with a smaller event id (Stripe's `created` has
   one-second resolution for snapshot events; the id breaks ties). If there
   is one, the event waits: it stays unfinished with `waiting_for` set and a
   due time, and no attempt is used up.

The bound: a failing event holds its object's later events for at most
`ORDERING_MAX_WAIT` seconds after it was received. Once it is `retrying`
and older than that, later events run without it (in their own order), and
the attempt's note names the event overtaken; when its retry comes, it is
superseded (`event.is_superseded`), which handlers registered with
`skip_superseded=True` heed. An earlier event that is pending or processing
holds later ones until its attempt ends; if its message or its worker was
lost, the sweeper runs it again after REQUEUE_AFTER.

When an attempt ends, the first waiting event of the object (in `created`
order) is published at once: the next in line does not wait for its due
time. A wait longer than MAX_BROKER_DELAY is kept in the database, and the
sweeper publishes it when due, as it does for retries.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import DatabaseError, OperationalError
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import WebhookEvent

from . import ordering_sql
from .enqueue import enqueue_or_mark
from .models import WebhookAttempt
from .observability import log_fields

logger = logging.getLogger(__name__)

Status = WebhookEvent.Status
ORDER = WebhookAttempt.Trigger.ORDER

# How long an attempt waits for another attempt on its object to finish.
LOCK_WAIT_SECONDS = 3.0
# Then its message comes back this much later.
BUSY_DELAY = 1.0
# A waiting event's message is published again at least this long after it.
MIN_RECHECK = 5.0
# Earlier unfinished events of one object looked at: the first that holds is what matters.
EARLIER = 100


@dataclass(frozen=True)
class Wait:
    """The event was not run: it waits for its turn."""

    detail: str


class Turn:
    """An attempt's hold on its object: the lock, and who is next when it is released."""

    def __init__(self, connection: BaseDatabaseWrapper, object_id: str, note: str = "") -> None:
        self.connection = connection
        self.object_id = object_id
        # Set when the event runs ahead of an earlier one whose wait ran out.
        self.note = note

    def release(self) -> None:
        """Make the first event of the object still waiting due, release the lock, publish it."""
        try:
            with self.connection.cursor() as cursor:
                cursor.execute(
                    ordering_sql.release_object_sql(),
                    {"object_id": self.object_id, "now": timezone.now()},
                )
                woken_id, woken_type, _ = cursor.fetchone()
        except DatabaseError:
            # The session is gone, and its lock with it; the waiting events
            # run when due (the sweeper publishes them).
            logger.warning("could not hand %s over to its next event", self.object_id)
            return
        if woken_id is not None:
            enqueue_or_mark(woken_id, woken_type, trigger=ORDER)


def take_turn(connection: BaseDatabaseWrapper, event_id: str) -> Turn | Wait | None:
    """Hold the event's object for an attempt; a Wait if it is not its turn; None if unordered."""
    # Events of an endpoint no longer configured are not ordered.
    ordered = [e.name for e in webhook_settings.ENDPOINTS.values() if e.ordering is not None]
    with connection.cursor() as cursor:
        cursor.execute(ordering_sql.take_object_sql(), {"event_id": event_id, "endpoints": ordered})
        row = cursor.fetchone()
        if row is None:
            return None
        object_id, created, event_type, locked = row
        if not locked and not _wait_for_lock(cursor, object_id):
            enqueue_or_mark(event_id, event_type, trigger=ORDER, countdown=BUSY_DELAY)
            return Wait(f"another attempt on {object_id} is running; back in {BUSY_DELAY:g}s")
        try:
            waiting = _earlier_holding(cursor, event_id, object_id, created)
        except BaseException:
            _unlock(cursor, object_id)  # a session-level lock outlives the error otherwise
            raise
    if isinstance(waiting, str):
        return Turn(connection, object_id, note=waiting)
    blocker, delay = waiting
    if delay is not None:
        enqueue_or_mark(event_id, event_type, trigger=ORDER, countdown=delay)
    return Wait(f"waits for the earlier {blocker} about {object_id}")


def _earlier_holding(
    cursor: CursorWrapper, event_id: str, object_id: str, created: datetime
) -> str | tuple[str, float | None]:
    """Under the object's lock: whether an earlier event holds this one.

    If none does, the lock is kept and the attempt's note returned ("" unless
    it overtakes a failing event). If one does, the event is marked waiting
    for it, then the lock released (an attempt ending after that finds it and
    publishes it), and (blocker, countdown to publish it with, or None when
    the wait is kept in the database) returned.
    """
    now = timezone.now()
    hold = timedelta(seconds=webhook_settings.ORDERING_MAX_WAIT)
    cursor.execute(
        ordering_sql.earlier_sql(),
        {"object_id": object_id, "created": created, "event_id": event_id, "limit": EARLIER},
    )
    earlier: list[tuple[str, str, datetime]] = cursor.fetchall()
    holding = [e for e in earlier if e[1] != Status.RETRYING or now < e[2] + hold]
    if not holding:
        if not earlier:
            return ""
        note = (
            f"ran before the earlier {earlier[0][0]}, still failing "
            f"ORDERING_MAX_WAIT ({hold.total_seconds():g}s) after it was received"
        )
        logger.warning(
            "event %s %s", event_id, note, extra=log_fields(None, None, event_id=event_id)
        )
        return note
    blocker, status, received_at = holding[0]
    # A failing event stops holding once its time is up; any other is
    # expected to end soon (its attempt's end publishes this one).
    until = received_at + hold if status == Status.RETRYING else now + hold
    due = max(until, now + timedelta(seconds=MIN_RECHECK))
    delay = (due - now).total_seconds()
    in_database = delay > webhook_settings.MAX_BROKER_DELAY
    cursor.execute(
        ordering_sql.wait_sql(),
        {"event_id": event_id, "earlier": blocker, "due": due, "scheduled": in_database},
    )
    _unlock(cursor, object_id)
    return blocker, None if in_database else delay


def _unlock(cursor: CursorWrapper, object_id: str) -> None:
    try:
        cursor.execute(ordering_sql.OBJECT_UNLOCK_SQL, {"object_id": object_id})
    except DatabaseError:
        pass  # session gone, and the lock with it


def _wait_for_lock(cursor: CursorWrapper, object_id: str) -> bool:
    """Wait up to LOCK_WAIT_SECONDS for another attempt on the object to end; False if busy."""
    cursor.execute(
        "SELECT set_config('lock_timeout', %s, false)", [f"{int(LOCK_WAIT_SECONDS * 1000)}ms"]
    )
    try:
        cursor.execute(ordering_sql.OBJECT_LOCK_SQL, {"object_id": object_id})
    except OperationalError:
        return False
    finally:
        cursor.execute("SELECT set_config('lock_timeout', '0', false)")
    return True
