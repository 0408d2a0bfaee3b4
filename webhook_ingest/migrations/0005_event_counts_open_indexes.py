"""Events counted as they change, and partial indexes for the statuses that are not final.

Health, metrics and the admin read counts per status, type, endpoint, style
and source from `EventCount` instead of aggregating the events table. Postgres
triggers keep it, in the transaction of the change they count: one
statement-level trigger per insert, update and delete on the events table,
and a truncate trigger that empties it. Statement-level, with transition
tables: a statement changing a thousand rows (pruning, a retry of many)
writes each count once, where a row-level trigger would update the same
count row a thousand times in one transaction, each new version stepping
over all the earlier ones. Each database session writes rows of its own
(its backend pid): no session waits on another's count.

Installing takes a SHARE ROW EXCLUSIVE lock on the events table: reads go on,
writes wait until the existing events are counted (one pass over the table,
about a second per million events), so no change is counted twice or missed.

The (status, due_at) index becomes partial, on unfinished events only, and a
partial (status, received_at) index serves every status but `succeeded`:
neither grows with the finished events, and a finished event leaves both.
Both are built concurrently, so ingest keeps writing meanwhile.
"""

from django.contrib.postgres.operations import AddIndexConcurrently, RemoveIndexConcurrently
from django.db import migrations, models

EVENTS = "webhook_ingest_webhookevent"
COUNTS = "webhook_ingest_eventcount"
KEY = "status, type, endpoint, style, source"
NAME = "webhook_event_count"


def counting_sql(table: str, counts: str, key: str, name: str) -> list[str]:
    """The statements that install counting of `table`'s rows per `key` into `counts`."""
    upsert = (
        f"INSERT INTO {counts} AS c ({key}, session, n) {{rows}} "
        f"ON CONFLICT ({key}, session) DO UPDATE SET n = c.n + excluded.n;"
    )
    added = f"SELECT {key}, pg_backend_pid(), count(*) FROM new_rows GROUP BY {key}"
    removed = f"SELECT {key}, pg_backend_pid(), -count(*) FROM old_rows GROUP BY {key}"
    changed = (
        f"SELECT {key}, pg_backend_pid(), sum(d) FROM ("
        f"SELECT {key}, 1 AS d FROM new_rows UNION ALL SELECT {key}, -1 FROM old_rows"
        f") AS changes GROUP BY {key} HAVING sum(d) <> 0"
    )
    return [
        f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE",
        f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {upsert.format(rows=added)}
            ELSIF TG_OP = 'DELETE' THEN
                {upsert.format(rows=removed)}
            ELSE
                {upsert.format(rows=changed)}
            END IF;
            RETURN NULL;
        END $$""",
        f"""CREATE FUNCTION {name}_reset() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM {counts};
            RETURN NULL;
        END $$""",
        f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} "
        f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {name}()",
        f"CREATE TRIGGER {name}_update AFTER UPDATE ON {table} "
        f"REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()",
        f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} "
        f"REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {name}()",
        f"CREATE TRIGGER {name}_truncate AFTER TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_reset()",
        f"DELETE FROM {counts}",
        f"INSERT INTO {counts} ({key}, session, n) "
        f"SELECT {key}, 0, count(*) FROM {table} GROUP BY {key}",
    ]


def removal_sql(table: str, name: str) -> list[str]:
    return [
        *(f"DROP TRIGGER IF EXISTS {name}_{op} ON {table}"
          for op in ("insert", "update", "delete", "truncate")),  # fmt: skip
        f"DROP FUNCTION IF EXISTS {name}()",
        f"DROP FUNCTION IF EXISTS {name}_reset()",
    ]


def install(apps, schema_editor):
    for statement in counting_sql(EVENTS, COUNTS, KEY, NAME):
        schema_editor.execute(statement, params=None)


def remove(apps, schema_editor):
    for statement in removal_sql(EVENTS, NAME):
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("webhook_ingest", "0004_thin_events_origin_ordering"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventCount",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("status", models.CharField(max_length=16)),
                ("type", models.CharField(max_length=255)),
                ("endpoint", models.CharField(max_length=64)),
                ("style", models.CharField(max_length=16)),
                ("source", models.CharField(max_length=16)),
                ("session", models.IntegerField(help_text="The backend pid that wrote the row; 0: folded.")),
                ("n", models.BigIntegerField()),
            ],
            options={
                "verbose_name": "event count",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("status", "type", "endpoint", "style", "source", "session"),
                        name="webhook_event_count_key",
                    )
                ],
            },
        ),
        migrations.RunPython(install, remove, atomic=True),
        AddIndexConcurrently(
            model_name="webhookevent",
            index=models.Index(
                condition=models.Q(("status__in", ["pending", "processing", "retrying"])),
                fields=["status", "due_at"],
                name="webhook_event_open_due",
            ),
        ),
        AddIndexConcurrently(
            model_name="webhookevent",
            index=models.Index(
                condition=models.Q(("status", "succeeded"), _negated=True),
                fields=["status", "received_at"],
                name="webhook_event_open_received",
            ),
        ),
        RemoveIndexConcurrently(
            model_name="webhookevent",
            name="webhook_event_status_due",
        ),
    ]
