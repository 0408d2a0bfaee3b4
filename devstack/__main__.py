"""Run a command, or the whole stack, against real Postgres and Redis.

    python -m devstack run            # web, worker, beat and Flower (make run)
    python -m devstack exec -- CMD    # CMD with the services' URLs set (make test)
    python -m devstack attach -- CMD  # CMD against the stack `run` is running (make send)

Services whose URL is already in the environment (`DATABASE_URL`,
`CELERY_BROKER_URL`) are used as they are; the missing ones are started from
PyPI wheels on free ports and stopped on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .services import EmbeddedPostgres, EmbeddedRedis, free_port, port_open

ROOT = Path(__file__).resolve().parent.parent
# Git-ignored; DEVSTACK_STATE moves it (the suite runs a whole stack in a temporary one).
STATE = Path(os.environ.get("DEVSTACK_STATE") or ROOT / ".devstack")
# What `attach` needs to reach the stack `run` is running; written at start, removed at exit.
ATTACH_VARIABLES = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "DJANGO_DEBUG",
    "DJANGO_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "WEB_PORT",
    "FLOWER_PORT",
)


def _persistent_secret(path: Path, prefix: str) -> str:
    """A random value kept in .devstack/ so it survives restarts of `make run`."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = prefix + secrets.token_hex(24)
    path.write_text(value + "\n")
    return value


@contextmanager
def services(state_dir: Path, database: str) -> Iterator[dict[str, str]]:
    """Yield environment variables pointing at running Postgres and Redis."""
    env: dict[str, str] = {}
    with ExitStack() as stack:
        if not os.environ.get("DATABASE_URL"):
            pg = EmbeddedPostgres(state_dir / "postgres")
            print(f"devstack: starting Postgres (embedded) on 127.0.0.1:{pg.port}", flush=True)
            pg.start()
            stack.callback(pg.stop)
            pg.create_database(database)
            env["DATABASE_URL"] = pg.url(database)
        if not os.environ.get("CELERY_BROKER_URL"):
            redis = EmbeddedRedis(state_dir / "redis")
            print(f"devstack: starting Redis (embedded) on 127.0.0.1:{redis.port}", flush=True)
            redis.start()
            stack.callback(redis.stop)
            env["CELERY_BROKER_URL"] = redis.url
        yield env


def _wait_for(proc: subprocess.Popen[bytes]) -> int:
    """Wait for the child; Ctrl-C reaches it through the terminal, so keep waiting."""
    forward = lambda signum, frame: proc.send_signal(signum)  # noqa: E731
    signal.signal(signal.SIGTERM, forward)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    return env


def cmd_exec(argv: list[str]) -> int:
    if not argv:
        print("devstack exec: give a command after --", file=sys.stderr)
        return 2
    state = STATE / f"exec-{os.getpid()}"
    try:
        with services(state, database="webhooks") as svc_env:
            env = _base_env() | svc_env
            proc = subprocess.Popen(argv, env=env, cwd=ROOT)
            return _wait_for(proc)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _choose_port(preferred: int) -> int:
    return preferred if not port_open(preferred) else free_port()


def cmd_run() -> int:
    state = STATE / "run"
    state.mkdir(parents=True, exist_ok=True)
    with services(state, database="webhooks") as svc_env:
        env = _base_env() | svc_env
        env.setdefault("DJANGO_DEBUG", "1")
        env.setdefault("DJANGO_SECRET_KEY", _persistent_secret(state / "django-secret-key", ""))
        env.setdefault(
            "STRIPE_WEBHOOK_SECRET", _persistent_secret(state / "dev-signing-secret", "whsec_")
        )
        env.setdefault("WEB_PORT", str(_choose_port(8000)))
        env.setdefault("FLOWER_PORT", str(_choose_port(5555)))
        env.setdefault("CELERY_BEAT_SCHEDULE_FILE", str(state / "celerybeat-schedule"))
        if "PROMETHEUS_MULTIPROC_DIR" not in env:
            # gunicorn's workers add up their metrics here; it must start empty.
            metrics_dir = state / "prometheus"
            shutil.rmtree(metrics_dir, ignore_errors=True)
            metrics_dir.mkdir()
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--no-input", "-v", "0"], env=env, check=True)
        subprocess.run([*manage, "collectstatic", "--no-input", "-v", "0"], env=env, check=True)
        created_admin = "DATABASE_URL" in svc_env
        if created_admin:
            # Only on the throwaway embedded database: a known local login.
            subprocess.run([*manage, "webhooks_dev_admin"], env=env, check=True)

        attach_file = state / "attach.json"
        attach_file.touch(mode=0o600)  # it holds the secrets
        attach_file.write_text(
            json.dumps(
                {"pid": os.getpid(), "env": {k: env[k] for k in ATTACH_VARIABLES if k in env}}
            )
        )
        web = f"http://127.0.0.1:{env['WEB_PORT']}"
        lines = [
            "",
            "django-queued-webhooks is starting:",
            f"  webhook URL     {web}/webhooks/stripe/",
            f"  admin           {web}/admin/"
            + ("   (login: admin / admin)" if created_admin else ""),
            f"  Flower          http://127.0.0.1:{env['FLOWER_PORT']}/",
            f"  health          {web}/webhooks/health/",
            f"  metrics         {web}/webhooks/metrics",
            f"  signing secret  {env['STRIPE_WEBHOOK_SECRET']}",
            "",
            "  send one:       make send TYPE=customer.created   (from another terminal)",
            "  stop:           Ctrl-C",
            "",
        ]
        print("\n".join(lines), flush=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile")],
            env=env,
            cwd=ROOT,
        )
        try:
            code = _wait_for(proc)
        finally:
            attach_file.unlink(missing_ok=True)
        print("devstack: stopping Postgres and Redis", flush=True)
        return code


def cmd_attach(argv: list[str]) -> int:
    """Run a command with the environment of the stack `devstack run` is running."""
    if not argv:
        print("devstack attach: give a command after --", file=sys.stderr)
        return 2
    attach_file = STATE / "run" / "attach.json"
    try:
        running = json.loads(attach_file.read_text())
        os.kill(running["pid"], 0)
    except (OSError, ValueError, KeyError):
        print("devstack attach: no stack is running; start one with `make run`", file=sys.stderr)
        return 2
    env = _base_env() | running["env"]
    return subprocess.run(argv, env=env, cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        idx = argv.index("--")
        argv, rest = argv[:idx], argv[idx + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["run", "exec", "attach"])
    args = parser.parse_args(argv)
    if args.command == "run":
        return cmd_run()
    if args.command == "attach":
        return cmd_attach(rest)
    return cmd_exec(rest)


if __name__ == "__main__":
    sys.exit(main())
