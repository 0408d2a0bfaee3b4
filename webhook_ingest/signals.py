"""Signals sent by the ingest view, for metrics and auditing."""

from __future__ import annotations

from django.dispatch import Signal

# Sent for every refused request. Arguments: endpoint (str), reason (the error
# code, e.g. "invalid_signature"), status_code (int).
delivery_rejected = Signal()

# Sent for every stored or duplicate event. Arguments: event_id, event_type,
# endpoint, duplicate (bool).
delivery_accepted = Signal()
