"""One call that fits a project's Celery app for webhook processing.

    # <project>/celery.py, as in Celery's "First steps with Django"
    import os
    from celery import Celery

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "<project>.settings")
    app = Celery("<project>")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.autodiscover_tasks()

    from webhook_worker.celery import configure_celery
    configure_celery(app)

`configure_celery` schedules the sweeper (and the reconciliation check) in
beat, changes two of Celery's defaults (below), and on a `redis://` broker
selects kombu's Redis transport with the one guard of
webhook_worker/redis_transport.py. What at-least-once delivery needs is
carried by the task itself, whatever the settings say: late
acknowledgement, requeue when its worker process dies, JSON, no result. The
system checks (`webhook_worker.E001`...) report the settings that would
still lose or strand events.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.app.defaults import DEFAULTS as CELERY_DEFAULTS

# The registered names of the three tasks (tasks.py), which messages and beat
# entries refer to.
PROCESS_EVENT = "webhook_worker.process_event"
SWEEP = "webhook_worker.requeue_stale"
RECONCILE = "webhook_worker.reconcile"

# Seconds between two runs of the sweeper: the precision of retries that wait
# in the database, and how soon a lost message is noticed once REQUEUE_AFTER has passed.
SWEEP_INTERVAL = 60.0
SWEEP_ENTRY = "webhooks-sweep"
# Seconds between two looks at whether an endpoint's reconciliation is due
# (STRIPE_WEBHOOKS["RECONCILE_EVERY"]); one query when none is.
RECONCILE_TICK = 60.0
RECONCILE_ENTRY = "webhooks-reconcile"

# Applied where the project kept Celery's own default (a value it sets itself,
# other than Celery's default, wins).
DEFAULTS: dict[str, Any] = {
    # A worker reserves one message at a time: a slow handler holds nothing
    # up behind it, and a killed worker takes one message down with it.
    "worker_prefetch_multiplier": 1,
    # Keep a worker's database connection across tasks instead of Celery's
    # Django default of a new connection per task (see docs/benchmarks.md);
    # connections that failed or outlived CONN_MAX_AGE are still closed after
    # each task (tasks.drop_broken_connections).
    "CELERY_DB_REUSE_MAX": 1000,
}


def configure_celery(
    app: Celery, *, sweep_interval: float = SWEEP_INTERVAL, reconcile_tick: float = RECONCILE_TICK
) -> None:
    """Add webhook processing's defaults to `app`; schedule the sweeper and reconciliation in beat.

    Call it once, in the module that creates the project's Celery app. It reads
    no setting at call time, so it is safe while Django's settings are loading.
    """
    app.on_after_configure.connect(_apply_defaults, sender=app, weak=False)
    app.add_periodic_task(
        sweep_interval,
        app.signature(SWEEP),
        name=SWEEP_ENTRY,
        # A sweep waits its turn behind a backlog and still runs, but sweeps
        # sent while no worker runs do not pile up beyond ten.
        expires=sweep_interval * 10,
    )
    app.add_periodic_task(
        reconcile_tick, app.signature(RECONCILE), name=RECONCILE_ENTRY, expires=reconcile_tick
    )


# Settings Celery reads on every publish. Held in the app's own settings, each
# is one look-up, instead of one per spelling on django.conf.settings while it
# is unset there. Their values are kept as they are.
READ_ON_EVERY_PUBLISH = (
    "task_default_queue",
    "task_send_sent_event",
    "broker_pool_acquire_timeout",
)


# For redis:// brokers only, unless the project names a transport itself: a
# worker that survives a broker restart (webhook_worker/redis_transport.py).
REDIS_TRANSPORT = "webhook_worker.redis_transport:Transport"


def _apply_defaults(sender: Celery, source: Any, **kwargs: Any) -> None:
    """Once the app has read its configuration: ours wherever it kept Celery's default."""
    for key, value in DEFAULTS.items():
        if source.get(key) == CELERY_DEFAULTS.get(key):
            source[key] = value
    for key in READ_ON_EVERY_PUBLISH:
        if key in source:  # broker_pool_acquire_timeout is new in Celery 5.5
            source[key] = source[key]
    if not source.broker_transport and str(source.broker_url or "").startswith("redis://"):
        source["broker_transport"] = REDIS_TRANSPORT
