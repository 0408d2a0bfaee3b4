"""What the event admin shows: status badges, the list's filters, the attempt history."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from webhook_ingest import counts
from webhook_ingest.models import WebhookEvent

from .models import WebhookAttempt

Status = WebhookEvent.Status
Outcome = WebhookAttempt.Outcome
Skip = WebhookAttempt.Skip

# Badge colours, chosen to read in both the light and the dark admin theme.
STATUS_COLOURS: dict[str, str] = {
    Status.PENDING: "#5b6b7a",
    Status.PROCESSING: "#1f6fb2",
    Status.SUCCEEDED: "#2e7d32",
    Status.RETRYING: "#b26a00",
    Status.FAILED: "#c62828",
}

# An attempt's outcome in the colour of the event status it led to.
OUTCOME_STATUS: dict[str, str] = {
    Outcome.RUNNING: Status.PROCESSING,
    Outcome.SUCCEEDED: Status.SUCCEEDED,
    Outcome.RETRY: Status.RETRYING,
    Outcome.FAILED: Status.FAILED,
    Outcome.LOST: Status.FAILED,
    Outcome.SUPERSEDED: Status.PENDING,
    Outcome.TWIN: Status.PENDING,
}

# Where changelist_view leaves the counts for the status filter (one query per page).
COUNTS_ATTR = "_webhook_status_counts"


def status_badge(status: str, label: str | None = None) -> str:
    return format_html(
        '<span class="webhook-status" style="background:{};color:#fff;padding:2px 8px;'
        'border-radius:10px;font-weight:600;white-space:nowrap">{}</span>',
        STATUS_COLOURS.get(status, "#5b6b7a"),
        label or status,
    )


class CountedFilter(admin.SimpleListFilter):
    """A filter on fields `EventCount` has, under the events' own names: `counted()`
    is the condition, and it selects the matching events and their count rows alike."""

    @classmethod
    def counted(cls, value: str) -> Q:
        """The condition on `EventCount` rows that matches the filter's value."""
        return Q(**{str(cls.parameter_name): value})

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value:
            return queryset.filter(self.counted(value))
        return queryset


class StatusFilter(CountedFilter):
    """Status, with the number of events in each."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        found = getattr(request, COUNTS_ATTR, None) or counts.by_status()
        return [(value, f"{label} ({found[value]})") for value, label in Status.choices]


class CategoryFilter(CountedFilter):
    """The first segment of the type, as handlers match it: `customer` is every customer.* event."""

    title = "category"
    parameter_name = "category"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        categories = {t.split(".", 1)[0] for t in counts.present("type")}
        return [(c, c) for c in sorted(categories)]

    @classmethod
    def counted(cls, value: str) -> Q:
        return Q(type=value) | Q(type__startswith=f"{value}.")


class TypeFilter(CountedFilter):
    """The exact type, among those of stored events."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(t, t) for t in counts.present("type")]


class EndpointFilter(CountedFilter):
    """The endpoint events came on, among those of stored events."""

    title = "endpoint"
    parameter_name = "endpoint"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(e, e) for e in counts.present("endpoint")]


class SkippedFilter(admin.SimpleListFilter):
    """Events an attempt of which skipped handlers: superseded, or its twin was handled."""

    title = "handlers skipped"
    parameter_name = "skipped"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, str(label)) for value, label in Skip.choices if value]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in Skip.values and value:
            # A subquery over the attempts' partial index on skipped handlers.
            skipped = WebhookAttempt.objects.filter(skipped=value).values("event_id")
            return queryset.filter(pk__in=skipped)
        return queryset


def signature_note(event: WebhookEvent) -> str:
    """How the event reached us: verified on delivery, or fetched unsigned from the API."""
    if event.source == WebhookEvent.Source.DELIVERY:
        return "verified on delivery (Stripe-Signature)"
    return f"none: fetched from Stripe's Events API by {event.source} (the API sends no signature)"


def _attempt_row(attempt: WebhookAttempt) -> tuple[Any, ...]:
    duration = "" if attempt.duration_ms is None else f"{attempt.duration_ms:,.1f} ms"
    error: SafeString | str = ""
    if attempt.error_class:
        error = format_html("<strong>{}</strong>: {}", attempt.error_class, attempt.error_message)
    if attempt.traceback:
        error = format_html(
            "{}<details><summary>traceback</summary><pre>{}</pre></details>",
            error,
            attempt.traceback,
        )
    if attempt.note:
        error = format_html('{}<div class="webhook-note">{}</div>', error, attempt.note)
    return (
        attempt.number,
        status_badge(OUTCOME_STATUS.get(attempt.outcome, ""), attempt.get_outcome_display()),
        attempt.get_trigger_display(),
        attempt.started_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        duration,
        attempt.worker,
        error,
    )


def attempt_table(event: WebhookEvent) -> str:
    """The event's attempts as an HTML table, oldest first."""
    attempts = WebhookAttempt.objects.filter(event_id=event.pk).order_by("number")
    if not attempts:
        return "No attempt yet."
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (_attempt_row(a) for a in attempts),
    )
    return format_html(
        '<table class="webhook-attempts"><thead><tr><th>#</th><th>outcome</th>'
        "<th>trigger</th><th>started (UTC)</th><th>duration</th><th>worker</th>"
        "<th>error or note</th></tr></thead><tbody>{}</tbody></table>",
        rows,
    )
