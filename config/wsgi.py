"""WSGI entry point for gunicorn: `gunicorn config.wsgi:application`."""

from __future__ import annotations

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
