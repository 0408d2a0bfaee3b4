"""Read-only admin for stored events: find them, read them, see where they stand.

`webhook_worker.admin` extends this with the attempt history and the retry
actions (processing is the worker's business, so they live there).
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import CharField, Count, F, Func, Q, QuerySet, Value
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from .models import WebhookEvent

Status = WebhookEvent.Status

# Badge colours, chosen to read in both the light and the dark admin theme.
STATUS_COLOURS: dict[str, str] = {
    Status.PENDING: "#5b6b7a",
    Status.PROCESSING: "#1f6fb2",
    Status.SUCCEEDED: "#2e7d32",
    Status.RETRYING: "#b26a00",
    Status.FAILED: "#c62828",
}


def status_badge(status: str, label: str | None = None) -> str:
    return format_html(
        '<span class="webhook-status" style="background:{};color:#fff;padding:2px 8px;'
        'border-radius:10px;font-weight:600;white-space:nowrap">{}</span>',
        STATUS_COLOURS.get(status, "#5b6b7a"),
        label or status,
    )


# Where changelist_view leaves the counts for the status filter (one query per page).
COUNTS_ATTR = "_webhook_status_counts"


def type_category() -> Func:
    """SQL for the first segment of the type: `customer` for customer.subscription.created."""
    return Func(F("type"), Value("."), Value(1), function="split_part", output_field=CharField())


def status_counts() -> dict[str, int]:
    """Events per status, every status present (one GROUP BY over the status index)."""
    counts = dict.fromkeys(Status.values, 0)
    for row in WebhookEvent.objects.order_by().values("status").annotate(n=Count("pk")):
        counts[row["status"]] = row["n"]
    return counts


class StatusFilter(admin.SimpleListFilter):
    """Status, with the number of events in each."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        counts = getattr(request, COUNTS_ATTR, None) or status_counts()
        return [(value, f"{label} ({counts[value]})") for value, label in Status.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() in Status.values:
            return queryset.filter(status=self.value())
        return queryset


class CategoryFilter(admin.SimpleListFilter):
    """The first segment of the type, as handlers match it: `customer` is every customer.* event."""

    title = "category"
    parameter_name = "category"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        categories = (
            WebhookEvent.objects.order_by()
            .annotate(type_category=type_category())
            .values_list("type_category", flat=True)
            .distinct()
        )
        return [(c, c) for c in sorted(categories)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value:
            return queryset.filter(Q(type=value) | Q(type__startswith=f"{value}."))
        return queryset


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    """Events are evidence of what Stripe sent: nobody edits, adds or deletes them here."""

    list_display = [
        "id",
        "type",
        "status_display",
        "attempts",
        "received_at",
        "processed_at",
        "livemode",
        "endpoint",
    ]
    list_filter = [
        StatusFilter,
        CategoryFilter,
        "type",
        "livemode",
        "endpoint",
        "received_at",
    ]
    search_fields = ["id", "type", "object_id"]
    search_help_text = (
        "An event id (evt_…), a data.object id (cus_…, in_…, pi_…), or a type or its "
        "beginning (invoice.pay)."
    )
    list_per_page = 50
    # An exact count of a large table on every page view is not worth its cost.
    show_full_result_count = False
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "type",
                    "status_display",
                    "attempts",
                    "last_error",
                    "object_id",
                    "livemode",
                    "account",
                    "api_version",
                    "endpoint",
                ]
            },
        ),
        ("Times", {"fields": ["created", "received_at", "due_at", "processed_at"]}),
        ("Payload", {"fields": ["payload_display"]}),
        ("Raw body", {"fields": ["body_display"], "classes": ["collapse"]}),
    ]
    readonly_fields = [
        "id",
        "type",
        "status_display",
        "attempts",
        "last_error",
        "object_id",
        "livemode",
        "account",
        "api_version",
        "endpoint",
        "created",
        "received_at",
        "due_at",
        "processed_at",
        "payload_display",
        "body_display",
    ]

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: WebhookEvent) -> str:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="payload")
    def payload_display(self, obj: WebhookEvent) -> str:
        try:
            text = json.dumps(obj.payload, indent=2, ensure_ascii=False)
        except ValueError:
            text = obj.body
        # format_html escapes the payload: it is untrusted input.
        return format_html('<pre class="webhook-json">{}</pre>', text)

    @admin.display(description="body exactly as received")
    def body_display(self, obj: WebhookEvent) -> str:
        return format_html('<pre class="webhook-json">{}</pre>', obj.body)

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEvent]:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name and match.url_name.endswith("changelist"):
            queryset = queryset.defer("body")  # the list never shows it; it can be large
        return queryset

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WebhookEvent], search_term: str
    ) -> tuple[QuerySet[WebhookEvent], bool]:
        # Exact ids and a type prefix: each uses an index, unlike icontains.
        term = search_term.strip()
        if not term:
            return queryset, False
        return (
            queryset.filter(Q(pk=term) | Q(object_id=term) | Q(type__startswith=term)),
            False,
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        counts = status_counts()
        setattr(request, COUNTS_ATTR, counts)  # the status filter shows them too
        context = {
            "status_counts": [
                (value, status_badge(value, f"{label}: {counts[value]}"))
                for value, label in Status.choices
            ],
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
