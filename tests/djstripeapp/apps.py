from django.apps import AppConfig


class DjStripeAppConfig(AppConfig):
    """A project app written for dj-stripe: a `djstripe_receiver` receiver."""

    name = "tests.djstripeapp"
    label = "djstripeapp"
