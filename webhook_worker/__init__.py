"""Process stored Stripe events in Celery workers: handlers, retries, the sweeper."""
