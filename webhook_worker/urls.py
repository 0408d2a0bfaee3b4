from __future__ import annotations

from django.urls import path

from . import views

app_name = "webhook_worker"

urlpatterns = [
    path("health/", views.health, name="health"),
    # No trailing slash: the path Prometheus scrapes by convention.
    path("metrics", views.prometheus_metrics, name="metrics"),
]
