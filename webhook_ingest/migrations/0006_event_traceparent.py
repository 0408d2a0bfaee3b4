from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("webhook_ingest", "0005_event_counts_open_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="webhookevent",
            name="traceparent",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text=(
                    "With OpenTelemetry set up: the W3C trace context of the event's first "
                    "attempt, which the sweeper's re-enqueues link back to."
                ),
                max_length=128,
            ),
        ),
    ]
