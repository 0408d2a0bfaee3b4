"""Settings for the reference project, read from the environment.

    DATABASE_URL            postgres://user:pass@host:5432/name   (required)
    CELERY_BROKER_URL       redis://host:6379/0                   (required)
    STRIPE_WEBHOOK_SECRET   whsec_... for /webhooks/stripe/; comma-separate
                            several while rotating
    STRIPE_WEBHOOK_SECRET_<NAME>  secrets of the named endpoint
                            /webhooks/stripe/<name>/ (name lower-cased)
    STRIPE_API_KEY          sk_... for handlers that call Stripe
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
        # No SELECT 1 before each request: it was a third of the ingest's
        # database round trips. The view reconnects and retries its
        # idempotent INSERT once when the server dropped the connection
        # (webhook_ingest.views._record); a worker's task retries.
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
            endpoints[key[len(prefix) :].lower()] = {"SECRETS": env_list(key)}
    return endpoints


STRIPE_WEBHOOKS: dict[str, Any] = {
    "ENDPOINTS": _endpoints(),
}
STRIPE_API_KEY = os.environ.get("STRIPE_API_KEY", "")


# --- Celery ----------------------------------------------------------------

CELERY_BROKER_URL = env_required("CELERY_BROKER_URL", "redis://host:6379/0")
if CELERY_BROKER_URL.startswith("redis://"):
    # kombu's Redis transport, minus a new client object per publish and ack
    # (0.15 ms of CPU each); see webhook_worker/transport.py.
    CELERY_BROKER_TRANSPORT = "webhook_worker.transport:RedisTransport"
# Messages are acknowledged after the task ran, so a crash redelivers them...
CELERY_TASK_ACKS_LATE = True
# ...including when the worker process is killed mid-task (SIGKILL, OOM).
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A worker reserves one message at a time: nothing sits unacked behind a slow handler.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# JSON only: messages carry an event id, never a pickled object.
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Outcomes live in the database (WebhookEvent / WebhookAttempt), not in a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# Task events feed Flower's live view of tasks, retries and failures.
CELERY_WORKER_SEND_TASK_EVENTS = True
# ...sent in batches every 0.1 s instead of one broker round trip per event
# (three per task); see webhook_worker/consumer.py.
CELERY_WORKER_CONSUMER = "webhook_worker.consumer:Consumer"
# No "task-sent" events: they carry the registered task name and usually reach
# Flower after the worker's "task-received", overwriting the event type that
# the worker reports (process_event[invoice.paid]) with process_event.
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Redis redelivers a message unacked for this long. It must exceed the
    # longest retry countdown (3600 s + 20 % jitter), or a waiting retry is
    # redelivered over and over (system check webhook_worker.E001).
    "visibility_timeout": 7200,
    # Fail a publish fast when the broker is down: the sweeper catches up.
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 2
# Keep trying to reach the broker when a worker starts before it.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# On a lost broker connection, let running handlers finish: their outcome is
# in the database, and a repeat of the message is harmless.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# Reuse each worker's database connection across tasks instead of Celery's
# default of a new connection per task (2.6x slower dispatch).
CELERY_DB_REUSE_MAX = 1000
# Celery reads these on every publish. Spelled out here, each read is one
# hit instead of four failed lookups on django.conf.settings (~10 % of the
# cost of a publish, docs/benchmarks.md); the values are Celery's defaults.
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_BROKER_POOL_ACQUIRE_TIMEOUT = None
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "webhooks-requeue-stale": {
        "task": "webhook_worker.requeue_stale",
        "schedule": float(os.environ.get("WEBHOOKS_SWEEP_INTERVAL", "60")),
        # A sweep nobody ran within its minute is replaced by the next one.
        "options": {"expires": 55},
    },
}


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
