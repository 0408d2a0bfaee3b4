"""WSGI entry point for gunicorn: `gunicorn config.wsgi:application`."""

from __future__ import annotations

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from config import celery_app

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_wsgi_application()

# Import the URLconf (the views, the stripe library) and the broker transport
# while the worker boots, not during the first webhook it receives.
_urls = get_resolver().url_patterns
_transport = celery_app.connection_for_write().transport

# Everything loaded so far lives as long as the process. Move it out of the
# cyclic collector's reach: its full collections, which every thread of the
# worker waits for, then scan only what requests leave behind, not the
# objects of Django, Celery and stripe (docs/benchmarks.md).
gc.freeze()
