"""Real processes for the suite: Celery workers, beat, gunicorn.

Each runs as a subprocess with DJANGO_SETTINGS_MODULE=tests.settings and the
test database's URL, logging to a file the test can read when it fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devstack.services import free_port, port_open

ROOT = Path(__file__).resolve().parent.parent


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition",
) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout}s waiting for {text}")
        time.sleep(interval)


def child_pids(pid: int) -> list[int]:
    """Pids of the direct children of `pid` (Linux /proc); none once it has exited."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


class Process:
    """A subprocess with its own log file and process group."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_dir: Path,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return f"--- {self.name} log ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL of the whole group if it hangs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the process and its children, as a crash or the OOM killer would."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def _reap_group(self) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def children(self) -> list[int]:
        """Pids of direct children (a prefork worker's pool processes)."""
        assert self.proc is not None
        return child_pids(self.proc.pid)


def python() -> str:
    return sys.executable


def celery_worker(
    env: dict[str, str],
    log_dir: Path,
    concurrency: int = 2,
    name: str | None = None,
    pool: str = "prefork",
) -> Process:
    """Start a real `celery worker` and wait until it consumes."""
    node = name or f"w{uuid.uuid4().hex[:6]}"
    argv = [
        python(), "-m", "celery", "-A", "config", "worker",
        "--loglevel=INFO",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--hostname={node}@%h",
        f"--queues={env['WEBHOOKS_TEST_QUEUE']}",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    proc = Process(f"worker-{node}", argv, env, log_dir).start()
    wait_until(
        lambda: " ready." in proc.log() or not proc.alive,
        timeout=60,
        message=lambda: f"worker to start\n{proc.log_tail()}",
    )
    assert proc.alive, proc.log_tail()
    return proc


def celery_beat(env: dict[str, str], log_dir: Path) -> Process:
    schedule = log_dir / f"beat-{uuid.uuid4().hex[:6]}"
    argv = [
        python(), "-m", "celery", "-A", "config", "beat",
        "--loglevel=INFO", f"--schedule={schedule}",
    ]  # fmt: skip
    proc = Process("beat", argv, env, log_dir).start()
    wait_until(
        lambda: "beat: Starting" in proc.log() or not proc.alive,
        timeout=60,
        message=lambda: f"beat to start\n{proc.log_tail()}",
    )
    assert proc.alive, proc.log_tail()
    return proc


class Gunicorn(Process):
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def gunicorn(
    env: dict[str, str], log_dir: Path, workers: int = 2, extra: list[str] | None = None
) -> Gunicorn:
    """The suite's gunicorn: `workers` sync processes unless `extra` says otherwise.

    It runs in ROOT, so gunicorn also reads ./gunicorn.conf.py (the reference
    settings); the options here override it, the worker class and threads
    included, so a test gets the shape it asks for (`extra` comes last and wins).
    """
    port = free_port()
    argv = [
        python(), "-m", "gunicorn", "config.wsgi:application",
        f"--bind=127.0.0.1:{port}", f"--workers={workers}",
        "--worker-class=sync", "--threads=1",
        "--access-logfile=-", "--graceful-timeout=5", *(extra or []),
    ]  # fmt: skip
    proc = Gunicorn("gunicorn", argv, env, log_dir)
    proc.port = port
    proc.start()
    wait_until_serving(proc, workers)
    return proc


def wait_until_serving(proc: Gunicorn, workers: int) -> None:
    """Wait until `proc` listens and each of its `workers` has booted Django."""
    wait_until(
        lambda: port_open(proc.port) or not proc.alive,
        timeout=60,
        message=lambda: f"gunicorn to listen\n{proc.log_tail()}",
    )
    # The port opens before the workers have booted Django: wait for them.
    wait_until(
        lambda: (
            proc.log().count("Booting worker") >= workers and _answers(proc.url) or not proc.alive
        ),
        timeout=60,
        message=lambda: f"gunicorn workers to boot\n{proc.log_tail()}",
    )
    assert proc.alive, proc.log_tail()


def established_connections(proc: Process, port: int) -> int:
    """TCP connections to `port` that `proc`'s children (gunicorn's workers)
    have accepted and hold open: in their hands, not waiting in the backlog."""
    inodes: set[str] = set()
    for pid in child_pids(proc.pid):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        established = state == "01"
        if established and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
            count += 1
    return count


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/webhooks/stripe/", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # 405 for a GET: Django answered
    except OSError:
        return False


def manage(
    env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `manage.py` in a subprocess with the suite's settings."""
    return subprocess.run(
        [python(), str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
