"""Process recorded Stripe webhook events: handlers, Celery tasks, retries, the sweeper."""

from webhook_ingest import __version__

__all__ = ["__version__"]
