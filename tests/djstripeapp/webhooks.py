"""A project's dj-stripe receiver, as dj-stripe 2.9+ users write them.

Imported at startup by webhook_worker (every app's webhooks.py), so the
worker processes connect it. Each call appends a line to the suite's
HANDLER_LOG, which survives rollbacks: `djstripe:<type>:synced` when
dj-stripe's row for the event's object already existed in the transaction,
`:missing` when not. With `metadata.djstripe_behavior = "fail_first"` on the
event's object, the receiver raises on its first call for that event.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from djstripe.event_handlers import djstripe_receiver
from djstripe.models import Invoice, Subscription

from tests.helpers import handler_calls
from tests.testapp.webhooks import log_call


@djstripe_receiver(["customer.subscription.updated", "invoice.paid"])
def on_billing_event(sender: Any, event: Any, **kwargs: Any) -> None:
    name = f"djstripe:{event.type}"
    calls = handler_calls(Path(settings.HANDLER_LOG), event.id)
    earlier = [call for call in calls if call[1].startswith(name + ":")]
    model = Subscription if event.type.startswith("customer.subscription") else Invoice
    synced = model.objects.filter(id=event.data["object"]["id"]).exists()
    call = SimpleNamespace(id=event.id, attempts=len(earlier) + 1)
    log_call(call, f"{name}:{'synced' if synced else 'missing'}")
    metadata = event.data["object"].get("metadata") or {}
    if metadata.get("djstripe_behavior") == "fail_first" and not earlier:
        raise RuntimeError("a djstripe_receiver failed on its first call")
