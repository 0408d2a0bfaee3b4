"""Attempts counted as they change, as events are (webhook_ingest 0005).

Metrics read attempts per outcome, trigger and skip reason from
`AttemptCount`, kept by statement-level triggers on the attempts table, one
row per database session and key. Installing takes a SHARE ROW EXCLUSIVE
lock on the attempts table while the existing attempts are counted: workers
wait that long (about a second per million attempts) to record attempts.
"""

from django.db import migrations, models

ATTEMPTS = "webhook_worker_webhookattempt"
COUNTS = "webhook_worker_attemptcount"
KEY = "outcome, trigger, skipped"
NAME = "webhook_attempt_count"


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
    for statement in counting_sql(ATTEMPTS, COUNTS, KEY, NAME):
        schema_editor.execute(statement, params=None)


def remove(apps, schema_editor):
    for statement in removal_sql(ATTEMPTS, NAME):
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("webhook_worker", "0002_skips_and_event_scans"),
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
