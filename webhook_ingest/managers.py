"""The `WebhookEvent` manager: the idempotent insert every recorded event goes through,
and the age of the oldest unfinished events (counts are in `counts`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connections, models, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import CharField, F, Func, Min, Value
from django.utils import timezone

from .parsing import ParsedEvent


def type_category() -> Func:
    """SQL for the first segment of the type: `customer` for customer.subscription.created."""
    return Func(F("type"), Value("."), Value(1), function="split_part", output_field=CharField())


class WebhookEventQuerySet(models.QuerySet[Any]):
    def unfinished(self) -> WebhookEventQuerySet:
        return self.filter(status__in=self.model.UNFINISHED)

    def oldest_unfinished(self) -> dict[str, datetime]:
        """When the oldest event of each unfinished status was received, for those with any.

        One query per status, each one probe of the partial (status,
        received_at) index, however many events are stored.
        """
        oldest = {}
        for status in self.model.UNFINISHED:
            first = self.order_by().filter(status=status).aggregate(first=Min("received_at"))
            if first["first"] is not None:
                oldest[status] = first["first"]
        return oldest


class WebhookEventManager(models.Manager.from_queryset(WebhookEventQuerySet)):  # type: ignore[misc]
    def db_for_write(self) -> str:
        """The database alias events are written to (DATABASE_ROUTERS decide)."""
        return router.db_for_write(self.model)

    # On the manager, not the queryset: the view calls it on every delivery,
    # and `objects.<queryset method>` builds a QuerySet first.
    def record(
        self, parsed: ParsedEvent, body: str, endpoint: str, source: str = "delivery"
    ) -> bool:
        """Insert the event unless its id is already stored; True if it was new.

        One statement, `INSERT ... ON CONFLICT DO NOTHING`: concurrent duplicate
        deliveries race inside Postgres' unique index, never in Python, so
        exactly one of them creates the row. `source` says how it came: a
        signed delivery, or fetched from Stripe's API (backfill, reconciliation).
        """
        now = timezone.now()
        values: dict[str, Any] = {
            "id": parsed.id,
            "type": parsed.type,
            "livemode": parsed.livemode,
            "api_version": parsed.api_version,
            "account": parsed.account,
            "created": parsed.created,
            "object_id": parsed.object_id,
            "endpoint": endpoint,
            "style": parsed.style,
            "source": source,
            "snapshot_event": parsed.snapshot_event,
            "body": body,
            "status": self.model.Status.PENDING.value,
            "attempts": 0,
            "received_at": now,
            "due_at": now,
            "scheduled": False,
            "last_error": "",
            "waiting_for": "",
        }
        connection = connections[self.db_for_write()]
        sql = _insert_sql(connection, self.model, list(values))
        with connection.cursor() as cursor:
            cursor.execute(sql, list(values.values()))
            return cursor.fetchone() is not None

    def newer_succeeded(
        self, object_id: str, event_id: str, next_second: datetime, thin_after: datetime | None
    ) -> str | None:
        """The newest succeeded event about `object_id` created at or after
        `next_second`, or (for a thin event) a thin one created after
        `thin_after`; None if there is none. In SQL: it runs on every attempt
        of a handler that skips superseded events."""
        connection = connections[self.db_for_write()]
        with connection.cursor() as cursor:
            cursor.execute(
                _newer_sql(connection, self.model),
                {
                    "object_id": object_id,
                    "event_id": event_id,
                    "next_second": next_second,
                    "thin": thin_after is not None,
                    "thin_after": thin_after or next_second,
                },
            )
            row = cursor.fetchone()
        return None if row is None else str(row[0])


_INSERT_SQL: dict[tuple[str, tuple[str, ...]], str] = {}
_NEWER_SQL: dict[str, str] = {}


def _newer_sql(connection: BaseDatabaseWrapper, model: type[models.Model]) -> str:
    if connection.alias not in _NEWER_SQL:
        qn = connection.ops.quote_name
        meta = model._meta

        def col(name: str) -> str:
            return qn(meta.get_field(name).column)  # type: ignore[union-attr,arg-type]

        _NEWER_SQL[connection.alias] = (
            f"SELECT {col('id')} FROM {qn(meta.db_table)} "
            f"WHERE {col('object_id')} = %(object_id)s AND {col('status')} = 'succeeded' "
            f"AND {col('id')} <> %(event_id)s AND ({col('created')} >= %(next_second)s "
            f"OR (%(thin)s AND {col('style')} = 'thin' AND {col('created')} > %(thin_after)s)) "
            f"ORDER BY {col('created')} DESC LIMIT 1"
        )
    return _NEWER_SQL[connection.alias]


def _insert_sql(
    connection: BaseDatabaseWrapper, model: type[models.Model], fields: list[str]
) -> str:
    key = (connection.alias, tuple(fields))
    if key not in _INSERT_SQL:
        meta = model._meta
        qn = connection.ops.quote_name
        columns = ", ".join(qn(meta.get_field(f).column) for f in fields)  # type: ignore[union-attr,arg-type]
        placeholders = ", ".join(["%s"] * len(fields))
        pk = qn(meta.pk.column)  # type: ignore[arg-type]
        _INSERT_SQL[key] = (
            f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES ({placeholders}) "
            f"ON CONFLICT ({pk}) DO NOTHING RETURNING {pk}"
        )
    return _INSERT_SQL[key]
