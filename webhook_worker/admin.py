"""The admin for webhook events: find them, read them with their attempt history, retry them.

Events are evidence of what Stripe sent: nobody adds, edits or deletes them
here, superusers included. The view permission lets staff look; retrying
takes the change permission on webhook events.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from webhook_ingest import counts
from webhook_ingest.models import WebhookEvent

from .actions import RetrySummary, retry_events
from .admin_counts import EventPaginator, counted_condition, is_type_prefix
from .admin_display import (
    COUNTS_ATTR,
    CategoryFilter,
    EndpointFilter,
    SkippedFilter,
    StatusFilter,
    TypeFilter,
    attempt_table,
    signature_note,
    status_badge,
)

Status = WebhookEvent.Status

EVENT_FIELDS = (
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
    "style",
    "source",
    "signature_display",
    "snapshot_event",
    "waiting_for",
)
TIME_FIELDS = ("created", "received_at", "due_at", "processed_at")


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    """Read-only event list and pages, with the attempt history and the retry actions."""

    list_display = [
        "id",
        "type",
        "status_display",
        "attempts",
        "received_at",
        "processed_at",
        "livemode",
        "endpoint",
        "style",
        "source",
    ]
    list_filter = [
        StatusFilter,
        CategoryFilter,
        TypeFilter,
        "livemode",
        EndpointFilter,
        "style",
        "source",
        SkippedFilter,
        "received_at",
    ]
    search_fields = ["id", "type", "object_id"]
    search_help_text = (
        "A type or its beginning (invoice.pay), else an event id (evt_…) or a "
        "data.object id (cus_…, in_…, pi_…)."
    )
    list_per_page = 50
    # No figure on the list reads the whole events table: counts come from
    # the count tables or stop at LIST_LIMIT (admin_counts), filter choices
    # from the count tables, and the list sorts only by columns whose index
    # serves the order (the type's LIKE index does not).
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    sortable_by = ["id", "received_at"]
    actions = ["retry_selected", "rerun_selected"]
    fieldsets = [
        (None, {"fields": EVENT_FIELDS}),
        ("Times", {"fields": TIME_FIELDS}),
        ("Payload", {"fields": ["payload_display"]}),
        ("Raw body", {"fields": ["body_display"], "classes": ["collapse"]}),
        ("Attempts", {"fields": ["attempt_history"]}),
    ]
    readonly_fields = [
        *EVENT_FIELDS,
        *TIME_FIELDS,
        "payload_display",
        "body_display",
        "attempt_history",
    ]

    @admin.display(description="status", ordering="status")
    def status_display(self, obj: WebhookEvent) -> str:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="signature")
    def signature_display(self, obj: WebhookEvent) -> str:
        return signature_note(obj)

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

    @admin.display(description="attempt history")
    def attempt_history(self, obj: WebhookEvent) -> str:
        return attempt_table(obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEvent]:
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match is not None and match.url_name and match.url_name.endswith("changelist"):
            queryset = queryset.defer("body")  # the list never shows it; it can be large
        return queryset

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WebhookEvent], search_term: str
    ) -> tuple[QuerySet[WebhookEvent], bool]:
        # A type prefix when a stored type begins so (the count tables say),
        # else an exact event or object id: each uses an index, unlike icontains.
        term = search_term.strip()
        if not term:
            return queryset, False
        if is_type_prefix(term):
            return queryset.filter(type__startswith=term), False
        return queryset.filter(Q(pk=term) | Q(object_id=term)), False

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet[WebhookEvent],
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> EventPaginator:
        counted = counted_condition(request.GET)
        return EventPaginator(queryset, per_page, orphans, allow_empty_first_page, counted=counted)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        found = counts.by_status()
        setattr(request, COUNTS_ATTR, found)  # the status filter shows them too
        context = {
            "status_counts": [
                (value, status_badge(value, f"{label}: {found[value]}"))
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

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Retrying changes an event's state, so it takes the change permission."""
        opts = self.opts
        return bool(request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}"))

    def _report(self, request: HttpRequest, summary: RetrySummary) -> None:
        level = messages.SUCCESS if summary.queued else messages.WARNING
        self.message_user(request, summary.describe().capitalize() + ".", level)

    @admin.action(
        permissions=["retry"],
        description="Retry selected events (failed, pending, retrying)",
    )
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._report(request, retry_events(ids, source="admin", user=request.user))

    @admin.action(
        permissions=["retry"],
        description="Re-run selected events, including succeeded ones…",
    )
    def rerun_selected(
        self, request: HttpRequest, queryset: QuerySet[WebhookEvent]
    ) -> TemplateResponse | None:
        ids = list(queryset.values_list("pk", flat=True))
        if request.POST.get("post") == "yes":
            self._report(
                request,
                retry_events(ids, include_succeeded=True, source="admin", user=request.user),
            )
            return None
        events = list(queryset.order_by("-received_at").only("pk", "type", "status"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Re-run events, including succeeded ones?",
            "subtitle": None,
            "opts": self.opts,
            "events": events,
            "succeeded": [e for e in events if e.status == Status.SUCCEEDED],
            "processing": [e for e in events if e.status == Status.PROCESSING],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/webhook_worker/rerun_confirmation.html", context)

    # --- the same, for the one event on its own page -------------------------

    def _url_name(self, view: str) -> str:
        return f"{self.opts.app_label}_{self.opts.model_name}_{view}"

    def get_urls(self) -> list[URLPattern]:
        retry = path(
            "<path:object_id>/retry/",
            self.admin_site.admin_view(self.retry_view),
            name=self._url_name("retry"),
        )
        return [retry, *super().get_urls()]

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: WebhookEvent | None = None,
    ) -> HttpResponse:
        if obj is not None and obj.status != Status.PROCESSING:
            if self.has_retry_permission(request):
                context["webhook_retry_url"] = reverse(
                    f"{self.admin_site.name}:{self._url_name('retry')}",
                    args=[quote(obj.pk)],
                )
                context["webhook_retry_label"] = (
                    "Re-run this event…" if obj.status == Status.SUCCEEDED else "Retry this event"
                )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: retry one event, as the list's actions do, then back to its page.

        A succeeded event goes through the same confirmation page as "Re-run
        selected events" first.
        """
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_retry_permission(request):
            raise PermissionDenied
        event = self.get_object(request, unquote(object_id))
        if event is None:
            raise Http404("No such webhook event.")
        one = WebhookEvent.objects.filter(pk=event.pk)
        confirmed = request.POST.get("post") == "yes"
        if event.status == Status.SUCCEEDED and not confirmed:
            confirmation = self.rerun_selected(request, one)
            assert confirmation is not None
            return confirmation
        if confirmed:
            self.rerun_selected(request, one)
        else:
            self.retry_selected(request, one)
        change = f"{self.admin_site.name}:{self._url_name('change')}"
        return HttpResponseRedirect(reverse(change, args=[object_id]))
