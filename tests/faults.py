"""Tools for the fault-injection suite: a lane of real processes, a TCP proxy, counters.

A `Lane` is a queue of its own on a broker (the session's Redis or one the
test owns), with the gunicorn, Celery workers and beat processes the test
starts on it. Tests kill and restart those processes freely: nothing else in
the suite consumes that queue.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from django.db import connection
from django.db.models import Count

from devstack.services import free_port
from tests.testapp.models import SideEffect
from webhook_ingest.models import WebhookEvent
from webhook_worker.stripe_events import encode_event, sign_body

from . import stack
from .constants import SECRET
from .stack import wait_until

# Event types whose handlers write a SideEffect: "all" for every event, and
# "exact" for these two (tests/testapp/webhooks.py).
EXACT_TYPES = {"customer.subscription.created", "invoice.paid"}


def expected_effects(event_type: str) -> list[str]:
    return ["all", "exact"] if event_type in EXACT_TYPES else ["all"]


def first_attempt_fails(event_id: str, percent: int) -> bool:
    """Mirror of the `fail_first_pct:N` test behavior: which events fail attempt 1."""
    return int(hashlib.sha256(event_id.encode()).hexdigest(), 16) % 100 < percent


# --- processes -------------------------------------------------------------


@dataclass
class Lane:
    """A private queue, and the real processes a test runs on it."""

    env: dict[str, str]
    log_dir: Path
    procs: list[stack.Process] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return self.env["WEBHOOKS_TEST_QUEUE"]

    def worker(self, concurrency: int = 2, **env: str) -> stack.Process:
        proc = stack.celery_worker(self._env(env), self.log_dir, concurrency=concurrency)
        self.procs.append(proc)
        return proc

    def beat(self, **env: str) -> stack.Process:
        proc = stack.celery_beat(self._env(env), self.log_dir)
        self.procs.append(proc)
        return proc

    def web(self, workers: int = 2, threads: int = 8, **env: str) -> stack.Gunicorn:
        proc = stack.gunicorn(
            self._env(env),
            self.log_dir,
            workers=workers,
            extra=["--worker-class=gthread", f"--threads={threads}"],
        )
        self.procs.append(proc)
        return proc

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        return {**self.env, **extra}

    def logs(self) -> str:
        return "\n".join(p.log_tail(40) for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(timeout=10)
        self.procs.clear()


def make_lane(base_env: dict[str, str], log_dir: Path, **env: str) -> Lane:
    lane_env = dict(base_env)
    lane_env.update(
        WEBHOOKS_TEST_QUEUE=f"lane-{uuid.uuid4().hex[:10]}",
        WEBHOOKS_SWEEP_INTERVAL="1",
    )
    lane_env.update(env)
    return Lane(lane_env, log_dir)


def kill_pid(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --- delivering ------------------------------------------------------------


def signed_headers(body: str, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign_body(body, secret, timestamp),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }


_local = threading.local()


def _session() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


def deliver(url: str, event: dict[str, Any] | str, attempts: int = 6) -> int:
    """POST like Stripe: signed at send time, and sent again on anything but 2xx."""
    body = event if isinstance(event, str) else encode_event(event)
    status = 0
    for attempt in range(attempts):
        try:
            status = (
                _session()
                .post(url, data=body.encode(), headers=signed_headers(body), timeout=30)
                .status_code
            )
        except requests.RequestException:
            status = 0
        if 200 <= status < 300:
            return status
        time.sleep(0.2 * (attempt + 1))
    return status


def deliver_all(url: str, events: Iterable[dict[str, Any]], clients: int = 8) -> list[int]:
    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(lambda e: deliver(url, e), events))


# --- checking --------------------------------------------------------------


def status_counts(ids: Iterable[str]) -> dict[str, int]:
    rows = (
        WebhookEvent.objects.filter(pk__in=list(ids))
        .values_list("status")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return dict(rows)  # type: ignore[arg-type]


def wait_all_succeeded(ids: list[str], timeout: float, lane: Lane | None = None) -> None:
    """Wait until every event is `succeeded`; the failure message says where the rest are."""

    def done() -> bool:
        return WebhookEvent.objects.filter(pk__in=ids, status="succeeded").count() == len(ids)

    def describe() -> str:
        counts = status_counts(ids)
        stored = sum(counts.values())
        stuck = list(
            WebhookEvent.objects.filter(pk__in=ids)
            .exclude(status="succeeded")
            .values_list("pk", "status", "attempts", "last_error")[:5]
        )
        text = f"{len(ids)} events to succeed: stored {stored}, by status {counts}, e.g. {stuck}"
        return text + ("\n" + lane.logs() if lane is not None else "")

    wait_until(done, timeout=timeout, interval=0.25, message=describe)


def effect_counts(ids: Iterable[str]) -> Counter[tuple[str, str]]:
    """(event id, handler) -> committed SideEffect rows."""
    counts: Counter[tuple[str, str]] = Counter()
    id_list = list(ids)
    for start in range(0, len(id_list), 2000):
        rows = (
            SideEffect.objects.filter(event_id__in=id_list[start : start + 2000])
            .values_list("event_id", "handler")
            .annotate(n=Count("pk"))
            .order_by()
        )
        for event_id, handler, n in rows:
            counts[(event_id, handler)] = n
    return counts


def assert_effects_exactly_once(events: dict[str, str]) -> None:
    """Every handler's committed side effect is there once per event: none missing, none twice."""
    expected = Counter(
        {(eid, name): 1 for eid, etype in events.items() for name in expected_effects(etype)}
    )
    actual = effect_counts(events)
    missing = [k for k in expected if k not in actual]
    doubled = [(k, n) for k, n in actual.items() if n > 1]
    unexpected = [k for k in actual if k not in expected]
    assert not missing and not doubled and not unexpected, (
        f"missing {len(missing)} e.g. {missing[:5]}; applied twice {len(doubled)} e.g. "
        f"{doubled[:5]}; unexpected {unexpected[:5]}"
    )


