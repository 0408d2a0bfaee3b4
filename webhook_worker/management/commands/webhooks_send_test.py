"""`manage.py webhooks_send_test`: send a realistic, signed Stripe event to a running server."""

from __future__ import annotations

import json
import os
import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.urls import NoReverseMatch, reverse

from webhook_ingest.conf import webhook_settings
from webhook_ingest.models import WebhookEvent
from webhook_worker.stripe_events import (
    EVENT_TYPES,
    build_event,
    build_thin_event,
    encode_event,
    post_event,
    thin_related_object,
)

# The local server: `make run` sets WEB_PORT when 8000 is taken.
DEFAULT_BASE_URL = "http://127.0.0.1:{port}"


class Command(BaseCommand):
    help = (
        "Send a realistic Stripe event of type TYPE, signed with the endpoint's secret "
        "exactly as Stripe signs it, to a running server, and print the response. "
        "--list shows the types with realistic payloads. To a thin endpoint, a thin event: "
        "the thin twin of a listed type (v1.customer.updated) or a v2.core.account type."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("type", nargs="?", metavar="TYPE", help="e.g. customer.created")
        parser.add_argument(
            "--url",
            help="the webhook URL (default: http://127.0.0.1:$WEB_PORT, or :8000, plus the "
            "endpoint's path)",
        )
        parser.add_argument(
            "--endpoint",
            default="default",
            metavar="NAME",
            help="endpoint whose signing secret (and default URL) to use (default: default)",
        )
        parser.add_argument("--secret", help="sign with this secret instead of the endpoint's")
        parser.add_argument("--count", type=int, default=1, help="how many events to send")
        parser.add_argument("--livemode", action="store_true", help="mark the event livemode")
        parser.add_argument("--account", help="a Connect account id (acct_…) for the event")
        parser.add_argument(
            "--wait",
            type=float,
            nargs="?",
            const=30.0,
            metavar="SECONDS",
            help="then wait (default 30 s) for the event to finish, reading this database",
        )
        parser.add_argument("--list", action="store_true", help="list the known event types")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            for name in sorted(EVENT_TYPES):
                self.stdout.write(name)
            return
        event_type = options["type"]
        if not event_type:
            raise CommandError("Give an event TYPE (see --list).")
        name = options["endpoint"]
        endpoint = webhook_settings.endpoint(name)
        thin = endpoint is not None and endpoint.is_thin
        if thin and thin_related_object(event_type) is None:
            raise CommandError(
                f"Endpoint {name!r} receives thin events; {event_type!r} is not a thin type "
                "this command can build (v1.customer.updated, v2.core.account.updated, ...)."
            )
        if not thin and event_type not in EVENT_TYPES:
            raise CommandError(
                f"No realistic payload for {event_type!r}. Known types: "
                + ", ".join(sorted(EVENT_TYPES))
            )
        if options["count"] < 1:
            raise CommandError("--count must be at least 1.")
        secret = options["secret"] or self._secret(name)
        url = options["url"] or self._default_url(name)
        sent = []
        for _ in range(options["count"]):
            if thin:
                event = build_thin_event(
                    event_type, livemode=options["livemode"], context=options["account"]
                )
            else:
                event = build_event(
                    event_type, livemode=options["livemode"], account=options["account"]
                )
            try:
                status, response = post_event(url, encode_event(event), secret)
            except OSError as exc:
                raise CommandError(f"Could not reach {url}: {exc}") from None
            line = f"{event_type} {event['id']} -> {url}: {status} {json.dumps(response)}"
            if status != 200:
                raise CommandError(line)
            self.stdout.write(line)
            sent.append(event["id"])
        self.stdout.write(self.style.SUCCESS(f"Sent {len(sent)} {event_type} event(s)."))
        if options["wait"] is not None:
            self._wait(sent, options["wait"])

    def _secret(self, name: str) -> str:
        endpoint = webhook_settings.endpoint(name)
        if endpoint is None:
            known = ", ".join(sorted(webhook_settings.ENDPOINTS))
            raise CommandError(f"Unknown endpoint {name!r}; configured endpoints: {known}.")
        if not endpoint.secrets:
            raise CommandError(
                f"Endpoint {name!r} has no signing secret configured: set it in "
                "STRIPE_WEBHOOKS['ENDPOINTS'] or pass --secret."
            )
        return endpoint.secrets[0]

    def _default_url(self, name: str) -> str:
        try:
            if name == "default":
                path = reverse("webhook_ingest:stripe")
            else:
                path = reverse("webhook_ingest:stripe-endpoint", kwargs={"endpoint": name})
        except NoReverseMatch:
            path = "/webhooks/stripe/" + ("" if name == "default" else f"{name}/")
        # The URL patterns make the trailing slash optional; Stripe's dashboard shows it.
        base = DEFAULT_BASE_URL.format(port=os.environ.get("WEB_PORT") or "8000")
        return base + path.rstrip("/") + "/"

    def _wait(self, ids: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rows = dict(WebhookEvent.objects.filter(pk__in=ids).values_list("pk", "status"))
            if rows and all(s in WebhookEvent.FINISHED for s in rows.values()):
                break
            if time.monotonic() > deadline:
                raise CommandError(f"Not finished after {timeout:g}s: {rows}")
            time.sleep(0.2)
        for pk in ids:
            event = WebhookEvent.objects.get(pk=pk)
            style = self.style.SUCCESS if event.status == "succeeded" else self.style.ERROR
            self.stdout.write(
                style(f"{pk}: {event.status} after {event.attempts} attempt(s)")
                + (f" ({event.last_error})" if event.last_error else "")
            )
