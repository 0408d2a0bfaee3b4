"""Fewer indexes on the events table: each one is rewritten on every status change.

`db_index=True` on a CharField gives Postgres two indexes (a plain one and a
`varchar_pattern_ops` one for LIKE). Queries need the prefix match only on
`type`, where a pattern_ops index serves equality as well; the primary key's
LIKE index served nothing. Indexes are built concurrently so that ingest keeps
writing while they are.
"""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


def _on_pk_pattern_index(sql):
    """A migration step running `sql` on the primary key's LIKE index (Postgres only)."""

    def step(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        table = apps.get_model("webhook_ingest", "WebhookEvent")._meta.db_table
        name = schema_editor._create_index_name(table, ["id"], suffix="_like")
        qn = schema_editor.quote_name
        schema_editor.execute(sql.format(index=qn(name), table=qn(table), column=qn("id")))

    return step


drop_pk_pattern_index = _on_pk_pattern_index("DROP INDEX CONCURRENTLY IF EXISTS {index}")
create_pk_pattern_index = _on_pk_pattern_index(
    "CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {table} ({column} varchar_pattern_ops)"
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
