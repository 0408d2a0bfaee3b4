"""`WebhookEvent`: one row per Stripe event id, the source of truth for its processing."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from django.db import connections, models, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import CharField, Count, F, Func, Value
from django.utils import timezone

from .parsing import ParsedEvent


def type_category() -> Func:
    """SQL for the first segment of the type: `customer` for customer.subscription.created."""
    return Func(F("type"), Value("."), Value(1), function="split_part", output_field=CharField())


class WebhookEventQuerySet(models.QuerySet["WebhookEvent"]):
    def unfinished(self) -> WebhookEventQuerySet:
        return self.filter(status__in=WebhookEvent.UNFINISHED)

    def count_by_status(self) -> dict[str, int]:
        """Events per status, every status present (one GROUP BY over the status index)."""
        counts = dict.fromkeys(WebhookEvent.Status.values, 0)
        for status, n in self.order_by().values_list("status").annotate(n=Count("pk")):
            counts[status] = n
        return counts

    def count_by_status_and_category(self) -> dict[tuple[str, str], int]:
        """Events per (status, category), for the statuses and categories present."""
        rows = (
            self.order_by()
            .annotate(category=type_category())
            .values_list("status", "category")
            .annotate(n=Count("pk"))
        )
        return {(status, category): n for status, category, n in rows}


class WebhookEventManager(models.Manager.from_queryset(WebhookEventQuerySet)):  # type: ignore[misc]
    def db_for_write(self) -> str:
        """The database alias events are written to (DATABASE_ROUTERS decide)."""
        return router.db_for_write(self.model)

    # On the manager, not the queryset: the view calls it on every delivery,
    # and `objects.<queryset method>` builds a QuerySet first.
    def record(self, parsed: ParsedEvent, body: str, endpoint: str) -> bool:
        """Insert the event unless its id is already stored; True if it was new.

        One statement, `INSERT ... ON CONFLICT DO NOTHING`: concurrent duplicate
        deliveries race inside Postgres' unique index, never in Python, so
        exactly one of them creates the row.
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
            "body": body,
            "status": WebhookEvent.Status.PENDING.value,
            "attempts": 0,
            "received_at": now,
            "due_at": now,
            "scheduled": False,
            "last_error": "",
        }
        connection = connections[self.db_for_write()]
        sql = _insert_sql(connection, list(values))
        with connection.cursor() as cursor:
            cursor.execute(sql, list(values.values()))
            return cursor.fetchone() is not None


_INSERT_SQL: dict[tuple[str, tuple[str, ...]], str] = {}


def _insert_sql(connection: BaseDatabaseWrapper, fields: list[str]) -> str:
    key = (connection.alias, tuple(fields))
    if key not in _INSERT_SQL:
        meta = WebhookEvent._meta
        qn = connection.ops.quote_name
        columns = ", ".join(qn(meta.get_field(f).column) for f in fields)  # type: ignore[union-attr,arg-type]
        placeholders = ", ".join(["%s"] * len(fields))
        pk = qn(meta.pk.column)  # type: ignore[arg-type]
        _INSERT_SQL[key] = (
            f"INSERT INTO {qn(meta.db_table)} ({columns}) VALUES ({placeholders}) "
            f"ON CONFLICT ({pk}) DO NOTHING RETURNING {pk}"
        )
    return _INSERT_SQL[key]


class WebhookEvent(models.Model):
    """A Stripe event as received, and where it stands in processing.

    Handlers receive an instance as `event`. The request body is kept exactly
    as received in `body`; `payload` and `data` are parsed from it.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        SUCCEEDED = "succeeded", "Succeeded"
        RETRYING = "retrying", "Retrying"
        FAILED = "failed", "Failed"

    UNFINISHED = (Status.PENDING, Status.PROCESSING, Status.RETRYING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED)

    id = models.CharField("Stripe event id", max_length=255, primary_key=True)
    type = models.CharField(max_length=255)
    livemode = models.BooleanField()
    # None, not "", is what Stripe sends and what handlers test for.
    api_version = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    account = models.CharField(  # noqa: DJ001
        "Connect account", max_length=255, null=True, blank=True
    )
    created = models.DateTimeField("created at Stripe", db_index=True)
    object_id = models.CharField("data.object id", max_length=255, blank=True)
    endpoint = models.CharField(max_length=64)
    body = models.TextField(help_text="The request body exactly as received.")

    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # When a worker should next pick the event up; the sweeper re-enqueues
    # unfinished events that are REQUEUE_AFTER past this.
    due_at = models.DateTimeField(default=timezone.now)
    scheduled = models.BooleanField(
        default=False,
        help_text="A retry waiting in the database: the sweeper publishes it when due.",
    )
    last_error = models.TextField(blank=True)

    objects = WebhookEventManager()

    class Meta:
        ordering = ["-received_at"]
        # Every index is rewritten by each change of status (twice per
        # attempt), so there are only those that queries use. `db_index` on
        # a CharField would add a second, `varchar_pattern_ops` index for
        # LIKE; only `type` needs prefix matching (categories), and its
        # pattern_ops index serves equality as well.
        indexes = [
            models.Index(fields=["status", "due_at"], name="webhook_event_status_due"),
            models.Index(
                fields=["type"], name="webhook_event_type", opclasses=["varchar_pattern_ops"]
            ),
            models.Index(fields=["account"], name="webhook_event_account"),
            models.Index(fields=["object_id"], name="webhook_event_object_id"),
        ]
        verbose_name = "webhook event"

    def __str__(self) -> str:
        return f"{self.type} {self.id}"

    @cached_property
    def payload(self) -> dict[str, Any]:
        """The whole event as a dict, parsed from `body`."""
        value: dict[str, Any] = json.loads(self.body)
        return value

    @property
    def data(self) -> dict[str, Any]:
        """`{"object": {...}}`, plus `previous_attributes` when Stripe sent them."""
        value: dict[str, Any] = self.payload.get("data", {})
        return value

    @property
    def parts(self) -> list[str]:
        """`"customer.subscription.created"` -> `["customer", "subscription", "created"]`."""
        return self.type.split(".")

    @property
    def category(self) -> str:
        """The first segment of the type: `"customer"`."""
        return self.parts[0]

    @property
    def verb(self) -> str:
        """The rest of the type: `"subscription.created"`."""
        return ".".join(self.parts[1:])

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED
