"""Example handlers. Found automatically: every installed app's webhooks.py is imported."""

from __future__ import annotations

import logging
from typing import Any

from webhook_ingest.models import WebhookEvent
from webhook_worker import webhooks

logger = logging.getLogger(__name__)


@webhooks.handler_all
def log_event(event: WebhookEvent, **kwargs: Any) -> None:
    logger.info("handled %s %s (object %s)", event.type, event.id, event.object_id or "-")


@webhooks.handler("customer.subscription.trial_will_end")
def trial_ending(event: WebhookEvent, **kwargs: Any) -> None:
    subscription = event.data["object"]
    logger.info("trial of subscription %s ends soon", subscription.get("id"))
