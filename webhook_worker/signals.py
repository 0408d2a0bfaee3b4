"""Signals the worker sends while it processes an event.

`pre_handlers` is the hook for code that must run with every event before
the handlers, in their transaction (the dj-stripe bridge,
`webhook_worker.contrib.djstripe`, is one):

    from webhook_ingest.models import WebhookEvent
    from webhook_worker.signals import pre_handlers

    def sync(sender, event, **kwargs):
        ...

    pre_handlers.connect(sync, sender=WebhookEvent)   # in an AppConfig.ready()

It is sent with `sender=WebhookEvent` and `event` (the `WebhookEvent`) at
the start of each attempt's `transaction.atomic()` block, before any
handler, even when the handlers are then skipped (superseded, twin). A
receiver's writes commit or roll back with the handlers'; an exception it
raises fails the attempt as a handler's would (rolled back, recorded with its
traceback, retried, or dead-lettered for `webhooks.PermanentFailure`). A
receiver may return a short sentence: it is added to the attempt's note in
the history.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["pre_handlers"]

pre_handlers = Signal()
