"""The event admin, extended with what the worker knows: attempt history and retries.

`webhook_ingest.admin` registers a read-only `WebhookEventAdmin`; this module
replaces that registration with a subclass that adds each event's attempts
and the retry actions. Retrying needs the change permission on webhook
events; viewing needs only the view permission.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from webhook_ingest import admin as ingest_admin
from webhook_ingest.models import WebhookEvent

from .actions import RetrySummary, retry_events
from .models import WebhookAttempt

OUTCOME_STATUS: dict[str, str] = {
    WebhookAttempt.Outcome.RUNNING: WebhookEvent.Status.PROCESSING,
    WebhookAttempt.Outcome.SUCCEEDED: WebhookEvent.Status.SUCCEEDED,
    WebhookAttempt.Outcome.RETRY: WebhookEvent.Status.RETRYING,
    WebhookAttempt.Outcome.FAILED: WebhookEvent.Status.FAILED,
    WebhookAttempt.Outcome.LOST: WebhookEvent.Status.FAILED,
}


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
    return (
        attempt.number,
        ingest_admin.status_badge(
            OUTCOME_STATUS.get(attempt.outcome, ""), attempt.get_outcome_display()
        ),
        attempt.get_trigger_display(),
        attempt.started_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
        duration,
        attempt.worker,
        error,
    )


class WebhookEventAdmin(ingest_admin.WebhookEventAdmin):
    """Adds the attempt history and the retry actions."""

    actions = ["retry_selected", "rerun_selected"]
    fieldsets = [
        *ingest_admin.WebhookEventAdmin.fieldsets,
        ("Attempts", {"fields": ["attempt_history"]}),
    ]
    readonly_fields = [*ingest_admin.WebhookEventAdmin.readonly_fields, "attempt_history"]

    @admin.display(description="attempt history")
    def attempt_history(self, obj: WebhookEvent) -> str:
        attempts = WebhookAttempt.objects.filter(event_id=obj.pk).order_by("number")
        if not attempts:
            return "No attempt yet."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td></tr>",
            (_attempt_row(a) for a in attempts),
        )
        return format_html(
            '<table class="webhook-attempts"><thead><tr><th>#</th><th>outcome</th>'
            "<th>trigger</th><th>started (UTC)</th><th>duration</th><th>worker</th>"
            "<th>error</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

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
        self._report(request, retry_events(ids))

    @admin.action(
        permissions=["retry"],
        description="Re-run selected events, including succeeded ones…",
    )
    def rerun_selected(
        self, request: HttpRequest, queryset: QuerySet[WebhookEvent]
    ) -> TemplateResponse | None:
        ids = list(queryset.values_list("pk", flat=True))
        if request.POST.get("post") == "yes":
            self._report(request, retry_events(ids, include_succeeded=True))
            return None
        events = list(queryset.order_by("-received_at").only("pk", "type", "status"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Re-run events, including succeeded ones?",
            "subtitle": None,
            "opts": self.opts,
            "events": events,
            "succeeded": [e for e in events if e.status == WebhookEvent.Status.SUCCEEDED],
            "processing": [e for e in events if e.status == WebhookEvent.Status.PROCESSING],
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
        if obj is not None and obj.status != WebhookEvent.Status.PROCESSING:
            if self.has_retry_permission(request):
                context["webhook_retry_url"] = reverse(
                    f"{self.admin_site.name}:{self._url_name('retry')}",
                    args=[quote(obj.pk)],
                )
                context["webhook_retry_label"] = (
                    "Re-run this event…"
                    if obj.status == WebhookEvent.Status.SUCCEEDED
                    else "Retry this event"
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
        if event.status == WebhookEvent.Status.SUCCEEDED and not confirmed:
            confirmation = self.rerun_selected(request, one)
            assert confirmation is not None
            return confirmation
        if confirmed:
            self.rerun_selected(request, one)
        else:
            self.retry_selected(request, one)
        change = f"{self.admin_site.name}:{self._url_name('change')}"
        return HttpResponseRedirect(reverse(change, args=[object_id]))


if admin.site.is_registered(WebhookEvent):
    admin.site.unregister(WebhookEvent)
admin.site.register(WebhookEvent, WebhookEventAdmin)
