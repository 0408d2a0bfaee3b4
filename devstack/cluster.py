"""A cluster on one machine: `make cluster` (python -m devstack.cluster).

    lb       10.77.N.10  haproxy, port 8000: the one address deliveries go to
    web1, 2  .11, .12    gunicorn (config.wsgi), port 8000
    w1, 2, 3 .21 - .23   `celery worker -B`: a worker, and beat's schedule
                         (sweeper, due retries, reconciliation) on every host
    db       .30         Postgres, port 5432
    broker   .40         Redis, port 6379, nothing kept on disk

Each host is a network namespace (devstack/hosts.py) and each process
listens on its host's address only. The processes run the test suite's
settings and handlers (tests.settings, tests/testapp): a handler that fails
the first attempt of a share of events, chosen by a hash of the event id,
and writes one row per event and handler in the event's transaction.
devstack/scenario.py drives deliveries and faults through it and checks the
outcome; `make cluster` runs 20,000 events and rewrites the result in
docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .hosts import Network, Proc, network, reason_unavailable
from .services import EmbeddedPostgres, EmbeddedRedis, port_open, wait_until

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "webhooks"
QUEUE = "cluster"
WEB_PORT = 8000
HOSTS = {"lb": 10, "web1": 11, "web2": 12, "w1": 21, "w2": 22, "w3": 23, "db": 30, "broker": 40}
WEB_HOSTS = ("web1", "web2")
WORKER_HOSTS = ("w1", "w2", "w3")


@dataclass(frozen=True)
class Timing:
    """The recovery windows the cluster runs with, in seconds."""

    # STRIPE_WEBHOOKS["REQUEUE_AFTER"] and beat's sweep interval: an event
    # whose message or worker was lost is enqueued again within their sum.
    requeue_after: float = 10.0
    sweep_interval: float = 5.0
    # A retry waits in the database, published by a sweep, when it is longer
    # than this (the first retry, RETRY_SCHEDULE[0], is longer).
    max_broker_delay: float = 1.0
    retry_schedule: tuple[float, ...] = (2, 2, 2, 2, 2, 2, 2)
    # TCP keepalives and user timeout on both ends of every database
    # connection: a session whose host went silent ends after idle +
    # interval x count seconds, and with it the advisory lock that tells the
    # sweeper its event has a live worker.
    keepalive: tuple[int, int, int] = (2, 1, 3)

    @property
    def sweeper_window(self) -> float:
        """Longest a lost event waits before it is enqueued again."""
        idle, interval, count = self.keepalive
        return max(self.requeue_after, idle + interval * count) + self.sweep_interval

    def overrides(self) -> str:
        return json.dumps(
            {
                "REQUEUE_AFTER": self.requeue_after,
                "MAX_BROKER_DELAY": self.max_broker_delay,
                "RETRY_SCHEDULE": list(self.retry_schedule),
            }
        )


def tools_missing() -> str | None:
    """Why the cluster cannot run here, or None."""
    reason = reason_unavailable()
    if reason:
        return reason
    if shutil.which("haproxy") is None:
        return "haproxy is not installed (apt-get install haproxy; `make cluster` does)"
    return None


class Cluster:
    """The hosts and their processes; start with `cluster()`."""

    def __init__(
        self,
        net: Network,
        state: Path,
        timing: Timing,
        worker_concurrency: int = 2,
        web_workers: int = 2,
        web_threads: int = 8,
    ) -> None:
        self.net, self.state, self.timing = net, state, timing
        self.worker_concurrency = worker_concurrency
        self.web_workers, self.web_threads = web_workers, web_threads
        self.hosts = {name: net.add_host(name, number) for name, number in HOSTS.items()}
        idle, interval, count = timing.keepalive
        self.db = EmbeddedPostgres(
            state / "db",
            port=5432,
            host=self.hosts["db"].address,
            netns=self.hosts["db"].netns,
            clients=net.cidr,
            settings={
                "max_connections": "300",
                # Statements per event, for devstack/meter.py.
                "shared_preload_libraries": "pg_stat_statements",
                "tcp_keepalives_idle": str(idle),
                "tcp_keepalives_interval": str(interval),
                "tcp_keepalives_count": str(count),
                # And when a reply to the host is never acknowledged, which
                # keepalives do not cover.
                "tcp_user_timeout": str((idle + interval * count) * 1000),
            },
        )
        self.broker = EmbeddedRedis(
            state / "broker",
            port=6379,
            host=self.hosts["broker"].address,
            netns=self.hosts["broker"].netns,
        )

    @property
    def database_url(self) -> str:
        idle, interval, count = self.timing.keepalive
        return (
            self.db.url(DATABASE) + f"?keepalives_idle={idle}&keepalives_interval={interval}"
            f"&keepalives_count={count}&tcp_user_timeout={(idle + interval * count) * 1000}"
        )

    @property
    def url(self) -> str:
        """Where deliveries go: the load balancer."""
        return f"http://{self.hosts['lb'].address}:{WEB_PORT}/webhooks/stripe/"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        bindir = str(Path(sys.executable).parent)
        env.update(
            PATH=bindir + os.pathsep + env.get("PATH", ""),
            PYTHONPATH=str(ROOT),
            DJANGO_SETTINGS_MODULE="tests.settings",
            DATABASE_URL=self.database_url,
            CELERY_BROKER_URL=self.broker.url,
            WEBHOOKS_TEST_QUEUE=QUEUE,
            WEBHOOKS_TEST_OVERRIDES=self.timing.overrides(),
            WEBHOOKS_SWEEP_INTERVAL=str(self.timing.sweep_interval),
            WEBHOOKS_HANDLER_LOG="",
            WEBHOOKS_LOG_LEVEL="WARNING",
        )
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return env

    # --- starting ----------------------------------------------------------

    def start(self) -> None:
        self.start_db()
        self.broker.start()
        self._manage("migrate", "--no-input", "-v", "0")
        for name in WEB_HOSTS:
            self.start_web(name)
        for name in WORKER_HOSTS:
            self.start_worker(name)
        self.start_lb()

    def start_db(self) -> None:
        self.db.start()
        self.db.create_database(DATABASE)
        self.db.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", DATABASE)

    def start_web(self, name: str) -> Proc:
        host = self.hosts[name]
        argv = [
            sys.executable, "-m", "gunicorn", "config.wsgi:application",
            f"--bind={host.address}:{WEB_PORT}", f"--workers={self.web_workers}",
            "--worker-class=gthread", f"--threads={self.web_threads}",
            "--graceful-timeout=5", "--access-logfile=/dev/null",
        ]  # fmt: skip
        proc = host.start("gunicorn", argv, self.env(), cwd=ROOT)
        wait_until(
            lambda: (
                _answers(f"http://{host.address}:{WEB_PORT}/webhooks/stripe/") or not proc.alive
            ),
            90,
            f"gunicorn on {name}",
            interval=0.2,
        )
        _check_alive(proc)
        return proc

    def start_worker(self, name: str) -> Proc:
        """`celery worker -B`: the worker, and beat's schedule in a process of its own."""
        host = self.hosts[name]
        argv = [
            sys.executable, "-m", "celery", "-A", "config", "worker", "-B",
            f"--schedule={self.state / f'beat-{name}'}",
            "--loglevel=INFO", f"--concurrency={self.worker_concurrency}",
            f"--hostname={name}@cluster", f"--queues={QUEUE}",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        proc = host.start("worker", argv, self.env(), cwd=ROOT)
        wait_until(lambda: "ready." in proc.log() or not proc.alive, 90, f"worker on {name}", 0.2)
        _check_alive(proc)
        return proc

    def start_lb(self) -> Proc:
        lb = self.hosts["lb"]
        servers = "\n".join(
            f"    server {name} {self.hosts[name].address}:{WEB_PORT} "
            "check inter 500ms fall 2 rise 2"
            for name in WEB_HOSTS
        )
        config = self.state / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(address=lb.address, port=WEB_PORT, servers=servers))
        proc = lb.start("haproxy", ["haproxy", "-db", "-f", str(config)], self.env())
        wait_until(lambda: port_open(WEB_PORT, lb.address) or not proc.alive, 30, "haproxy", 0.1)
        _check_alive(proc)
        return proc

    def _manage(self, *args: str) -> None:
        argv = [sys.executable, str(ROOT / "manage.py"), *args]
        subprocess.run(argv, env=self.env(), cwd=ROOT, check=True)

    # --- faults ------------------------------------------------------------

    def kill_host(self, name: str) -> None:
        self.hosts[name].kill()

    def restart_broker_empty(self) -> None:
        """The broker host restarts: Redis killed, started again with nothing in it."""
        self.broker.kill()
        self.broker.start()

    def restart_db(self) -> None:
        """The database host restarts: Postgres' fast shutdown, then a start."""
        self.db.stop()
        self.start_db()

    def logs(self, lines: int = 30) -> str:
        return "\n".join(
            proc.log_tail(lines) for host in self.hosts.values() for proc in host.procs
        )

    def stop(self) -> None:
        for name in ("lb", *WEB_HOSTS, *WORKER_HOSTS):
            self.hosts[name].stop()
        self.broker.stop()
        self.db.stop()


