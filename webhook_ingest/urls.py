from __future__ import annotations

from django.urls import re_path

from . import views

app_name = "webhook_ingest"

# The trailing slash is optional: Stripe does not follow the redirect that
# APPEND_SLASH would answer with.
urlpatterns = [
    re_path(r"^stripe/?$", views.receive, name="stripe"),
    re_path(r"^stripe/(?P<endpoint>[^/]+)/?$", views.receive, name="stripe-endpoint"),
]
