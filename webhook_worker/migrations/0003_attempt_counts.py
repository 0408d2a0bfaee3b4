"""Attempts counted as they change, as events are (webhook_ingest 0005).

Metrics read attempts per outcome, trigger and skip reason from
`AttemptCount`, kept by row-level triggers on the attempts table (updates
that keep a row's key call nothing), one row per database session and key. Installing takes a SHARE ROW EXCLUSIVE
lock on the attempts table while the existing attempts are counted: workers
wait that long (about a second per million attempts) to record attempts.
"""

from django.db import migrations, models

ATTEMPTS = "webhook_worker_webhookattempt"
COUNTS = "webhook_worker_attemptcount"
KEY = ["outcome", "trigger", "skipped"]
NAME = "webhook_attempt_count"


def counting_sql(table: str, counts: str, key: list[str], name: str) -> list[str]:
    """The statements that install counting of `table`'s rows per `key` into `counts`."""
    columns = ", ".join(key)
    upsert = (
        f"INSERT INTO {counts} AS c ({columns}, session, n) VALUES {{rows}} "
        f"ON CONFLICT ({columns}, session) DO UPDATE SET n = c.n + excluded.n;"
    )
    old = ", ".join(f"OLD.{column}" for column in key) + ", pg_backend_pid(), -1"
    new = ", ".join(f"NEW.{column}" for column in key) + ", pg_backend_pid(), 1"
    changed = " OR ".join(f"OLD.{column} IS DISTINCT FROM NEW.{column}" for column in key)
    return [
        f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE",
        f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                {upsert.format(rows=f"({new})")}
            ELSIF TG_OP = 'DELETE' THEN
                {upsert.format(rows=f"({old})")}
            ELSE
                {upsert.format(rows=f"({old}), ({new})")}
            END IF;
            RETURN NULL;
        END $$""",
        f"""CREATE FUNCTION {name}_reset() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM {counts};
            RETURN NULL;
        END $$""",
        f"CREATE TRIGGER {name}_insert AFTER INSERT ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {name}()",
        # Only updates that move a row to another key call the function.
        f"CREATE TRIGGER {name}_update AFTER UPDATE OF {columns} ON {table} "
        f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {name}()",
        f"CREATE TRIGGER {name}_delete AFTER DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {name}()",
        f"CREATE TRIGGER {name}_truncate AFTER TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_reset()",
        f"DELETE FROM {counts}",
        f"INSERT INTO {counts} ({columns}, session, n) "
        f"SELECT {columns}, 0, count(*) FROM {table} GROUP BY {columns}",
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
