"""Answer webhook deliveries at the WSGI level, ahead of Django's request handling (optional).

    # yourproject/wsgi.py
    from django.core.wsgi import get_wsgi_application
    from webhook_ingest.wsgi import WebhookLane

    application = WebhookLane(get_wsgi_application())

`WebhookMiddleware` spares a delivery the project's middleware; this spares
it Django's request handling around the middleware too: the request
signals and their receivers (which walk every database connection and
cache), the script prefix and URLconf bookkeeping, the middleware chain.
Together they were a third of a delivery's instructions (docs/benchmarks.md).
A POST whose path resolves to the webhook view is answered by that same view;
every other request goes to `application` unchanged.

What Django's handling did for a delivery, the lane still does: the request
is Django's `WSGIRequest`; an exception the view lets through becomes
Django's own error response (`response_for_exception`, which also sends
`got_request_exception` and logs it); 4xx and 5xx answers are logged to
`django.request` as Django logs them; and the one database connection a
delivery uses is closed afterwards if it failed or is older than
CONN_MAX_AGE, which is what Django's request signals do for it. What it
does not do: run receivers of `request_started` / `request_finished` that
a project added itself, and the middleware (as with `WebhookMiddleware`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIRequest, get_path_info
from django.db import connection
from django.http import HttpResponse
from django.urls import ResolverMatch
from django.utils.log import log_response

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WebhookLane:
    """A WSGI application that answers webhook deliveries itself and passes on the rest."""

    def __init__(self, application: WSGIApp) -> None:
        # Imported here: the views need the app registry, which
        # get_wsgi_application() has loaded by now but not at import time.
        from .middleware import webhook_match

        self.application = application
        self.match = webhook_match

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            match = self.match(get_path_info(environ))
            if match is not None:
                response = self.deliver(WSGIRequest(environ), match)
                start_response(
                    f"{response.status_code} {response.reason_phrase}", list(response.items())
                )
                return [response.content]
        return self.application(environ, start_response)

    @staticmethod
    def deliver(request: WSGIRequest, match: ResolverMatch) -> HttpResponse:
        request.resolver_match = match
        try:
            response: HttpResponse = match.func(request, *match.args, **match.kwargs)
        except Exception as exc:
            response = response_for_exception(request, exc)
        finally:
            # Inside a caller's transaction (a test's) the connection is not ours.
            if not connection.in_atomic_block:
                connection.close_if_unusable_or_obsolete()
        if response.status_code >= 400:
            log_response(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
        return response
