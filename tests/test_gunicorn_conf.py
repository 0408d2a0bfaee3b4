"""./gunicorn.conf.py: the reference web settings that gunicorn reads by itself.

tests/test_hostile.py runs gunicorn with no options against it; these check
what it sets, how the environment changes it, and that gunicorn knows every
name in it (gunicorn skips an unknown name in a config file without a word).
"""

from __future__ import annotations

import runpy
from typing import Any

import pytest
from gunicorn.config import Config

from .stack import ROOT

CONF = ROOT / "gunicorn.conf.py"
VARIABLES = ("WEB_CONCURRENCY", "WEB_THREADS", "WEB_PORT", "PORT")


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict[str, Any]:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    names = runpy.run_path(str(CONF))
    return {k: v for k, v in names.items() if not k.startswith("_") and k != "os"}


def test_defaults(monkeypatch):
    assert settings(monkeypatch) == {
        "worker_class": "gthread",
        "workers": 2,
        "threads": 32,
        "bind": "127.0.0.1:8000",
        "accesslog": "-",
        "graceful_timeout": 10,
    }


def test_environment(monkeypatch):
    conf = settings(monkeypatch, WEB_CONCURRENCY="4", WEB_THREADS="12", PORT="5000")
    assert (conf["workers"], conf["threads"], conf["bind"]) == (4, 12, "127.0.0.1:5000")
    # make run's WEB_PORT wins over a platform's PORT.
    assert settings(monkeypatch, WEB_PORT="8123", PORT="5000")["bind"] == "127.0.0.1:8123"


def test_gunicorn_knows_and_accepts_every_setting(monkeypatch):
    cfg = Config()
    for name, value in settings(monkeypatch).items():
        assert name in cfg.settings, f"gunicorn has no setting {name!r}"
        cfg.set(name, value)  # gunicorn's own validator
    assert cfg.worker_class_str == "gthread"
    assert cfg.threads == 32
    assert cfg.address == [("127.0.0.1", 8000)]
