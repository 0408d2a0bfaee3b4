"""Calling an event's handlers inside the attempt's transaction, and which ones to skip.

- Superseded: a handler registered with `skip_superseded=True`, or every
  handler of an endpoint with `"SKIP_SUPERSEDED": True`, is not called for an
  event a newer event about the same object has overtaken
  (`event.is_superseded`).
- Twins: with `DEDUPLICATE_TWINS`, a snapshot event and its thin twin (the
  thin event whose `snapshot_event` names it) run handlers once between them.
  Each takes a transaction-level lock on the pair first, so the second waits
  for the first to commit, then sees it succeeded and runs nothing.

What was skipped, and why, goes to the attempt (`skipped`, `note`); when no
handler ran for that reason, the attempt's outcome says so.

Before any of it, the `pre_handlers` signal (webhook_worker.signals) runs its
receivers in the same transaction; what they return joins the note.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from django.db import connections

from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import WebhookEvent

from .attempt_sql import TWIN_LOCK_SQL
from .models import WebhookAttempt
from .signals import pre_handlers
from .webhooks import Handler, handlers_for, skips_superseded

Outcome, Skip = WebhookAttempt.Outcome, WebhookAttempt.Skip


@dataclass(frozen=True)
class HandlersRun:
    """How the handlers' part of an attempt ended (when no handler raised)."""

    outcome: str = Outcome.SUCCEEDED
    skipped: str = Skip.NONE
    note: str = ""


@dataclass
class Progress:
    """The handler running, or the last one called: after an exception, the one that raised."""

    handler: Handler | None = None


def handler_name(func: Handler) -> str:
    module = getattr(func, "__module__", None) or type(func).__module__
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{name}"


def run_handlers(event: WebhookEvent, progress: Progress | None = None) -> HandlersRun:
    """Send `pre_handlers`, then call the event's handlers in order, skipping
    those the rules above leave out.

    Runs inside the attempt's transaction; a receiver's or a handler's
    exception propagates (`progress`, when given, then names the handler
    that raised it; None for a receiver, whose traceback names it).
    """
    progress = progress or Progress()
    replies = pre_handlers.send(sender=WebhookEvent, event=event)
    said = [reply for _, reply in replies if isinstance(reply, str) and reply]
    ran = _call_handlers(event, progress)
    if not said:
        return ran
    return replace(ran, note="; ".join(note for note in [*said, ran.note] if note))


def _call_handlers(event: WebhookEvent, progress: Progress) -> HandlersRun:
    funcs = handlers_for(event.type)
    if webhook_settings.DEDUPLICATE_TWINS:
        twin = handled_twin(event)
        if twin is not None:
            return HandlersRun(
                Outcome.TWIN, Skip.TWIN, f"its twin {twin} already succeeded: no handler ran"
            )
    endpoint = webhook_settings.endpoint_or_defaults(event.endpoint)
    guarded = [f for f in funcs if endpoint.skip_superseded or skips_superseded(f)]
    skipped = guarded if guarded and event.is_superseded else []
    skipped_ids = {id(f) for f in skipped}
    for func in funcs:
        if id(func) not in skipped_ids:
            progress.handler = func
            func(event=event)
    progress.handler = None  # what raises from here on is not a handler's
    if not skipped:
        return HandlersRun()
    names = ", ".join(handler_name(f) for f in skipped)
    note = f"superseded by {event.superseded_by} (newer, already succeeded): skipped {names}"
    outcome = Outcome.SUPERSEDED if len(skipped) == len(funcs) else Outcome.SUCCEEDED
    return HandlersRun(outcome, Skip.SUPERSEDED, note)


def handled_twin(event: WebhookEvent) -> str | None:
    """The id of this event's twin if it already succeeded, under the pair's lock.

    The lock is held until the caller's transaction ends: the twin's attempt,
    if it starts meanwhile, waits, then finds this one succeeded.
    """
    if event.is_thin:
        snapshot_id = event.snapshot_event
        if not snapshot_id:
            return None
        twins = WebhookEvent.objects.filter(pk=snapshot_id)
    else:
        snapshot_id = event.id
        twins = WebhookEvent.objects.filter(snapshot_event=snapshot_id)
    with connections[WebhookEvent.objects.db_for_write()].cursor() as cursor:
        cursor.execute(TWIN_LOCK_SQL, {"event_id": snapshot_id})
    found: str | None = (
        twins.filter(status=WebhookEvent.Status.SUCCEEDED).values_list("pk", flat=True).first()
    )
    return found
