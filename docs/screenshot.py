"""Regenerate docs/admin-events.png: the admin event list of a running server.

    make screenshot

Runs inside `python -m devstack exec` (an embedded Postgres and Redis of its
own): starts gunicorn and a Celery worker with the test suite's handlers,
sends realistic signed events whose handlers succeed, fail and retry, fail
for good, or are still running, then opens the admin event list in headless
Chromium (Debian's `chromium` package) and saves a screenshot. Chromium is
driven over the DevTools protocol only to hand it a session cookie.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "admin-events.png"
WIDTH, HEIGHT = 1600, 960

# (type, handler behaviour from tests/testapp/webhooks.py, endpoint, livemode)
Sample = tuple[str, str | None, str, bool]

FINISHING: list[Sample] = [
    ("customer.created", None, "default", True),
    ("customer.subscription.created", None, "default", True),
    ("invoice.finalized", None, "default", True),
    ("invoice.paid", "fail_first", "default", True),
    ("payment_intent.succeeded", None, "default", True),
    ("checkout.session.completed", None, "default", True),
    ("charge.refunded", None, "connect", True),
    ("product.updated", None, "default", False),
    ("invoice.payment_failed", "fail_until:9", "default", True),
    ("customer.subscription.updated", "always_fail", "default", True),
    ("charge.dispute.created", "permanent", "connect", True),
]
# These keep both worker processes busy...
RUNNING: list[Sample] = [
    ("payment_intent.created", "sleep:600", "default", True),
    ("setup_intent.succeeded", "sleep:600", "default", True),
]
# ...so these wait.
WAITING: list[Sample] = [
    ("customer.updated", None, "default", True),
    ("price.created", None, "default", False),
]


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Install Chromium first: apt-get install chromium")
    sys.path.insert(0, str(ROOT))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        WEBHOOKS_TEST_QUEUE=f"screenshot-{uuid.uuid4().hex[:8]}",
        # Two quick retries, then a long wait: "retrying" stays on screen.
        WEBHOOKS_TEST_OVERRIDES=json.dumps({"RETRY_SCHEDULE": [0.3, 0.3, 3600]}),
        PYTHONPATH=str(ROOT),
        CELERY_SKIP_CHECKS="1",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, check=True
    )

    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.test import Client

    from tests import stack
    from tests.constants import CONNECT_SECRET, SECRET
    from tests.helpers import make_event
    from webhook_ingest.models import WebhookEvent
    from webhook_worker.stripe_events import encode_event, post_event

    if WebhookEvent.objects.exists():
        sys.exit("This database already has events; run me through `make screenshot`.")
    logs = Path(tempfile.mkdtemp(prefix="screenshot-logs-"))
    env = dict(os.environ)
    web = stack.gunicorn(env, logs, workers=2)
    worker = stack.celery_worker(env, logs, concurrency=2)
    try:

        def send(samples: list[Sample]) -> None:
            for event_type, behavior, endpoint, livemode in samples:
                event = make_event(
                    event_type,
                    behavior=behavior,
                    livemode=livemode,
                    account="acct_1PqR2sT3uVwXyZ4a" if endpoint == "connect" else None,
                )
                path = "" if endpoint == "default" else f"{endpoint}/"
                secret = SECRET if endpoint == "default" else CONNECT_SECRET
                url = f"{web.url}/webhooks/stripe/{path}"
                status, body = post_event(url, encode_event(event), secret)
                assert status == 200, body
                time.sleep(0.2)  # distinct received times, in this order

        def reach(message: str, **counts: int) -> None:
            def done() -> bool:
                return all(
                    WebhookEvent.objects.filter(status=s).count() == n for s, n in counts.items()
                )

            stack.wait_until(done, timeout=60, message=message)

        send(FINISHING)
        reach("the first events to finish or wait for a retry", succeeded=8, failed=1)
        stack.wait_until(
            lambda: WebhookEvent.objects.filter(status="retrying", attempts=3).count() == 2,
            message="two events to wait for their third retry",
        )
        send(RUNNING)
        reach("two events to be running", processing=2)
        send(WAITING)
        user, _ = User.objects.get_or_create(username="admin", defaults={"is_staff": True})
        user.is_staff = user.is_superuser = True
        user.save()
        client = Client()
        client.force_login(user)
        session = client.cookies["sessionid"].value
        png = asyncio.run(
            capture(chromium, f"{web.url}/admin/webhook_ingest/webhookevent/", session)
        )
    finally:
        worker.kill()
        web.stop()
    OUTPUT.write_bytes(png)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(png) // 1024} KiB)")
    return 0


async def capture(chromium: str, url: str, session: str) -> bytes:
    """Open `url` with the session cookie in headless Chromium; return a PNG."""
    from tornado.websocket import websocket_connect

    profile = Path(tempfile.mkdtemp(prefix="screenshot-chromium-"))
    proc = subprocess.Popen(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("Chromium did not start its DevTools endpoint")
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            targets = json.loads(response.read())
        page = next(t for t in targets if t["type"] == "page")
        ws = await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=64 << 20)
        ids = iter(range(1, 1000))

        async def call(method: str, **params: Any) -> dict[str, Any]:
            message_id = next(ids)
            ws.write_message(json.dumps({"id": message_id, "method": method, "params": params}))
            while True:
                raw = await ws.read_message()
                if raw is None:
                    raise RuntimeError("Chromium closed the DevTools connection")
                reply = json.loads(raw)
                if reply.get("method") == "Page.loadEventFired":
                    loaded.set()
                if reply.get("id") == message_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    result: dict[str, Any] = reply.get("result", {})
                    return result

        loaded = asyncio.Event()
        await call("Page.enable")
        await call("Network.setCookie", name="sessionid", value=session, url=url)
        await call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )

        async def wait_loaded() -> None:
            while not loaded.is_set():
                raw = await asyncio.wait_for(ws.read_message(), 30)
                if raw is not None and json.loads(raw).get("method") == "Page.loadEventFired":
                    loaded.set()
            loaded.clear()

        await call("Page.navigate", url=url)
        await wait_loaded()
        # Fold the admin's navigation sidebar, as a person would for a wide table.
        await call(
            "Runtime.evaluate",
            expression="localStorage.setItem('django.admin.navSidebarIsOpen', 'false')",
        )
        await call("Page.reload")
        await wait_loaded()
        shot = await call("Page.captureScreenshot", format="png")
        ws.close()
        return base64.b64decode(shot["data"])
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
