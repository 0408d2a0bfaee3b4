from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("webhooks/", include("webhook_ingest.urls")),
    path("webhooks/", include("webhook_worker.urls")),
]
