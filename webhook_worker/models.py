"""`WebhookAttempt`: one row per time a worker ran an event's handlers."""

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

    class Trigger(models.TextChoices):
        DELIVERY = "delivery", "First delivery"
        RETRY = "retry", "Retry"
        SWEEPER = "sweeper", "Sweeper"
        MANUAL = "manual", "Manual"

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

    class Meta:
        ordering = ["event", "number"]
        indexes = [models.Index(fields=["event", "number"], name="webhook_attempt_event_num")]
        verbose_name = "attempt"

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.event_id}: {self.outcome}"
