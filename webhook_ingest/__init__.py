"""Receive Stripe webhooks: verify the signature, record the event, enqueue it."""
