"""Signals sent by the worker, for integrators (alerting, audit logs, metrics) and
for code that must run with every event (the dj-stripe bridge).

Every signal is sent with `sender=WebhookEvent`. All but `pre_handlers` go
through `send_robust`: a receiver that raises is logged by Django (logger
`django.dispatch`) and changes nothing about the attempt. Those marked
"after commit" are sent once the state they announce is committed, so a
receiver that reads the database, or hands the id to another process, sees
it.

`pre_handlers` is the one that takes part in the attempt: it is sent with
`send`, inside the attempt's transaction, so its receivers' writes and
exceptions count like a handler's (below).

The ingest app's signals (`webhook_ingest.signals`: `delivery_accepted`,
`delivery_rejected`, `event_ready`) are the other half; the README lists all.
"""

from __future__ import annotations

from django.dispatch import Signal

# An attempt has been claimed (committed as `processing`, counted, its
# history row written) and its handlers are about to run, in the worker
# process. Arguments: event (WebhookEvent), attempt (int, 1 for the first),
# trigger (str, a WebhookAttempt.Trigger value: "delivery", "retry",
# "sweeper", "manual", ...).
attempt_started = Signal()

# Code that must run with every event before its handlers, in their
# transaction (the dj-stripe bridge, webhook_worker.contrib.djstripe, is one):
#
#     def sync(sender, event, **kwargs): ...
#     pre_handlers.connect(sync, sender=WebhookEvent)   # in an AppConfig.ready()
#
# Sent at the start of each attempt's `transaction.atomic()` block, before any
# handler, even when the handlers are then skipped (superseded, twin).
# Arguments: event. A receiver's writes commit or roll back with the
# handlers'; an exception it raises fails the attempt as a handler's would
# (rolled back, recorded with its traceback, retried, or dead-lettered for
# `webhooks.PermanentFailure`). A receiver may return a short sentence: it
# is added to the attempt's note in the history.
pre_handlers = Signal()

# An attempt has ended and its outcome is committed. Arguments: event,
# attempt, trigger, outcome (a WebhookAttempt.Outcome value: "succeeded",
# "retry", "failed", "superseded", "twin"), exception (what a handler
# raised, or None). After commit.
attempt_finished = Signal()

# An event has become `failed`, the dead-letter state, and waits for a person:
# its last attempt failed, raised PermanentFailure, or its worker died on the
# last attempt. Arguments: event, attempt, exception. After commit, after
# `attempt_finished`.
event_dead_lettered = Signal()

# A person queued an event for another attempt (the admin's retry and re-run
# actions, `manage.py webhooks_retry`). Arguments: event_id, event_type,
# previous_status (the status it had), source ("admin" or "command", or what
# the caller of `webhook_worker.actions.retry_events` passed), user (the admin
# user, or None). After commit, once per event, before its message is published.
event_retried = Signal()
