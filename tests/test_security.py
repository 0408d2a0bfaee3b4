"""Security review, as tests: where secrets could leak, what skips CSRF, who may act.

Findings and the reasoning behind each are in docs/guarantees.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.views.debug import SafeExceptionReporterFilter, technical_500_response

from webhook_ingest import views as ingest_views
from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import WebhookEvent

from .constants import API_KEY, CONNECT_SECRET, OLD_SECRET, OTHER_SECRET, SECRET, THIN_SECRET
from .helpers import make_event, post_signed

SECRETS = (SECRET, OLD_SECRET, CONNECT_SECRET, THIN_SECRET)


def all_views(resolver: URLResolver | None = None, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in (resolver or get_resolver()).url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from all_views(pattern, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.callback


def test_only_the_webhook_view_is_csrf_exempt():
    """Stripe cannot send a CSRF token, so the receiving view is exempt; it
    authenticates by signature instead. Nothing else may skip CSRF."""
    exempt = {route for route, view in all_views() if getattr(view, "csrf_exempt", False)}
    receive_routes = {route for route, view in all_views() if view is ingest_views.receive}
    assert receive_routes and exempt == receive_routes, exempt - receive_routes


def test_debug_error_page_hides_signing_secrets_and_signature_header():
    """With DEBUG on, Django's error page lists settings and request headers:
    the STRIPE_WEBHOOKS secrets and the Stripe-Signature header are masked."""
    request = RequestFactory().post(
        "/webhooks/stripe/",
        data="{}",
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=f"t=1,v1={SECRET}",
    )
    safe = SafeExceptionReporterFilter().get_safe_settings()
    assert SECRET not in repr(safe["STRIPE_WEBHOOKS"])
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        page = technical_500_response(request, *sys.exc_info()).content.decode()
    for secret in SECRETS:
        assert secret not in page
    assert "STRIPE_WEBHOOKS" in page  # the setting is listed, masked


def test_endpoint_settings_never_print_their_secrets_or_api_keys():
    for endpoint in webhook_settings.ENDPOINTS.values():
        assert endpoint.api_key == API_KEY
        for text in (repr(endpoint), str(endpoint)):
            for secret in (*SECRETS, API_KEY):
                assert secret not in text


@pytest.mark.django_db
def test_admin_pages_never_show_a_secret():
    """A superuser browsing every admin list, and an event's page, sees no
    signing secret, even for an event rejected with one in its header."""
    post_signed(Client(), make_event(), secret=OTHER_SECRET)  # rejected, not stored
    # "_0A" is what the admin's URL quoting would read as an escaped newline.
    event = make_event("invoice.paid", event_id="evt_0AdminQuoting_5F_checked")
    assert post_signed(Client(), event).status_code == 200
    user = User.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(user)
    pages = ["/admin/"] + [
        f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for model in admin.site._registry
    ]
    # Quoted as the admin's own links are: "_" is its escape character.
    pages.append(reverse("admin:webhook_ingest_webhookevent_change", args=[quote(event["id"])]))
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        text = response.content.decode()
        for secret in SECRETS:
            assert secret not in text, page
    assert WebhookEvent.objects.count() == 1


def test_every_admin_action_on_webhook_models_needs_a_permission():
    """No action on events or attempts is open to any staff user: each one
    declares the permission it needs (Django checks it before showing or
    running the action)."""
    ours = {"webhook_ingest", "webhook_worker"}
    found = 0
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in ours:
            continue
        for action in model_admin.actions or ():
            func = getattr(model_admin, action) if isinstance(action, str) else action
            assert getattr(func, "allowed_permissions", ()), f"{model.__name__}: {action}"
            found += 1
    assert found >= 1
