"""Attempts counted as they change, as events are (webhook_ingest 0005).

Metrics read attempts per outcome, trigger and skip reason from
`AttemptCount`, kept by statement-level triggers on the attempts table, one
row per database session and key. Installing takes a SHARE ROW EXCLUSIVE
lock on the attempts table while the existing attempts are counted: workers
wait that long (about a second per million attempts) to record attempts.
"""

from importlib import import_module

from django.db import migrations, models

# The same triggers as the events' counts (a migration module's name is not an identifier).
events_counting = import_module("webhook_ingest.migrations.0005_event_counts_open_indexes")
counting_sql = events_counting.counting_sql
removal_sql = events_counting.removal_sql

ATTEMPTS = "webhook_worker_webhookattempt"
COUNTS = "webhook_worker_attemptcount"
KEY = "outcome, trigger, skipped"
NAME = "webhook_attempt_count"


def install(apps, schema_editor):
    for statement in counting_sql(ATTEMPTS, COUNTS, KEY, NAME):
        schema_editor.execute(statement, params=None)


def remove(apps, schema_editor):
    for statement in removal_sql(ATTEMPTS, NAME):
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("webhook_worker", "0002_skips_and_event_scans"),
        ("webhook_ingest", "0005_event_counts_open_indexes"),
    ]

    operations = [
        migrations.CreateModel(
            name="AttemptCount",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("outcome", models.CharField(max_length=16)),
                ("trigger", models.CharField(max_length=16)),
                ("skipped", models.CharField(max_length=16)),
                ("session", models.IntegerField(help_text="The backend pid that wrote the row; 0: folded.")),
                ("n", models.BigIntegerField()),
            ],
            options={
                "verbose_name": "attempt count",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("outcome", "trigger", "skipped", "session"),
                        name="webhook_attempt_count_key",
                    )
                ],
            },
        ),
        migrations.RunPython(install, remove),
    ]
