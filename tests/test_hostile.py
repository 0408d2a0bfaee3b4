"""Hostile requests against a live server: a clear 4xx, nothing stored, still serving.

tests/test_ingest.py checks the view's answers in-process; this file sends
the same kinds of abuse over real sockets to gunicorn started as the
reference project's web command starts it (the `web:` line of the Procfile):
`gunicorn config.wsgi:application` with no options, in the repository root,
so every setting comes from ./gunicorn.conf.py. What is proven is what a
deployment runs: gunicorn's parsing, its worker model, and Django together.
After every request the database holds nothing and the server still accepts
a valid delivery.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass

import pytest

from devstack.services import free_port
from webhook_ingest.models import WebhookEvent
from webhook_worker.stripe_events import encode_event, sign_body

from . import stack
from .constants import CONNECT_SECRET, OLD_SECRET, OTHER_SECRET, SECRET
from .helpers import make_event

pytestmark = pytest.mark.django_db(transaction=True)

PROCFILE = stack.ROOT / "Procfile"
MAX_BODY = 256 * 1024  # tests/settings.py MAX_BODY_BYTES


def procfile_web_command() -> str:
    for line in PROCFILE.read_text().splitlines():
        if line.startswith("web:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("the Procfile has no web: line")


# The Procfile's web command: no options, every setting from ./gunicorn.conf.py.
WEB_COMMAND = "gunicorn config.wsgi:application"
# gunicorn.conf.py's defaults, which the server below runs with.
WEB_WORKERS = 2


@pytest.fixture(scope="module")
def server(stack_env, log_dir) -> Iterator[stack.Gunicorn]:
    """gunicorn as `make run` starts it: the Procfile's web command, no options,
    run in the repository root so gunicorn reads ./gunicorn.conf.py itself."""
    assert procfile_web_command() == WEB_COMMAND
    port = free_port()
    # The conf file's defaults, not whatever this shell sets; WEB_PORT is the
    # only setting given, as `make run` gives it. A queue no worker consumes:
    # stored events stay pending, so nothing races the database flush between tests.
    env = {k: v for k, v in stack_env.items() if k not in ("WEB_CONCURRENCY", "WEB_THREADS")}
    env.update(WEB_PORT=str(port), WEBHOOKS_TEST_QUEUE=f"hostile-{port}")
    env.pop("PORT", None)
    argv = [stack.python(), "-m", *WEB_COMMAND.split()]
    proc = stack.Gunicorn("gunicorn-procfile", argv, env, log_dir)
    proc.port = port
    proc.start()
    stack.wait_until_serving(proc, WEB_WORKERS)
    assert "Using worker: gthread" in proc.log(), proc.log_tail()
    yield proc
    proc.stop()


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def error(self) -> str | None:
        try:
            return str(json.loads(self.body)["error"])
        except (ValueError, KeyError, TypeError):
            return None


def request_bytes(
    path: str = "/webhooks/stripe/",
    body: bytes = b"",
    headers: list[tuple[str, str | bytes]] | None = None,
    method: str = "POST",
    content_length: int | None = None,
) -> bytes:
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in headers or []:
        head.append(name.encode() + b": " + (value if isinstance(value, bytes) else value.encode()))
    if content_length is not None or body:
        head.append(
            f"Content-Length: {len(body) if content_length is None else content_length}".encode()
        )
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def send(port: int, raw: bytes, timeout: float = 30) -> Reply:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Reply(response.status, dict(response.getheaders()), response.read())


def signed(
    body: str, secret: str = SECRET, timestamp: int | None = None
) -> list[tuple[str, str | bytes]]:
    return [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Stripe-Signature", sign_body(body, secret, timestamp)),
    ]


def valid_body() -> str:
    return encode_event(make_event("customer.created"))


def assert_still_serving(port: int) -> None:
    """Nothing was stored by the hostile request, and a real delivery still works."""
    assert WebhookEvent.objects.count() == 0
    event = make_event("invoice.paid")
    body = encode_event(event)
    reply = send(port, request_bytes(body=body.encode(), headers=signed(body)))
    assert reply.status == 200, reply
    assert WebhookEvent.objects.filter(pk=event["id"]).exists()


def assert_clean_rejection(reply: Reply, status: int, code: str | None) -> None:
    assert reply.status == status, reply
    if code is not None:
        assert reply.error == code, reply
    text = reply.body.decode("utf-8", "replace")
    for secret in (SECRET, OLD_SECRET, CONNECT_SECRET):
        assert secret not in text
    assert "Traceback" not in text and 'File "' not in text


def _event_json(**changes: object) -> str:
    event = make_event()
    for key, value in changes.items():
        if value is None:
            event.pop(key)
        else:
            event[key] = value
    return json.dumps(event)


def _signed_request(body: str, **kwargs: object) -> bytes:
    return request_bytes(body=body.encode(), headers=signed(body, **kwargs))  # type: ignore[arg-type]


def _deep(depth: int) -> str:
    return '{"id": "evt_deep", "object": "event", "x": ' + "[" * depth + "]" * depth + "}"


NOW = int(time.time())

# name -> (raw request builder, expected status, expected error code)
CASES: dict[str, tuple[Callable[[], bytes], int, str | None]] = {
    "missing signature": (
        lambda: request_bytes(
            body=valid_body().encode(), headers=[("Content-Type", "application/json")]
        ),
        400,
        "missing_signature",
    ),
    "empty signature": (
        lambda: request_bytes(
            body=valid_body().encode(),
            headers=[("Content-Type", "application/json"), ("Stripe-Signature", "")],
        ),
        400,
        "missing_signature",
    ),
    "duplicated signature headers": (
        lambda: (
            lambda b: request_bytes(
                body=b.encode(), headers=[*signed(b), ("Stripe-Signature", sign_body(b, SECRET))]
            )
        )(valid_body()),
        400,
        "malformed_signature",
    ),
    "garbled signature bytes": (
        lambda: request_bytes(
            body=valid_body().encode(),
            headers=[
                ("Content-Type", "application/json"),
                ("Stripe-Signature", b"t=\xc3\x28\xff,v1=\xfe"),
            ],
        ),
        400,
        "malformed_signature",
    ),
    "signature header of 6 KB": (
        lambda: request_bytes(
            body=valid_body().encode(),
            headers=[
                ("Content-Type", "application/json"),
                ("Stripe-Signature", f"t={NOW},v1=" + "a" * 6000),
            ],
        ),
        400,
        "malformed_signature",
    ),
    "signature header of 64 KB": (  # refused by gunicorn's header limits, before Django
        lambda: request_bytes(
            body=valid_body().encode(),
            headers=[
                ("Content-Type", "application/json"),
                ("Stripe-Signature", "v1=" + "a" * 65536),
            ],
        ),
        431,
        None,
    ),
    "signature from another secret": (
        lambda: _signed_request(valid_body(), secret=OTHER_SECRET),
        400,
        "invalid_signature",
    ),
    "replayed old timestamp": (
        lambda: _signed_request(valid_body(), timestamp=int(time.time()) - 3600),
        400,
        "timestamp_out_of_tolerance",
    ),
    "future timestamp beyond tolerance": (
        lambda: _signed_request(valid_body(), timestamp=int(time.time()) + 3600),
        400,
        "timestamp_out_of_tolerance",
    ),
    "body not UTF-8": (
        lambda: request_bytes(
            body=b'{"id": "evt_1", "object": "event", "x": "\xff\xfe"}',
            headers=[("Content-Type", "application/json"), ("Stripe-Signature", f"t={NOW},v1=00")],
        ),
        400,
        "invalid_event",
    ),
    "body not JSON": (lambda: _signed_request("this is not json"), 400, "invalid_event"),
    "JSON but not an event": (lambda: _signed_request('{"hello": "world"}'), 400, "invalid_event"),
    "event id without evt_": (
        lambda: _signed_request(_event_json(id="cus_123")),
        400,
        "invalid_event",
    ),
    "event without type": (lambda: _signed_request(_event_json(type=None)), 400, "invalid_event"),
    "deeply nested JSON": (lambda: _signed_request(_deep(100_000)), 400, "invalid_event"),
    "body over MAX_BODY_BYTES": (
        lambda: _signed_request(encode_event(make_event(metadata={"blob": "x" * MAX_BODY}))),
        413,
        "body_too_large",
    ),
    "50 MB declared, refused before it is sent": (
        lambda: request_bytes(headers=signed(valid_body()), content_length=50 * 1024 * 1024),
        413,
        "body_too_large",
    ),
    "content type text/plain": (
        lambda: (
            lambda b: request_bytes(
                body=b.encode(), headers=[("Content-Type", "text/plain"), signed(b)[1]]
            )
        )(valid_body()),
        400,
        "unsupported_content_type",
    ),
    "content type form": (
        lambda: (
            lambda b: request_bytes(
                body=b.encode(),
                headers=[("Content-Type", "application/x-www-form-urlencoded"), signed(b)[1]],
            )
        )(valid_body()),
        400,
        "unsupported_content_type",
    ),
    "unknown endpoint": (
        lambda: (lambda b: request_bytes("/webhooks/stripe/nope/", b.encode(), signed(b)))(
            valid_body()
        ),
        404,
        None,
    ),
}

TRAVERSALS = [
    "/webhooks/stripe/../../admin/",
    "/webhooks/stripe/..%2f..%2fadmin/",
    "/webhooks/stripe/%2e%2e/",
    "/webhooks/stripe/default%2f..%2fconnect/",
    "/webhooks/stripe/connect%00/",
    "/webhooks/stripe/..%5cdefault/",
    "/webhooks/stripe/" + "a" * 2000 + "/",
]


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_request_is_refused_and_server_keeps_serving(server, name):
    build, status, code = CASES[name]
    reply = send(server.port, build())
    assert_clean_rejection(reply, status, code)
    assert_still_serving(server.port)


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_in_the_endpoint_name_is_404(server, path):
    body = valid_body()
    reply = send(server.port, request_bytes(path, body.encode(), signed(body)))
    assert reply.status == 404, reply
    assert_still_serving(server.port)


def test_50_mb_body_streamed_gets_413_without_being_read(server):
    """A sender that pushes all 50 MB: the 413 comes back while it is still
    sending, the server reads none of it, and carries on serving."""
    size = 50 * 1024 * 1024
    body = valid_body()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sent = 0
    stop = threading.Event()

    def push() -> None:
        nonlocal sent
        chunk = b"x" * 65536
        with suppress(OSError):
            while sent < size and not stop.is_set():
                sock.sendall(chunk)
                sent += len(chunk)

    try:
        sock.sendall(request_bytes(headers=signed(body), content_length=size))
        pusher = threading.Thread(target=push, daemon=True)
        pusher.start()
        response = http.client.HTTPResponse(sock)
        response.begin()
        reply = Reply(response.status, dict(response.getheaders()), response.read())
        stop.set()
        pusher.join(30)
    finally:
        sock.close()
    assert_clean_rejection(reply, 413, "body_too_large")
    assert sent < size  # answered long before the body could have been read
    assert_still_serving(server.port)


SLOW_CLIENTS = 20
# A delivery is answered in milliseconds; this leaves room for a busy machine.
DELIVERY_DEADLINE = 5.0


def test_slow_clients_trickling_bytes_do_not_block_deliveries(server):
    """Slow-loris against the server run with no options: 20 clients each send a
    request one byte every 0.5 s (it would take them minutes to finish), more
    than a worker of the former 2 x 8 threads could hold. While every one of
    them is still being read by the server, real signed deliveries sent at
    the same time each get their 200 within seconds and are stored.

    A trickled request holds a gthread thread until it is complete, and
    accepts are not spread evenly between workers: with 2 x 8 threads no
    delivery was answered within 10 s. gunicorn.conf.py gives each worker
    more threads than there are slow clients here."""
    stop = threading.Event()
    closed_by_server: list[BaseException] = []
    started = threading.Barrier(SLOW_CLIENTS + 1, timeout=30)
    trickle = request_bytes(body=valid_body().encode(), headers=signed(valid_body()))

    def loris() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
            sock.sendall(trickle[:20])
            started.wait()
            for byte in trickle[20:]:
                if stop.wait(0.5):  # bounded: stops with the test
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError as exc:  # the server gave up on it: not a slow client any more
                    closed_by_server.append(exc)
                    return

    def in_flight() -> int:
        return stack.established_connections(server, server.port)

    slow = [threading.Thread(target=loris, daemon=True) for _ in range(SLOW_CLIENTS)]
    for thread in slow:
        thread.start()
    started.wait()
    events = [make_event() for _ in range(5)]
    # Exits after the finally below: once the slow clients are gone, any
    # delivery still waiting is answered and the pool's threads return.
    with ThreadPoolExecutor(len(events)) as pool:
        try:
            # Every slow request is in a worker's hands, not queued in the backlog.
            stack.wait_until(
                lambda: in_flight() >= SLOW_CLIENTS,
                timeout=10,
                message=lambda: f"{SLOW_CLIENTS} slow connections accepted (have {in_flight()})",
            )
            replies: list[Future[Reply]] = []
            for event in events:
                body = encode_event(event)
                raw = request_bytes(body=body.encode(), headers=signed(body))
                replies.append(pool.submit(send, server.port, raw, 30))
            stack.wait_until(
                lambda: all(reply.done() for reply in replies),
                timeout=DELIVERY_DEADLINE,
                message=lambda: (
                    f"{sum(not r.done() for r in replies)} of {len(replies)} deliveries "
                    f"to be answered while {SLOW_CLIENTS} clients trickle\n{server.log_tail()}"
                ),
            )
            assert [reply.result().status for reply in replies] == [200] * len(events)
            # They went through while all the slow requests were still being read.
            assert all(thread.is_alive() for thread in slow)
            assert not closed_by_server
            assert in_flight() >= SLOW_CLIENTS
        finally:
            stop.set()
            for thread in slow:
                thread.join(10)
    stored = set(WebhookEvent.objects.values_list("pk", flat=True))
    assert stored == {event["id"] for event in events}


def test_the_procfile_serves_with_no_options():
    """The web command carries no options: gunicorn.conf.py holds the settings,
    so `gunicorn config.wsgi:application` run by hand serves as `make run` does."""
    assert procfile_web_command() == WEB_COMMAND
    assert (stack.ROOT / "gunicorn.conf.py").is_file()


def test_no_secret_in_the_server_log(server):
    """After every kind of rejection above, the server's log names no secret."""
    body = valid_body()
    send(server.port, _signed_request(body, secret=OTHER_SECRET))
    send(
        server.port,
        request_bytes(
            body=body.encode(),
            headers=[
                ("Content-Type", "application/json"),
                ("Stripe-Signature", f"t={NOW},v1=" + SECRET),
            ],
        ),
    )
    log = server.log()
    assert "rejected webhook" in log  # the rejections are logged...
    for secret in (SECRET, OLD_SECRET, CONNECT_SECRET):
        assert log.count(secret) == 0  # ...without a secret, even one an attacker sent


def chunked(
    path: str, body: bytes, headers: list[tuple[str, str | bytes]], size: int = 4096
) -> bytes:
    head = request_bytes(path, b"", [*headers, ("Transfer-Encoding", "chunked")])
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return head + b"".join(parts) + b"0\r\n\r\n"


def test_chunked_delivery_is_read_whole_and_stored(server):
    """A body sent with Transfer-Encoding: chunked (no Content-Length, as some
    proxies forward it) is read to its end, verified and stored."""
    event = make_event("invoice.paid")
    body = encode_event(event)
    reply = send(server.port, chunked("/webhooks/stripe/", body.encode(), signed(body), size=500))
    assert reply.status == 200, reply
    assert WebhookEvent.objects.get(pk=event["id"]).body == body


def test_chunked_body_over_the_limit_is_413(server):
    body = encode_event(make_event(metadata={"blob": "x" * MAX_BODY}))
    reply = send(server.port, chunked("/webhooks/stripe/", body.encode(), signed(body)))
    assert_clean_rejection(reply, 413, "body_too_large")
    assert_still_serving(server.port)
