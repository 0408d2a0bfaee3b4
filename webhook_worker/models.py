"""`WebhookAttempt`: one row per time a worker ran an event's handlers.
`AttemptCount`: attempts per outcome, kept by triggers.
`EventScan`: a scan of Stripe's Events API (a backfill, or an endpoint's reconciliation)."""

from __future__ import annotations

from django.db import models

from webhook_ingest.models import WebhookEvent


class WebhookAttempt(models.Model):
    """One attempt at processing an event, kept even when its writes rolled back."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        RETRY = "retry", "Failed, retry scheduled"
        FAILED = "failed", "Failed, dead-lettered"
        LOST = "lost", "Worker lost"
        # No handler ran: each would have skipped the event (see `skipped`).
        SUPERSEDED = "superseded", "Skipped: superseded"
        TWIN = "twin", "Skipped: its twin was handled"

    class Trigger(models.TextChoices):
        DELIVERY = "delivery", "First delivery"
        RETRY = "retry", "Retry"
        SWEEPER = "sweeper", "Sweeper"
        MANUAL = "manual", "Manual"
        ORDER = "order", "Its turn (ordering)"
        BACKFILL = "backfill", "Backfill"
        RECONCILIATION = "reconciliation", "Reconciliation"

    class Skip(models.TextChoices):
        NONE = "", "—"
        SUPERSEDED = "superseded", "Superseded"
        TWIN = "twin", "Twin handled"

    event = models.ForeignKey(
        WebhookEvent,
        on_delete=models.CASCADE,
        related_name="attempt_log",
        db_index=False,  # the (event, number) index below serves lookups by event
    )
    number = models.PositiveIntegerField()
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    error_class = models.CharField(max_length=255, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    worker = models.CharField(max_length=255, blank=True, help_text="host and process id")
    task_id = models.CharField(max_length=255, blank=True)
    skipped = models.CharField(
        max_length=16,
        choices=Skip.choices,
        blank=True,
        default=Skip.NONE,
        help_text="Why handlers were skipped in this attempt, if any were.",
    )
    note = models.TextField(blank=True, help_text="Which handlers were skipped, and why.")

    class Meta:
        ordering = ["event", "number"]
        indexes = [
            models.Index(fields=["event", "number"], name="webhook_attempt_event_num"),
            # The admin's "handlers skipped" filter; few attempts skip any.
            models.Index(
                fields=["skipped", "event"],
                name="webhook_attempt_skipped",
                condition=~models.Q(skipped=""),
            ),
        ]
        verbose_name = "attempt"

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.event_id}: {self.outcome}"


class AttemptCount(models.Model):
    """How many recorded attempts have one outcome, trigger and skip reason.

    Kept by Postgres triggers on the attempts table (migration 0003) exactly
    as `webhook_ingest.models.EventCount` is for events: rows per database
    session, folded by the sweeper, summed when read.
    """

    outcome = models.CharField(max_length=16)
    trigger = models.CharField(max_length=16)
    skipped = models.CharField(max_length=16)
    session = models.IntegerField(help_text="The backend pid that wrote the row; 0: folded.")
    n = models.BigIntegerField()

    KEY = ("outcome", "trigger", "skipped")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["outcome", "trigger", "skipped", "session"],
                name="webhook_attempt_count_key",
            )
        ]
        verbose_name = "attempt count"

    def __str__(self) -> str:
        return f"{self.outcome} {self.trigger}: {self.n}"


class EventScan(models.Model):
    """A scan of Stripe's Events API for one endpoint, and its checkpoint.

    A backfill is one row per run; an endpoint's reconciliation is one row,
    carried from run to run. `checkpoint` moves forward as the scan goes:
    every event created before it has been recorded (or found present).
    """

    class Kind(models.TextChoices):
        BACKFILL = "backfill", "Backfill"
        RECONCILIATION = "reconciliation", "Reconciliation"

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        INTERRUPTED = "interrupted", "Interrupted"
        FINISHED = "finished", "Finished"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    endpoint = models.CharField(max_length=64)
    type_prefix = models.CharField(max_length=255, blank=True)
    failed_only = models.BooleanField(default=False)
    since = models.DateTimeField(help_text="Events created at or after this are scanned.")
    checkpoint = models.DateTimeField(help_text="Every event created before this is recorded.")
    # Within the slice being scanned: the API's cursor for the next page, if any.
    cursor = models.CharField(max_length=1024, blank=True)
    slice_end = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    # Counts of the current (or last) run.
    found = models.PositiveIntegerField(default=0)
    recorded = models.PositiveIntegerField(default=0)
    already_present = models.PositiveIntegerField(default=0)
    pages = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        indexes = [models.Index(fields=["kind", "endpoint"], name="webhook_scan_kind_endpoint")]
        verbose_name = "Events API scan"

    def __str__(self) -> str:
        return f"{self.kind} of {self.endpoint} up to {self.checkpoint:%Y-%m-%d %H:%M:%S}"