HAPROXY_CONFIG = """\
global
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # A request that could not connect to a web host goes to the other one.
    retries 3
    option redispatch

frontend deliveries
    bind {address}:{port}
    default_backend web

backend web
    balance roundrobin
    http-request set-header Host localhost
    option httpchk
    http-check send meth GET uri /webhooks/stripe/ hdr Host localhost
    http-check expect status 405
{servers}
"""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # 405 for a GET: Django answered
    except OSError:
        return False


def _check_alive(proc: Proc) -> None:
    if not proc.alive:
        raise RuntimeError(f"{proc.name} exited at start\n{proc.log_tail()}")


@contextmanager
def cluster(timing: Timing, state: Path | None = None, **options: int) -> Iterator[Cluster]:
    """A started cluster; everything stopped and removed on exit."""
    with tempfile.TemporaryDirectory(prefix="dqw-cluster-") as tmp:
        state_dir = state or Path(tmp)
        state_dir.mkdir(parents=True, exist_ok=True)
        logs = state_dir / "logs"
        logs.mkdir(exist_ok=True)
        with network(logs) as net:
            # Postgres runs as its own user: it must reach its data directory.
            os.chmod(state_dir, 0o755)
            c = Cluster(net, state_dir, timing, **options)
            try:
                c.start()
                yield c
            finally:
                c.stop()


def main(argv: list[str] | None = None) -> int:
    from . import scenario

    parser = argparse.ArgumentParser(
        prog="python -m devstack.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=50.0, help="deliveries per second")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--state", type=Path, help="keep data and logs here")
    parser.add_argument(
        "--write-docs", action="store_true", help="rewrite docs/scaling.md's result"
    )
    args = parser.parse_args(argv)
    reason = tools_missing()
    if reason:
        print(f"make cluster: cannot run: {reason}", file=sys.stderr)
        return 2
    plan = scenario.Plan(events=args.events, rate=args.rate, clients=args.clients)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = scenario.run(plan, Timing(), state=args.state)
    print(report.text())
    if args.write_docs:
        scenario.write_docs(report, ROOT / "docs" / "scaling.md", started)
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
