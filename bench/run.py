"""`make bench`: the project against framework-free floors, side by side, in one run.

    python -m bench.run                    # the documented run (~20 min)
    python -m bench.run --quick            # ~3 min: 6 s trials, 3,000 events
    BENCH_DURATION=20 BENCH_ROUNDS=3 python -m bench.run

One embedded Postgres (fsync on, its files on tmpfs where there is one:
`postgres_dir`) and one Redis serve every phase. Ours and
the floor alternate within each round (the order flips every round) so that
noise from the rest of the machine hits both alike; the report gives medians
and ratios. Phases:

1. ingest: wrk, 16 connections, fixed duration, every request a unique
   pre-signed customer.subscription.updated event; ours (config.wsgi) and
   bench/floor_wsgi.py under the same gunicorn settings (both read
   ./gunicorn.conf.py, then --gunicorn's options); no worker running.
2. end to end: N events posted once each while a worker drains them; events/s
   from the first request until every row is succeeded. Ours: our gunicorn +
   `celery -A config worker`; floor: floor_wsgi + bench/floor_celery.py.
3. slow handlers: our ingest again while our worker runs a no-op handler, and
   while it runs one that sleeps 200 ms.
4. peak RSS (VmHWM) of the web and worker processes.

Results: printed, bench/results/<label>.json, and the generated section of
docs/benchmarks.md with the chart docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import runpy
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis

from devstack.services import EmbeddedPostgres, EmbeddedRedis, free_port, port_open
from tests.stack import Process, child_pids, wait_until
from webhook_worker.stripe_events import build_event, encode_event, sign_body

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "wrk_post.lua"
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
CHART = ROOT / "docs" / "benchmarks.png"
PY = sys.executable
PATH = "/webhooks/stripe/"
EVENT_TYPE = "customer.subscription.updated"
CONNECTIONS = 16
# One wrk thread drives the 16 connections: it needs a few percent of a core
# at these rates, and in "once" mode one thread knows when every body is answered.
WRK_THREADS = 1
# Bodies written per second of an ingest trial; a thread that runs out
# starts over and the trial is flagged, so keep this above any rate seen.
BODIES_PER_SECOND = 4000
# gunicorn options for ours and the floor alike, over ./gunicorn.conf.py, which
# gunicorn reads by itself from ROOT (every Web runs there): none by default, so
# both serve with the reference web settings, as `gunicorn config.wsgi:application`
# (the Procfile's web command) does. Web adds only --bind.
DEFAULT_GUNICORN = ""
# Celery prefork processes, ours and the floor's alike: the Procfile's default.
WORKER_CONCURRENCY = 2
# End to end posts its events in chunks signed just before they are sent.
E2E_CHUNK = 5000
EVENTS_TABLE = "webhook_ingest_webhookevent"
ATTEMPTS_TABLE = "webhook_worker_webhookattempt"
MARK_START = "<!-- bench:results:start -->"
MARK_END = "<!-- bench:results:end -->"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- bodies ------------------------------------------------------------------


class Bodies:
    """Unique signed events, written in the record format bench/wrk_post.lua reads."""

    def __init__(self, secret: str, work: Path) -> None:
        self.secret = secret
        self.work = work
        event = build_event(EVENT_TYPE)
        self.template_id = event["id"]
        self.template = encode_event(event)
        assert self.template.count(self.template_id) == 1
        self.size = len(self.template.encode())
        self.tags = 0

    def write(self, count: int) -> tuple[str, str]:
        """Write `count` bodies split across the wrk threads; returns (tag, file prefix)."""
        self.tags += 1
        tag = f"B{self.tags:03d}{secrets.token_hex(2)}"
        prefix = str(self.work / f"bodies-{tag}")
        now = int(time.time())
        head, tail = self.template.split(self.template_id)
        width = len(self.template_id) - 4 - len(tag)
        files = [open(f"{prefix}-{n}.dat", "wb") for n in range(WRK_THREADS)]  # noqa: SIM115
        try:
            for i in range(count):
                body = f"{head}evt_{tag}{i:0{width}d}{tail}"
                header = sign_body(body, self.secret, timestamp=now)
                data = body.encode()
                files[i % WRK_THREADS].write(f"{header} {len(data)}\n".encode() + data)
        finally:
            for f in files:
                f.close()
        return tag, prefix

    def remove(self, prefix: str) -> None:
        for n in range(WRK_THREADS):
            Path(f"{prefix}-{n}.dat").unlink(missing_ok=True)


# --- processes ---------------------------------------------------------------


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process, in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far; None once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_used(before: dict[int, float | None], pids: list[int]) -> float:
    """CPU seconds these processes used since `before`.

    A process not in `before` started since, and counts from zero; one that
    exited meanwhile (or could not be read) is left out.
    """
    total = 0.0
    for pid in pids:
        start, end = before.get(pid, 0.0), cpu_seconds(pid)
        if start is not None and end is not None:
            total += end - start
    return total


class Web(Process):
    """A gunicorn serving `app` on a free port."""

    def __init__(self, name: str, app: str, options: str, env: dict[str, str], logs: Path):
        self.port = free_port()
        argv = [PY, "-m", "gunicorn", app, f"--bind=127.0.0.1:{self.port}", *shlex.split(options)]
        super().__init__(name, argv, env, logs)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def start(self) -> Web:
        super().start()
        wait_until(lambda: port_open(self.port) or not self.alive, 60, message=self.log_tail)
        assert self.alive, self.log_tail()
        return self

    def peak_rss_kib(self) -> int:
        return max((vm_hwm_kib(pid) for pid in self.children()), default=0)


def gunicorn_settings(args: argparse.Namespace) -> str:
    """What ours and the floor serve with, for the log and the report."""
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    shape = f"{conf['worker_class']}, {conf['workers']} workers x {conf['threads']} threads"
    text = f"`gunicorn.conf.py` ({shape})"
    return text + (f" + `{args.gunicorn}`" if args.gunicorn else "")


class Worker(Process):
    """A prefork Celery worker; `app` is `config` (ours) or `bench.floor_celery`."""

    def __init__(
        self, name: str, app: str, queue: str, env: dict[str, str], logs: Path, concurrency: int
    ):
        argv = [
            PY, "-m", "celery", "-A", app, "worker", "--loglevel=INFO",
            f"--concurrency={concurrency}", f"--hostname={name}@%h", f"--queues={queue}",
        ]  # fmt: skip
        super().__init__(name, argv, env, logs)

    def start(self) -> Worker:
        super().start()
        wait_until(lambda: " ready." in self.log() or not self.alive, 60, message=self.log_tail)
        assert self.alive, self.log_tail()
        return self

    def peak_rss_kib(self) -> dict[str, int]:
        children = [vm_hwm_kib(pid) for pid in self.children()]
        return {"main": vm_hwm_kib(self.pid), "pool_process": max(children, default=0)}


# --- in-process calls (bench.profile, bench.icount) ----------------------------


def delivery_environ(signature: str, body: bytes) -> dict[str, Any]:
    """What gunicorn hands a WSGI app for a Stripe delivery (the headers Stripe sends)."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": PATH,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_USER_AGENT": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        "HTTP_ACCEPT": "*/*; q=0.5, application/xml",
        "HTTP_CACHE_CONTROL": "no-cache",
        "CONTENT_TYPE": "application/json; charset=utf-8",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_STRIPE_SIGNATURE": signature,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def wsgi_caller(app: Any, bodies: Iterable[tuple[str, bytes]]) -> Callable[[], None]:
    """A callable that POSTs the next signed body to a WSGI app and checks for 200."""
    it = iter(bodies)

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        assert status.startswith("200"), status

    def call() -> None:
        result = app(delivery_environ(*next(it)), start_response)
        b"".join(result)
        getattr(result, "close", lambda: None)()

    return call


# --- the benchmark -----------------------------------------------------------


def postgres_dir(work: Path) -> tuple[Path, str]:
    """Where the benchmark's Postgres keeps its files, and what that storage is.

    On tmpfs (/dev/shm) when there is one, unless BENCH_PGDATA=disk: fsync
    stays on and every commit still waits for its WAL flush, but at memory
    speed. On this VM's disk, under the benchmark's sustained inserts, a WAL
    flush stalled every commit for up to ~500 ms now and then (the floor
    alone, three 30 s trials: p99 75-200 ms, 20-22 ms with synchronous_commit
    off), so every p99 measured the disk, ours and the floor's alike.
    """
    shm = Path("/dev/shm")
    if (
        os.environ.get("BENCH_PGDATA", "tmpfs") != "disk"
        and shm.is_dir()
        and os.access(shm, os.W_OK)
    ):
        return shm / f"{work.name}-postgres", "tmpfs"
    return work / "postgres", "disk"


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.logs = work / "logs"
        self.logs.mkdir(parents=True)
        self.secret = "whsec_" + secrets.token_hex(24)
        self.pg_dir, self.pg_storage = postgres_dir(work)
        self.pg = EmbeddedPostgres(self.pg_dir, fsync=True)
        self.redis = EmbeddedRedis(work / "redis")
        self.env: dict[str, str] = {}
        self.floor_env: dict[str, str] = {}
        self.bodies = Bodies(self.secret, work)
        self.db: psycopg.Connection[Any]
        self.broker: redis.Redis
        self.started: list[Process] = []

    # set-up

    def start_servers(self) -> None:
        log(f"starting Postgres (fsync on, files on {self.pg_storage}) and Redis")
        self.pg.start()
        self.redis.start()
        self.pg.create_database("bench")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
        env.update(
            PATH=str(Path(PY).parent) + os.pathsep + env.get("PATH", ""),
            PYTHONPATH=str(ROOT),
            DJANGO_SETTINGS_MODULE="bench.settings",
            DJANGO_SECRET_KEY=secrets.token_hex(32),
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            DATABASE_URL=self.pg.url("bench"),
            CELERY_BROKER_URL=self.redis.url,
            STRIPE_WEBHOOK_SECRET=self.secret,
        )
        env.pop("DATABASE_URL_BENCH", None)
        self.env = env
        # The floors run without Django: Celery installs its Django fixup in
        # any worker started with DJANGO_SETTINGS_MODULE set, which would set
        # Django up in the floor's pool processes and close Django's
        # (unused) connections around every one of its tasks.
        self.floor_env = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
        subprocess.run(
            [PY, "manage.py", "migrate", "--no-input", "-v", "0"], env=env, cwd=ROOT, check=True
        )
        self.db = psycopg.connect(self.pg.url("bench"), autocommit=True)
        self.broker = redis.Redis.from_url(self.redis.url)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()
        self.redis.stop()
        self.pg.stop()
        if not self.pg_dir.is_relative_to(self.work):
            shutil.rmtree(self.pg_dir, ignore_errors=True)

    def launch(self, proc: Process, env: dict[str, str] | None = None) -> Any:
        if env is not None:
            proc.env = env
        self.started.append(proc)
        return proc.start()

    def halt(self, proc: Process) -> None:
        proc.stop()
        self.started.remove(proc)

    # measurement helpers

    def count(self, tag: str) -> tuple[int, int]:
        """Events of a batch stored, and of those how many succeeded.

        A range on the primary key, not `LIKE 'evt_...%'`: `_` is a LIKE
        wildcard, so Postgres could bound that scan by "evt" alone and read
        the whole table, on every poll, for ours and the floor alike, and
        more often for whichever is slower.
        """
        low = f"evt_{tag}"
        high = low[:-1] + chr(ord(low[-1]) + 1)
        row = self.db.execute(
            f"SELECT count(*), count(*) FILTER (WHERE status = 'succeeded') "
            f"FROM {EVENTS_TABLE} WHERE id >= %s AND id < %s",
            [low, high],
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def quiesce(self) -> None:
        """Same starting point for every trial: empty broker, no dead rows, fresh checkpoint.

        Without the VACUUM, the dead rows one trial leaves (ours leaves two per
        event, the floor one) would be vacuumed by autovacuum during a later
        trial, whoever's it is.
        """
        self.broker.flushdb()
        self.db.execute(f"VACUUM (ANALYZE) {EVENTS_TABLE}, {ATTEMPTS_TABLE}")
        self.db.execute("CHECKPOINT")
        time.sleep(0.5)

    def cpu_groups(self, web: Web) -> dict[str, list[int]]:
        """The processes a request costs CPU in; wrk itself is left out."""
        assert self.pg.process is not None and self.redis.process is not None
        return {
            "web": web.children(),
            "postgres": child_pids(self.pg.process.pid),
            "redis": [self.redis.process.pid],
        }

    def wrk(self, url: str, prefix: str, mode: str, duration: float) -> tuple[Any, Any]:
        argv = [
            "wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{int(duration)}s",
            "--timeout", "10s", "-s", str(LUA), url, "--", prefix, PATH, mode,
        ]  # fmt: skip
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    @staticmethod
    def wrk_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
        out, _ = proc.communicate()
        match = re.search(r"^BENCH_JSON (.*)$", out, re.M)
        if not match:
            raise RuntimeError(f"wrk printed no result:\n{out}")
        result: dict[str, Any] = json.loads(match.group(1))
        return result

    # phases

    def ingest_trial(self, web: Web, duration: float) -> dict[str, Any]:
        tag, prefix = self.bodies.write(int(duration * BODIES_PER_SECOND))
        self.quiesce()
        groups = self.cpu_groups(web)
        cpu_before = {pid: cpu_seconds(pid) for pids in groups.values() for pid in pids}
        raw = self.wrk_result(self.wrk(web.url, prefix, "duration", duration))
        cpu = {name: cpu_used(cpu_before, pids) for name, pids in groups.items()}
        time.sleep(0.5)  # let the requests in flight when wrk stopped finish
        rows = self.count(tag)[0]
        self.bodies.remove(prefix)
        seconds = raw["duration_us"] / 1e6
        errors = sum(raw["errors"].values())
        result = {
            "rps": raw["ok"] / seconds,
            "p50_ms": raw["latency_us"]["p50"] / 1000,
            "p90_ms": raw["latency_us"]["p90"] / 1000,
            "p99_ms": raw["latency_us"]["p99"] / 1000,
            "max_ms": raw["latency_us"]["max"] / 1000,
            "requests": raw["requests"],
            "ok": raw["ok"],
            "errors": errors,
            "rows": rows,
            "valid": raw["wrapped"] == 0 and 0 <= rows - raw["ok"] <= CONNECTIONS,
            "cpu_ms_per_request": {k: 1000 * v / max(rows, 1) for k, v in cpu.items()},
            "raw": raw,
        }
        log(
            f"  {web.name:<6} {result['rps']:7.0f} req/s  p50 {result['p50_ms']:6.1f}  "
            f"p90 {result['p90_ms']:6.1f}  p99 {result['p99_ms']:6.1f} ms  "
            f"2xx {raw['ok']}  rows {rows}  errors {errors}  CPU ms/req "
            + " ".join(f"{k} {v:.2f}" for k, v in result["cpu_ms_per_request"].items())
            + ("" if result["valid"] else "  INVALID")
        )
        return result

    def e2e_trial(self, web: Web, worker: Worker, events: int) -> dict[str, Any]:
        """Post `events` events once each while `worker` drains them; time until all succeeded.

        Bodies are signed in chunks just before they are sent: a signature is
        only good for the endpoint's 300 s tolerance, and a slow run could
        outlast it.
        """
        self.quiesce()
        self.launch(worker)
        groups = self.cpu_groups(web)
        groups["worker"] = [worker.pid, *worker.children()]
        cpu_before = {pid: cpu_seconds(pid) for pids in groups.values() for pid in pids}
        tags: list[str] = []
        trace: list[tuple[float, int, int]] = []
        ingested_at = done_at = None
        ok = errors = 0
        started = time.monotonic()
        deadline = started + max(900, events / 10)

        chunk_sizes: dict[str, int] = {}
        finished: dict[str, int] = {}  # batches whose every event succeeded: not counted again

        def poll() -> tuple[int, int]:
            stored = succeeded = 0
            for t in tags:
                if t in finished:
                    stored += finished[t]
                    succeeded += finished[t]
                    continue
                n, done = self.count(t)
                stored, succeeded = stored + n, succeeded + done
                if n == done == chunk_sizes[t]:
                    finished[t] = n
            trace.append((round(time.monotonic() - started, 2), stored, succeeded))
            return stored, succeeded

        try:
            for first in range(0, events, E2E_CHUNK):
                size = min(E2E_CHUNK, events - first)
                tag, prefix = self.bodies.write(size)
                tags.append(tag)
                chunk_sizes[tag] = size
                proc = self.wrk(web.url, prefix, "once", 3600)
                try:
                    while time.monotonic() < deadline and proc.poll() is None:
                        if poll()[0] >= first + size:
                            break
                        time.sleep(0.2)
                finally:
                    proc.send_signal(signal.SIGINT)
                raw = self.wrk_result(proc)
                self.bodies.remove(prefix)
                ok += raw["ok"]
                errors += sum(raw["errors"].values())
                if raw["ok"] < size:
                    raise RuntimeError(f"{web.name}: {size - raw['ok']} requests were not 2xx")
            ingested_at = time.monotonic()
            while time.monotonic() < deadline:
                if poll()[1] >= events:
                    done_at = time.monotonic()
                    break
                time.sleep(0.2)
        finally:
            # With the Postgres backends opened during the trial.
            assert self.pg.process is not None
            groups["postgres"] = child_pids(self.pg.process.pid)
            cpu = {name: cpu_used(cpu_before, pids) for name, pids in groups.items()}
            rss = worker.peak_rss_kib()
            self.halt(worker)
        if done_at is None:
            raise RuntimeError(f"{worker.name}: not all {events} events succeeded in time")
        # Once every event is stored, the worker has the machine to itself.
        at_ingested = next(t for t in trace if t[1] >= events)
        result = {
            "events": events,
            "events_per_s": events / (done_at - started),
            "ingest_per_s": events / (ingested_at - started),
            "drain_per_s": (events - at_ingested[2])
            / max(done_at - started - at_ingested[0], 1e-3),
            "seconds": done_at - started,
            "ok": ok,
            "errors": errors,
            "worker_rss_kib": rss,
            "cpu_ms_per_event": {k: 1000 * v / events for k, v in cpu.items()},
            "trace": trace,
        }
        log(
            f"  {worker.name:<6} {result['events_per_s']:7.0f} events/s end to end "
            f"({events} in {result['seconds']:.1f}s; all stored at {result['ingest_per_s']:.0f}/s, "
            f"then drained at {result['drain_per_s']:.0f}/s)  CPU ms/event "
            + " ".join(f"{k} {v:.2f}" for k, v in result["cpu_ms_per_event"].items())
        )
        return result

    def run(self) -> dict[str, Any]:
        args = self.args
        self.start_servers()
        ours = self.launch(
            Web("ours", "config.wsgi:application", args.gunicorn, self.env, self.logs)
        )
        floor = self.launch(
            Web("floor", "bench.floor_wsgi:application", args.gunicorn, self.floor_env, self.logs)
        )
        variants = []
        for spec in args.variant:
            name, _, assignments = spec.partition(":")
            env = dict(self.env)
            env.update(item.split("=", 1) for item in assignments.split(",") if item)
            options = env.pop("GUNICORN", args.gunicorn)
            app = env.pop("WSGI", "config.wsgi:application")
            variants.append(self.launch(Web(name, app, options, env, self.logs)))
        webs = [ours, *variants, floor]
        log(f"body: {EVENT_TYPE}, {self.bodies.size} bytes; gunicorn {gunicorn_settings(args)}")
        log("warming up")
        for web in webs:
            warm = self.ingest_trial(web, 3)
            if warm["errors"] or not warm["ok"]:
                # A side that fails its requests would be measured as 0 req/s.
                raise SystemExit(f"{web.name} answered {warm['errors']} requests with errors")

        results: dict[str, Any] = {"ingest": {web.name: [] for web in webs}}
        log(
            f"ingest: {args.rounds} rounds of {args.duration:.0f}s each, ours and floor alternating"
        )
        for r in range(args.rounds):
            for web in webs if r % 2 == 0 else webs[::-1]:
                results["ingest"][web.name].append(self.ingest_trial(web, args.duration))
        results["web_rss_kib"] = {"ours": ours.peak_rss_kib(), "floor": floor.peak_rss_kib()}
        results["variants"] = args.variant
        if args.ingest_only:
            return results

        e2e_variants = {"ours": self.env}
        for spec in args.e2e_variant:
            name, _, assignments = spec.partition(":")
            e2e_variants[name] = dict(self.env)
            e2e_variants[name].update(item.split("=", 1) for item in assignments.split(",") if item)
        names = [*e2e_variants, "floor"]
        results["e2e"] = {name: [] for name in names}
        results["e2e_variants"] = args.e2e_variant
        log(f"end to end: {args.events} events, {args.e2e_rounds} round(s)")
        for r in range(args.e2e_rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                if name == "floor":
                    app, queue = "bench.floor_celery", "floor"
                    worker = Worker(name, app, queue, self.floor_env, self.logs, args.concurrency)
                    results["e2e"]["floor"].append(self.e2e_trial(floor, worker, args.events))
                else:
                    # An end-to-end variant posts to the ingest variant of its name, if any.
                    web = next((w for w in variants if w.name == name), ours)
                    env = e2e_variants[name]
                    worker = Worker(name, "config", "celery", env, self.logs, args.concurrency)
                    results["e2e"][name].append(self.e2e_trial(web, worker, args.events))
        for web in variants:
            self.halt(web)

        results["slow"] = {"none": results["ingest"]["ours"], "noop": [], "sleep": []}
        log(f"slow handlers: {args.rounds} rounds, our worker with a no-op / 200 ms handler")
        for r in range(args.rounds):
            for kind in ("noop", "sleep") if r % 2 == 0 else ("sleep", "noop"):
                env = dict(self.env, BENCH_HANDLER_SLEEP="0.2" if kind == "sleep" else "0")
                worker = Worker(kind, "config", "celery", env, self.logs, args.concurrency)
                self.launch(worker)
                results["slow"][kind].append(self.ingest_trial(ours, args.duration))
                self.halt(worker)
        return results

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        row = self.db.execute("SHOW server_version").fetchone()
        wrk_out = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        return {
            "python": platform.python_version(),
            **{
                name: version(name)
                for name in ("Django", "celery", "kombu", "stripe", "psycopg", "gunicorn", "redis")
            },
            "postgres": str(row[0]) if row else "?",
            "redis-server": str(self.broker.info("server")["redis_version"]),
            "wrk": (wrk_out.stdout + wrk_out.stderr).split()[1],
        }


# --- report ------------------------------------------------------------------


@contextmanager
def django_bench(name: str) -> Iterator[Bench]:
    """Embedded Postgres and Redis started, and Django set up in this process against them.

    For the in-process tools (bench.profile, bench.drain); stops both and
    removes their files on the way out.
    """
    work = ROOT / ".devstack" / f"{name}-{os.getpid()}"
    bench = Bench(argparse.Namespace(), work)
    try:
        bench.start_servers()
        os.environ.update(bench.env)
        import django

        django.setup()
        yield bench
    finally:
        log("stopping the servers")
        bench.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    def ingest(trials: list[dict[str, Any]]) -> dict[str, Any]:
        keys = ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms")
        out: dict[str, Any] = {k: median([t[k] for t in trials]) for k in keys}
        out["errors"] = sum(t["errors"] for t in trials)
        out["ok"] = sum(t["ok"] for t in trials)
        out["rows"] = sum(t["rows"] for t in trials)
        out["valid"] = all(t["valid"] for t in trials)
        return out

    floor_trials = results["ingest"]["floor"]
    summary: dict[str, Any] = {
        "ingest": {name: ingest(trials) for name, trials in results["ingest"].items()},
        "ingest_ratio": {},
        "ingest_ratio_per_round": {},
        "p99_ratio": {},
    }
    floor = summary["ingest"]["floor"]
    for name, trials in results["ingest"].items():
        row = summary["ingest"][name]
        summary["ingest_ratio"][name] = row["rps"] / floor["rps"]
        summary["p99_ratio"][name] = row["p99_ms"] / floor["p99_ms"]
        summary["ingest_ratio_per_round"][name] = [
            t["rps"] / f["rps"] for t, f in zip(trials, floor_trials, strict=True)
        ]
    summary["rss_kib"] = {"web": results["web_rss_kib"]}
    targets = {
        "ingest >= 70% of floor req/s": summary["ingest_ratio"]["ours"] >= 0.70,
        "ingest p99 <= 2x floor p99": summary["p99_ratio"]["ours"] <= 2.0,
    }
    if "e2e" in results:
        e2e = {k: median([t["events_per_s"] for t in v]) for k, v in results["e2e"].items()}
        summary["e2e"] = e2e
        summary["drain"] = {
            k: median([t["drain_per_s"] for t in v]) for k, v in results["e2e"].items()
        }
        summary["e2e_ratio"] = e2e["ours"] / e2e["floor"]
        summary["rss_kib"]["worker"] = {
            k: max(t["worker_rss_kib"]["pool_process"] for t in v)
            for k, v in results["e2e"].items()
        }
        targets["end to end >= 70% of floor events/s"] = summary["e2e_ratio"] >= 0.70
    if "slow" in results:
        slow = {k: ingest(v) for k, v in results["slow"].items()}
        summary["slow"] = slow
        summary["slow_p99_change"] = slow["sleep"]["p99_ms"] / slow["noop"]["p99_ms"] - 1
        targets["slow handler: ingest p99 within 10% of no-op"] = summary["slow_p99_change"] <= 0.10
    summary["targets"] = targets
    return summary


def render(report: dict[str, Any]) -> str:
    s, meta = report["summary"], report["meta"]
    concurrency = meta.get("concurrency", WORKER_CONCURRENCY)
    lines = [
        f"Run `{meta['label']}` on {meta['date']} at commit {meta['commit']} "
        f"({meta['machine']}; {meta['settings']}).",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}.",
        "",
        "**Ingest** (medians of the rounds; wrk, 16 connections, "
        f"{meta['body_bytes']}-byte `{EVENT_TYPE}` bodies, each event id once)",
        "",
        "| | req/s | vs floor | p50 ms | p90 ms | p99 ms | max ms | 2xx | rows stored | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in s["ingest"].items():
        lines.append(
            f"| {name} | {row['rps']:.0f} | {s['ingest_ratio'][name]:.0%} | {row['p50_ms']:.1f} | "
            f"{row['p90_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.0f} | {row['ok']} | "
            f"{row['rows']} | {row['errors']} |"
        )
    for spec in report["results"].get("variants", []):
        lines.append(f"\nVariant `{spec}`.")
    per_round = ", ".join(f"{r:.0%}" for r in s["ingest_ratio_per_round"]["ours"])
    lines += [
        "",
        f"Ours is **{s['ingest_ratio']['ours']:.0%}** of the floor's requests/s (per round: "
        f"{per_round}); our p99 is **{s['p99_ratio']['ours']:.2f}×** the floor's. Rows stored "
        "exceed the 2xx count by the requests in flight when wrk stopped (stored, but their "
        "responses never read).",
    ]
    if "e2e" in s:
        lines += [
            "",
            f"**End to end** ({meta['events']} events posted once each while the worker "
            "drains them; from the first request until every row is `succeeded`)",
            "",
            "| | events/s | vs floor | drain alone, events/s |",
            "|---|---:|---:|---:|",
        ]
        labels = {
            "ours": "ours (gunicorn + `celery -A config worker`)",
            "floor": "floor (floor_wsgi + bare Celery task)",
        }
        for name, rate in s["e2e"].items():
            lines.append(
                f"| {labels.get(name, name)} | {rate:.0f} | {rate / s['e2e']['floor']:.0%} | "
                f"{s['drain'][name]:.0f} |"
            )
        for spec in report["results"].get("e2e_variants", []):
            lines.append(f"\nVariant `{spec}`.")
        lines += [
            "",
            f'Ours is **{s["e2e_ratio"]:.0%}** of the floor. "Drain alone" is the rate '
            "after the last event was stored, when the worker no longer shares the machine "
            "with ingest.",
        ]
    if "slow" in s:
        lines += [
            "",
            f"**Slow handlers**: our ingest while our worker ({concurrency} processes) "
            "drains the queue",
            "",
            "| worker running | req/s | p50 ms | p90 ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
        ]
        labels = {"none": "none", "noop": "no-op handler", "sleep": "handler sleeps 200 ms"}
        for kind, label in labels.items():
            row = s["slow"][kind]
            lines.append(
                f"| {label} | {row['rps']:.0f} | {row['p50_ms']:.1f} | {row['p90_ms']:.1f} | "
                f"{row['p99_ms']:.1f} |"
            )
        lines += [
            "",
            f"With the 200 ms handler, ingest p99 changes by **{s['slow_p99_change']:+.0%}** "
            "against the no-op handler.",
        ]
    rss = s["rss_kib"]
    text = (
        f"**Peak RSS** (VmHWM): web worker process ours {rss['web']['ours'] / 1024:.0f} MiB, "
        f"floor {rss['web']['floor'] / 1024:.0f} MiB"
    )
    if "worker" in rss:
        text += (
            f"; Celery pool process ours {rss['worker']['ours'] / 1024:.0f} MiB, floor "
            f"{rss['worker']['floor'] / 1024:.0f} MiB"
        )
    lines += [
        "",
        text + ".",
        "",
        "| target | met |",
        "|---|---|",
        *(f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in s["targets"].items()),
    ]
    if "e2e" in s and "slow" in s:
        lines += ["", f"![throughput and latency]({CHART.name})"]
    return "\n".join(lines)


def chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["summary"]
    colors = {"ours": "#3b6ea5", "floor": "#b0b0b0"}
    fig, axes = plt.subplots(1, 4, figsize=(15, 4))
    ax = axes[0]
    names = ["ours", "floor"]
    ax.bar(names, [s["ingest"][n]["rps"] for n in names], color=[colors[n] for n in names])
    ax.set_title("ingest, requests/s")
    ax = axes[1]
    width = 0.38
    pcts = ["p50_ms", "p90_ms", "p99_ms"]
    for i, n in enumerate(names):
        ax.bar(
            [x + (i - 0.5) * width for x in range(3)],
            [s["ingest"][n][p] for p in pcts],
            width,
            label=n,
            color=colors[n],
        )
    ax.set_xticks(range(3), ["p50", "p90", "p99"])
    ax.set_title("ingest latency, ms")
    ax.legend()
    ax = axes[2]
    ax.bar(names, [s["e2e"][n] for n in names], color=[colors[n] for n in names])
    ax.set_title(f"end to end, events/s ({report['meta']['events']} events)")
    ax = axes[3]
    kinds = [("none", "no worker"), ("noop", "no-op\nhandler"), ("sleep", "200 ms\nhandler")]
    ax.bar([k[1] for k in kinds], [s["slow"][k[0]]["p99_ms"] for k in kinds], color=colors["ours"])
    ax.set_title("our ingest p99 (ms) by worker load")
    fig.suptitle(f"django-queued-webhooks vs framework-free floor — {report['meta']['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_doc(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{MARK_START}\n{MARK_END}\n"
    if MARK_START not in doc:
        doc += f"\n{MARK_START}\n{MARK_END}\n"
    head, rest = doc.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    DOC.write_text(f"{head}{MARK_START}\n{text}\n{MARK_END}{tail}")


def machine() -> str:
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024 // 1024
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"nproc {os.cpu_count()}, {mem} GiB RAM, {cpu}, {platform.platform()}"


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short trials, fewer events")
    parser.add_argument("--duration", type=float, help="seconds per ingest trial (BENCH_DURATION)")
    parser.add_argument("--rounds", type=int, help="ingest rounds (BENCH_ROUNDS)")
    parser.add_argument("--events", type=int, help="end-to-end events (BENCH_EVENTS)")
    parser.add_argument("--e2e-rounds", type=int, help="end-to-end rounds (BENCH_E2E_ROUNDS)")
    parser.add_argument(
        "--gunicorn",
        default=os.environ.get("BENCH_GUNICORN", DEFAULT_GUNICORN),
        help="gunicorn options for ours and the floor, over gunicorn.conf.py (none)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=int(env_float("BENCH_WORKER_CONCURRENCY", WORKER_CONCURRENCY)),
        help=f"Celery prefork processes, ours and the floor's ({WORKER_CONCURRENCY})",
    )
    parser.add_argument("--label", default="latest", help="name of bench/results/<label>.json")
    parser.add_argument("--no-doc", action="store_true", help="do not touch docs/")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE,...",
        help="also measure our ingest with these environment variables "
        "(GUNICORN=options for other gunicorn options, WSGI=module:name for another "
        "application); repeatable",
    )
    parser.add_argument(
        "--e2e-variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE,...",
        help="also run end to end with our worker under these environment variables",
    )
    parser.add_argument("--ingest-only", action="store_true", help="only the ingest phase")
    args = parser.parse_args(argv)
    quick = args.quick or os.environ.get("BENCH_QUICK", "") not in ("", "0")
    args.duration = args.duration or env_float("BENCH_DURATION", 6 if quick else 30)
    args.rounds = args.rounds or int(env_float("BENCH_ROUNDS", 2 if quick else 3))
    args.events = args.events or int(env_float("BENCH_EVENTS", 3000 if quick else 20000))
    # Two interleaved end-to-end rounds: one round of each takes minutes, and a
    # single pair can straddle a change in the machine's other load.
    args.e2e_rounds = args.e2e_rounds or int(env_float("BENCH_E2E_ROUNDS", 1 if quick else 2))
    if not shutil.which("wrk"):
        print("wrk is not installed (make bench installs it: apt-get install -y wrk)")
        return 2

    work = ROOT / ".devstack" / f"bench-{os.getpid()}"
    bench = Bench(args, work)
    started = time.monotonic()
    try:
        results = bench.run()
        versions = bench.versions()
    finally:
        log("stopping every process started")
        bench.stop_all()
    keep_logs = ROOT / ".devstack" / "bench-logs"
    shutil.rmtree(keep_logs, ignore_errors=True)
    shutil.copytree(bench.logs, keep_logs)
    shutil.rmtree(work, ignore_errors=True)

    commit = (
        os.environ.get("BENCH_COMMIT")
        or subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
    )
    report = {
        "meta": {
            "label": args.label,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit,
            "machine": machine(),
            "versions": versions,
            "settings": (
                f"{args.rounds} ingest rounds of {args.duration:.0f} s, "
                f"gunicorn {gunicorn_settings(args)}, "
                f"Celery prefork concurrency {args.concurrency}, "
                f"Postgres fsync on, its files on {bench.pg_storage}, "
                f"{(time.monotonic() - started) / 60:.0f} min in all"
            ),
            "body_bytes": bench.bodies.size,
            "events": args.events,
            "concurrency": args.concurrency,
        },
        "summary": summarise(results),
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.label}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = render(report)
    print("\n" + text + "\n")
    if not args.no_doc and not args.ingest_only:
        chart(report, CHART)
        write_doc(text)
        log(f"wrote {DOC.relative_to(ROOT)} and {CHART.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
