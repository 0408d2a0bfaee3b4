"""The benchmark's handler: a no-op, or a sleep of BENCH_HANDLER_SLEEP seconds.

Imported at startup in every process (handler discovery), so it also holds
the variants that are not settings (the settings' are in bench/settings.py):

- BENCH_PUBLISH=none: the ingest view stores events and nothing enqueues
  them (the publisher's receiver is disconnected), to measure what
  enqueueing costs under load (ingest only).
- BENCH_PUBLISH_INTERVAL sets the publisher's PUBLISH_INTERVAL (seconds).

Publishing inside the request, before the response, is the setting
ENQUEUE_IN_BACKGROUND=False (BENCH_ENQUEUE_IN_BACKGROUND=0).
"""

from __future__ import annotations

import os
import time
from typing import Any

from webhook_ingest.models import WebhookEvent
from webhook_ingest.signals import event_ready
from webhook_worker import publisher, webhooks

SLEEP = float(os.environ.get("BENCH_HANDLER_SLEEP", "0") or 0)


@webhooks.handler_all
def bench_handler(event: Any, **kwargs: Any) -> None:
    if SLEEP:
        time.sleep(SLEEP)


if os.environ.get("BENCH_PUBLISH_INTERVAL"):
    publisher.PUBLISH_INTERVAL = float(os.environ["BENCH_PUBLISH_INTERVAL"])

if os.environ.get("BENCH_PUBLISH") == "none":
    event_ready.disconnect(sender=WebhookEvent, dispatch_uid="webhook_worker.enqueue")
