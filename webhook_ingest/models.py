"""`WebhookEvent`: one row per Stripe event id, the source of truth for its processing."""

from __future__ import annotations

import json
from datetime import timedelta
from functools import cached_property
from typing import Any

from django.db import models
from django.utils import timezone

from . import stripe_api
from .conf import webhook_settings
from .managers import WebhookEventManager, type_category
from .parsing import type_parts

__all__ = ["EventCount", "WebhookEvent", "WebhookEventManager", "type_category"]

_ONE_SECOND = timedelta(seconds=1)


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

    class Style(models.TextChoices):
        SNAPSHOT = "snapshot", "Snapshot"
        THIN = "thin", "Thin"

    class Source(models.TextChoices):
        DELIVERY = "delivery", "Delivery (signed)"
        BACKFILL = "backfill", "Backfill (from the Events API, unsigned)"
        RECONCILIATION = "reconciliation", "Reconciliation (from the Events API, unsigned)"

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
    object_id = models.CharField(
        "object id",
        max_length=255,
        blank=True,
        help_text="data.object.id of a snapshot event, related_object.id of a thin one.",
    )
    endpoint = models.CharField(max_length=64)
    style = models.CharField(max_length=16, choices=Style.choices, default=Style.SNAPSHOT)
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.DELIVERY)
    snapshot_event = models.CharField(
        max_length=255, blank=True, help_text="A thin twin's snapshot event id."
    )
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
    waiting_for = models.CharField(
        max_length=255,
        blank=True,
        help_text="With ORDERING: the earlier event (or the object) this one waits for.",
    )
    traceparent = models.CharField(
        max_length=128,
        blank=True,
        default="",
        db_default="",
        help_text=(
            "With OpenTelemetry set up: the W3C trace context of the event's first attempt, "
            "which the sweeper's re-enqueues link back to."
        ),
    )

    objects = WebhookEventManager()

    class Meta:
        ordering = ["-received_at"]
        # Every index is rewritten by each change of status (twice per
        # attempt), so there are only those that queries use. `db_index` on
        # a CharField would add a second, `varchar_pattern_ops` index for
        # LIKE; only `type` needs prefix matching (categories), and its
        # pattern_ops index serves equality as well.
        indexes = [
            # Partial: a finished event leaves them. The sweeper reads the
            # first; the admin's status filter and the oldest unfinished
            # event's age read the second (succeeded events are found by
            # `received_at`, they are nearly all of them).
            models.Index(
                fields=["status", "due_at"],
                name="webhook_event_open_due",
                condition=models.Q(status__in=["pending", "processing", "retrying"]),
            ),
            models.Index(
                fields=["status", "received_at"],
                name="webhook_event_open_received",
                condition=~models.Q(status="succeeded"),
            ),
            models.Index(
                fields=["type"], name="webhook_event_type", opclasses=["varchar_pattern_ops"]
            ),
            models.Index(fields=["account"], name="webhook_event_account"),
            models.Index(fields=["object_id"], name="webhook_event_object_id"),
            models.Index(
                fields=["snapshot_event"],
                name="webhook_event_snapshot_event",
                condition=~models.Q(snapshot_event=""),
            ),
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
        return type_parts(self.type)

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

    @property
    def is_thin(self) -> bool:
        return self.style == self.Style.THIN

    @property
    def related_object(self) -> dict[str, Any] | None:
        """A thin event's `related_object` (`id`, `type`, `url`) as Stripe sent it; else None."""
        related = self.payload.get("related_object") if self.is_thin else None
        return related if isinstance(related, dict) else None

    def fetch_related_object(self) -> Any:
        """The related object's current state from Stripe's API; None without one.

        A thin event only (None for a snapshot event, whose `data.object` is
        the object). Uses the endpoint's API key and base, in the event's
        context (`Stripe-Context`). Makes a request on every call.
        """
        if not self.is_thin:
            return None
        endpoint = webhook_settings.endpoint_or_defaults(self.endpoint)
        return stripe_api.fetch_related_object(self.payload, endpoint)

    def fetch_event(self) -> Any:
        """The whole event from Stripe's API: `/v2/core/events/<id>` for a thin event,
        `/v1/events/<id>` for a snapshot one, in the event's context."""
        endpoint = webhook_settings.endpoint_or_defaults(self.endpoint)
        if self.is_thin:
            return stripe_api.fetch_thin_event(self.payload, endpoint)
        return stripe_api.fetch_snapshot_event(self.id, self.account, endpoint)

    @cached_property
    def superseded_by(self) -> str | None:
        """The id of a newer event about the same object that already succeeded, or None.

        Newer means created in a later second (snapshot events' `created` has
        one-second resolution), or later at all when both events are thin.
        Events created in the same second never supersede each other.
        """
        if not self.object_id:
            return None
        return WebhookEvent.objects.newer_succeeded(
            self.object_id,
            self.pk,
            next_second=self.created.replace(microsecond=0) + _ONE_SECOND,
            thin_after=self.created if self.is_thin else None,
        )

    @property
    def is_superseded(self) -> bool:
        """True when a newer event about the same object (`object_id`) has already succeeded."""
        return self.superseded_by is not None


class EventCount(models.Model):
    """How many stored events have one status, type, endpoint, style and source.

    Written only by Postgres triggers on the events table (migration 0005),
    in the same transaction as the change they count: every insert, update
    and delete, whoever makes it. Each database session adds to rows of its
    own (`session` is its backend pid), so sessions never wait on each
    other's counts; the sweeper folds the rows of ended sessions into
    `session` 0. The total for a key is the sum over its rows.
    """

    status = models.CharField(max_length=16)
    type = models.CharField(max_length=255)
    endpoint = models.CharField(max_length=64)
    style = models.CharField(max_length=16)
    source = models.CharField(max_length=16)
    session = models.IntegerField(help_text="The backend pid that wrote the row; 0: folded.")
    n = models.BigIntegerField()

    KEY = ("status", "type", "endpoint", "style", "source")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["status", "type", "endpoint", "style", "source", "session"],
                name="webhook_event_count_key",
            )
        ]
        verbose_name = "event count"

    def __str__(self) -> str:
        return f"{self.status} {self.type} ({self.endpoint}): {self.n}"
