"""A project that came from dj-stripe: a `djstripe_receiver` receiver and a handler.

Imported at startup by webhook_worker (every app's webhooks.py), so the
worker processes connect both. Each call appends a line to the suite's
HANDLER_LOG, which survives rollbacks: `djstripe:<type>:synced` from the
receiver and `handler:<type>:synced` from the handler when dj-stripe's row
for the event's object exists at that point of the transaction (`:missing`
when not). The receiver also writes a `SideEffect` row ("receiver", its call
number), committed only with the event's transaction. With
`metadata.djstripe_behavior = "fail_first"` on the event's object, the
receiver raises on its first call for that event, after that write.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from djstripe.event_handlers import djstripe_receiver
from djstripe.models import Invoice, Subscription

from tests.helpers import handler_calls
from tests.testapp.models import SideEffect
from tests.testapp.webhooks import log_call
from webhook_worker import webhooks

TYPES = ["customer.subscription.updated", "invoice.paid"]


def synced(event: Any) -> str:
    """Whether dj-stripe's row for the event's object exists, as the log says it."""
    model = Subscription if event.type.startswith("customer.subscription") else Invoice
    return "synced" if model.objects.filter(id=event.data["object"]["id"]).exists() else "missing"


@djstripe_receiver(TYPES)
def on_billing_event(sender: Any, event: Any, **kwargs: Any) -> None:
    name = f"djstripe:{event.type}"
    calls = handler_calls(Path(settings.HANDLER_LOG), event.id)
    earlier = [call for call in calls if call[1].startswith(name + ":")]
    call = len(earlier) + 1
    log_call(SimpleNamespace(id=event.id, attempts=call), f"{name}:{synced(event)}")
    SideEffect.objects.create(event_id=event.id, handler="receiver", attempt=call)
    metadata = event.data["object"].get("metadata") or {}
    if metadata.get("djstripe_behavior") == "fail_first" and not earlier:
        raise RuntimeError("a djstripe_receiver failed on its first call")


@webhooks.handler(*TYPES)
def sees_djstripe_rows(event: Any, **kwargs: Any) -> None:
    log_call(event, f"handler:{event.type}:{synced(event)}")
