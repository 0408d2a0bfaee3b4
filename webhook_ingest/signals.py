"""Signals sent by the ingest view.

`event_ready` is how a stored event reaches whatever processes it: the
`webhook_worker` app subscribes to it and enqueues a Celery task. Ingest
imports nothing of the worker; a system check (`webhook_ingest.E003`) says
when nothing is connected.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent once a delivery's event is committed and needs processing: a new
# event, or a duplicate whose first delivery never reached a worker. Sent
# after the commit (`transaction.on_commit`), so a receiver may hand the id
# to another process at once. Arguments: event_id, event_type, endpoint.
event_ready = Signal()

# Sent for every refused request. Arguments: endpoint (str), reason (the error
# code, e.g. "invalid_signature"), status_code (int).
delivery_rejected = Signal()

# Sent for every stored or duplicate event. Arguments: event_id, event_type,
# endpoint, duplicate (bool).
delivery_accepted = Signal()
