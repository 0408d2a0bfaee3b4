"""The reference Django project. Importing it loads the Celery app, so
`@shared_task` functions bind to it in web and worker processes alike."""

from .celery_app import app as celery_app

__all__ = ("celery_app",)
