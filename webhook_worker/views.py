"""Operational endpoints: health (JSON) and metrics (Prometheus text format).

Both report counts and ages only, never payloads or event ids.
"""

from __future__ import annotations

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import metrics, prometheus


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Database and broker reachability, events by status, oldest unfinished age, and
    each reconciled endpoint's checkpoint and last run.

    200 when both the database and the broker answer, 503 otherwise. Stuck
    or failed events do not make it unhealthy (restarting the web process
    would not fix them): alert on the metrics for those.
    """
    try:
        snap: metrics.Snapshot | None = metrics.snapshot(with_attempts=False)
    except DatabaseError:
        snap = None
    database = snap is not None
    broker = metrics.broker_reachable()
    healthy = database and broker
    body: dict[str, object] = {
        "status": "ok" if healthy else "unhealthy",
        "database": database,
        "broker": broker,
    }
    if snap is not None:
        age = snap.oldest_unfinished_age
        body.update(
            events=snap.by_status(),
            oldest_unfinished_age_seconds=None if age is None else round(age, 3),
            stale_events=snap.stale,
        )
        if snap.reconciliation:
            body["reconciliation"] = snap.reconciliation
    return JsonResponse(body, status=200 if healthy else 503)


@never_cache
@require_GET
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition of the same figures, plus ingest rejections."""
    payload, content_type = prometheus.render()
    return HttpResponse(payload, content_type=content_type)
