"""Fewer indexes on the events table: each one is rewritten on every status change.

`db_index=True` on a CharField gives Postgres two indexes (a plain one and a
`varchar_pattern_ops` one for LIKE). Queries need the prefix match only on
`type`, where a pattern_ops index serves equality as well; the primary key's
LIKE index served nothing. Indexes are built concurrently so that ingest keeps
writing while they are.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


def _pk_pattern_index(schema_editor, model):
    return schema_editor._create_index_name(model._meta.db_table, ["id"], suffix="_like")


def drop_pk_pattern_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("webhook_ingest", "WebhookEvent")
    schema_editor.execute(
        "DROP INDEX CONCURRENTLY IF EXISTS %s"
        % schema_editor.quote_name(_pk_pattern_index(schema_editor, model))
    )


def create_pk_pattern_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("webhook_ingest", "WebhookEvent")
    schema_editor.execute(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS %s ON %s (%s varchar_pattern_ops)"
        % (
            schema_editor.quote_name(_pk_pattern_index(schema_editor, model)),
            schema_editor.quote_name(model._meta.db_table),
            schema_editor.quote_name("id"),
        )
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("webhook_ingest", "0001_initial"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="webhookevent",
            index=models.Index(
                fields=["type"], name="webhook_event_type", opclasses=["varchar_pattern_ops"]
            ),
        ),
        AddIndexConcurrently(
            model_name="webhookevent",
            index=models.Index(fields=["account"], name="webhook_event_account"),
        ),
        AddIndexConcurrently(
            model_name="webhookevent",
            index=models.Index(fields=["object_id"], name="webhook_event_object_id"),
        ),
        migrations.AlterField(
            model_name="webhookevent",
            name="account",
            field=models.CharField(
                blank=True, max_length=255, null=True, verbose_name="Connect account"
            ),
        ),
        migrations.AlterField(
            model_name="webhookevent",
            name="object_id",
            field=models.CharField(blank=True, max_length=255, verbose_name="data.object id"),
        ),
        migrations.AlterField(
            model_name="webhookevent",
            name="type",
            field=models.CharField(max_length=255),
        ),
        migrations.RunPython(drop_pk_pattern_index, create_pk_pattern_index, elidable=True),
    ]
