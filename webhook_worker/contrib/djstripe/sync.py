"""dj-stripe's processing of an event, run by the worker before the handlers.

`sync_event` is a receiver of `webhook_worker.signals.pre_handlers`: it runs
in the attempt's transaction, so what dj-stripe writes (the `Event`, the
synced objects, its receivers' writes) commits with the handlers' writes or
rolls back with them, and the event is retried on the worker's schedule.
"""

from __future__ import annotations

from typing import Any

from djstripe.models import Event
from djstripe.settings import djstripe_settings

from webhook_ingest.models import WebhookEvent

from .conf import bridge_setting


def syncs(event: WebhookEvent) -> bool:
    """Whether dj-stripe processes `event`: a snapshot event of a synced endpoint."""
    names = bridge_setting("ENDPOINTS")
    return not event.is_thin and (names is None or event.endpoint in names)


def api_key(event: WebhookEvent) -> str:
    """The key dj-stripe's sync calls Stripe with: the bridge's, else dj-stripe's own."""
    key: str = bridge_setting("API_KEY") or djstripe_settings.get_default_api_key(event.livemode)
    return key


def sync_event(sender: Any, event: WebhookEvent, **kwargs: Any) -> str:
    """Have dj-stripe process `event`, unless it already has (its own endpoint, a rerun).

    `Event.process` creates dj-stripe's `Event`, syncs the objects the event
    names from Stripe's API and sends dj-stripe's signals (its
    `djstripe_receiver` receivers). It leaves an event it already has
    alone; the returned note says so in the attempt's history.
    """
    if not syncs(event):
        return ""
    if Event.objects.filter(id=event.id).exists():
        return f"dj-stripe already had {event.id}: not processed by it again"
    Event.process(event.payload, api_key=api_key(event))
    return ""
