"""Receive Stripe webhooks: verify the signature, record the event, announce it."""

__version__ = "0.2.0"
