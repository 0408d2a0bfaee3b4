"""Answer webhook deliveries before the rest of the project's middleware runs.

    MIDDLEWARE = [
        "webhook_ingest.middleware.WebhookMiddleware",   # first
        "django.middleware.security.SecurityMiddleware",
        ...
    ]

A delivery is a server-to-server POST signed by Stripe. Sessions,
authentication, CSRF, messages and the security headers meant for browsers do
nothing for it, yet they cost it CPU (docs/benchmarks.md). A POST whose path
resolves to the webhook view goes straight to the view; every other request,
and any other method on the webhook URL, goes down the stack as before. It
still runs inside Django's request handling: request signals (connection
upkeep), exception handling and response logging are Django's, and the view
is the same one `urls.py` routes to without this middleware.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponseBase
from django.urls import NoReverseMatch, Resolver404, ResolverMatch, get_script_prefix, resolve
from django.urls import reverse as url_reverse

from . import views

# The webhook URLs' names, as webhook_ingest/urls.py declares them.
URL_NAME = "webhook_ingest:stripe"


class WebhookMiddleware:
    """Route a POST to the webhook view at once, skipping the middleware after this one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if request.method == "POST":
            match = webhook_match(request.path_info)
            if match is not None:
                request.resolver_match = match
                return match.func(request, *match.args, **match.kwargs)
        return self.get_response(request)


def webhook_match(path_info: str) -> ResolverMatch | None:
    """The URL match of `path_info` if it is a webhook endpoint's URL, else None."""
    prefix = mount_point()
    if prefix is None or not path_info.startswith(prefix):
        return None
    return _resolve_webhook(path_info)


# Resolving walks the whole URLconf; the endpoints' few paths are resolved
# once. Any other path under the prefix falls out of this small cache again.
@lru_cache(maxsize=64)
def _resolve_webhook(path_info: str) -> ResolverMatch | None:
    try:
        match = resolve(path_info)
    except Resolver404:
        return None
    return match if match.func is views.receive else None


@cache
def mount_point() -> str | None:
    """The path every webhook URL starts with (`/webhooks/stripe`); None if not routed.

    Computed once from the URLconf (and again after ROOT_URLCONF changes), so
    that the common case, a request for any other page, costs one
    `str.startswith`.
    """
    try:
        path = url_reverse(URL_NAME)
    except NoReverseMatch:
        return None
    return "/" + path[len(get_script_prefix()) :].lstrip("/")


@receiver(setting_changed)
def _forget_mount_point(*, setting: str, **kwargs: object) -> None:
    if setting == "ROOT_URLCONF":
        mount_point.cache_clear()
        _resolve_webhook.cache_clear()
