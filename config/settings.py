"""Settings for the reference project, read from the environment.

    DATABASE_URL            postgres://user:pass@host:5432/name   (required)
    CELERY_BROKER_URL       redis://host:6379/0                   (required)
    STRIPE_WEBHOOK_SECRET   whsec_... for /webhooks/stripe/; comma-separate
                            several while rotating
    STRIPE_WEBHOOK_SECRET_<NAME>  secrets of the named endpoint
                            /webhooks/stripe/<name>/ (name lower-cased)
    STRIPE_WEBHOOK_STYLE_<NAME>   "thin" for an endpoint of thin (v2) events
    STRIPE_API_KEY          sk_... for handlers and for the library's own
                            calls to Stripe (thin events, backfill)
    STRIPE_API_BASE         another base URL for those calls (default Stripe's)
    DJANGO_SECRET_KEY       required unless DJANGO_DEBUG is on
    DJANGO_DEBUG            1/true/yes to enable debug mode
    DJANGO_ALLOWED_HOSTS    comma-separated host names

`make run` and `make test` fill in DATABASE_URL and CELERY_BROKER_URL with
embedded servers when they are not set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def env_required(name: str, hint: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(f"Set the {name} environment variable: {hint}")
    return value


def prepared_statement_options(options: dict[str, Any]) -> None:
    """Parameters sent apart from the SQL, and statements run five times prepared (psycopg 3).

    Postgres then parses and plans the hot statements (the ingest INSERT, the
    worker's claim and finish) once per connection instead of on every
    request and attempt; Django's defaults are client-side binding and no
    prepared statements. Behind PgBouncer in transaction pooling mode before
    1.21, add `?prepare_threshold=none` to DATABASE_URL: its query string sets
    these options, as text, which this reads as well as their Python values.
    """
    binding = str(options.get("server_side_binding", True)).lower()
    options["server_side_binding"] = binding in ("true", "1")
    threshold = str(options.get("prepare_threshold", 5)).lower()
    options["prepare_threshold"] = None if threshold in ("", "none") else int(threshold)


DEBUG = env_bool("DJANGO_DEBUG")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "").strip()
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "Set the DJANGO_SECRET_KEY environment variable (or DJANGO_DEBUG=1 for local use)."
        )
    SECRET_KEY = "insecure-local-development-key"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS") or (
    ["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "webhook_ingest",
    "webhook_worker",
    "demo",
]

MIDDLEWARE = [
    # First: a webhook delivery (a signed server-to-server POST) is answered by
    # the view before the browser-facing middleware below runs for it.
    "webhook_ingest.middleware.WebhookMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_required("DATABASE_URL", "postgres://user:password@host:5432/dbname"),
        # Keep connections open between requests and tasks: a new Postgres
        # connection costs more than the whole ingest request.
        conn_max_age=600,
        # No SELECT 1 before each request, a round trip per delivery. The view
        # reconnects and retries its idempotent INSERT once when the server
        # dropped the connection (webhook_ingest.views._record); a task retries.
        conn_health_checks=False,
    )
}
# A database that stops answering must cost a delivery a quick 503 (Stripe
# retries it), not a request held open until the sender gives up: bound each
# connection attempt. A connect_timeout in DATABASE_URL's query string wins.
_db_options = DATABASES["default"].setdefault("OPTIONS", {})
_db_options.setdefault("connect_timeout", 5)
prepared_statement_options(_db_options)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"


# --- Stripe webhooks -------------------------------------------------------


def _endpoints() -> dict[str, dict[str, object]]:
    endpoints: dict[str, dict[str, object]] = {
        "default": {"SECRETS": env_list("STRIPE_WEBHOOK_SECRET")}
    }
    prefix = "STRIPE_WEBHOOK_SECRET_"
    for key in sorted(os.environ):
        if key.startswith(prefix) and len(key) > len(prefix):
            name = key[len(prefix) :]
            endpoints[name.lower()] = {"SECRETS": env_list(key)}
            style = os.environ.get(f"STRIPE_WEBHOOK_STYLE_{name}")
            if style:
                endpoints[name.lower()]["STYLE"] = style
    return endpoints


STRIPE_WEBHOOKS: dict[str, Any] = {
    "ENDPOINTS": _endpoints(),
    "API_BASE": os.environ.get("STRIPE_API_BASE") or None,
}
STRIPE_API_KEY = os.environ.get("STRIPE_API_KEY", "")


# --- Celery ----------------------------------------------------------------
# What webhook processing needs from Celery is applied by configure_celery()
# in config/celery_app.py; these are this project's own choices.

CELERY_BROKER_URL = env_required("CELERY_BROKER_URL", "redis://host:6379/0")
# Fail a publish fast when the broker is down: the event is stored, and the
# sweeper enqueues it once the broker is back.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 5}
CELERY_TIMEZONE = "UTC"


# --- Logging ---------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "webhook_ingest": {"level": os.environ.get("WEBHOOKS_LOG_LEVEL", "INFO")},
        "webhook_worker": {"level": os.environ.get("WEBHOOKS_LOG_LEVEL", "INFO")},
        "demo": {"level": "INFO"},
    },
}
