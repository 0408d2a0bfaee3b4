"""The Celery app: configured from Django settings (CELERY_* names), as in Celery's
"First steps with Django", plus the one call that fits it for webhook processing."""

from __future__ import annotations

import os

from celery import Celery

from webhook_worker.celery import configure_celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

configure_celery(app, sweep_interval=float(os.environ.get("WEBHOOKS_SWEEP_INTERVAL", "60")))
