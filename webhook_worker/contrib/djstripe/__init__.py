"""The dj-stripe bridge: the worker syncs each event into dj-stripe's models.

    pip install "django-queued-webhooks[djstripe]"
    INSTALLED_APPS += ["djstripe", "webhook_worker.contrib.djstripe"]

Each event is processed by dj-stripe's own `djstripe.models.Event.process`
(it creates the `Event`, syncs the objects from Stripe's API and sends
dj-stripe's signals, so `djstripe_receiver` receivers run) inside the
attempt's transaction, before the project's handlers: they see the synced
models, and one failure rolls back both. See docs/migrating-from-dj-stripe.md.
"""
