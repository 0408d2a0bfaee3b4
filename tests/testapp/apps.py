import os
from pathlib import Path

from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.testapp"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # tests/test_observability.py: tracing and signal records in the
        # processes that test starts (web, worker, manage.py).
        directory = os.environ.get("WEBHOOKS_TEST_OBSERVE")
        if directory:
            from tests.observability import init_tracing, record_signals

            init_tracing(Path(directory))
            record_signals(Path(directory))