@dataclass(frozen=True)
class Call:
    event_id: str
    handler: str
    attempt: int
    pid: int


def logged_calls(log_path: Path, event_ids: Iterable[str] | None = None) -> list[Call]:
    wanted = None if event_ids is None else set(event_ids)
    calls = []
    for line in log_path.read_text().splitlines():
        eid, name, attempt, pid = line.split()
        if wanted is None or eid in wanted:
            calls.append(Call(eid, name, int(attempt), int(pid)))
    return calls


def assert_no_attempt_ran_twice(log_path: Path, event_ids: Iterable[str]) -> None:
    """No (event, attempt) reached the handlers twice: no two workers ran one attempt."""
    runs = Counter(
        (c.event_id, c.attempt) for c in logged_calls(log_path, event_ids) if c.handler == "all"
    )
    twice = [(k, n) for k, n in runs.items() if n > 1]
    assert not twice, f"attempts whose handlers ran more than once: {twice[:10]}"


def uncommitted_writer_pid(table: str = "testapp_sideeffect") -> int | None:
    """Backend pid of a session other than ours with an open write on `table`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT l.pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = %s AND l.mode = 'RowExclusiveLock' AND l.granted "
            "AND l.pid <> pg_backend_pid() LIMIT 1",
            [table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else None


def redis_queue_length(broker_url: str, queue: str) -> int:
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        return int(client.llen(queue))
    finally:
        client.close()


def redis_queued_tasks(broker_url: str, queue: str) -> list[str]:
    """The task names of the messages waiting in a Redis queue (kombu's JSON envelope)."""
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        return [json.loads(raw)["headers"]["task"] for raw in client.lrange(queue, 0, -1)]
    finally:
        client.close()


# --- a TCP proxy in front of Postgres ---------------------------------------


class TcpProxy:
    """A real network hop that a test can cut: `down()` drops every connection
    and refuses new ones (what clients see while a database restarts), `up()`
    listens again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._forward = True

    def up(self, forward: bool = True) -> None:
        self._forward = forward
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for sock in conns:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    close = down

    def stall(self) -> None:
        """Drop every connection, then accept new ones but never answer: a
        database host that stopped responding (packets dropped, failover)."""
        self.down()
        self.up(forward=False)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if not self._forward:
                with self._lock:
                    self._conns.add(client)  # held open, never answered
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def db_url_via(proxy: TcpProxy, db_url: str) -> str:
    """The test database URL with host and port replaced by the proxy's."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(db_url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{proxy.port}"))
