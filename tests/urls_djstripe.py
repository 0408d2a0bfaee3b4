"""The suite's URLs plus dj-stripe's own webhook view (`/stripe/webhook/<uuid>/`)."""

from __future__ import annotations

from django.urls import include, path

from config.urls import urlpatterns as project_urls

urlpatterns = [
    *project_urls,
    path("stripe/", include("djstripe.urls", namespace="djstripe")),
]
