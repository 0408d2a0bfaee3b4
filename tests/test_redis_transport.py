"""The one guard of webhook_worker/redis_transport.py, and when it is chosen.

kombu's Redis channel fails with an AttributeError when Celery acknowledges,
or restores, a message on a channel whose broker connection was lost; Celery's
worker treats that error as unrecoverable and exits. Ours reports the lost
connection, which Celery recovers from. The first test shows both, with kombu
itself: when kombu fixes its channel, it fails, and the guard can go.
"""

from __future__ import annotations

import logging

import pytest
from celery import Celery
from django.conf import settings
from kombu import Connection

from webhook_worker.celery import REDIS_TRANSPORT, configure_celery
from webhook_worker.redis_transport import Transport


def broken_after_delivery(
    transport: object, name: str
) -> tuple[Exception | None, Exception | None]:
    """Deliver a message, lose the connection as kombu does, then close and ack.

    Returns what closing the channel and acknowledging raised (None: nothing).
    """
    conn = Connection(settings.CELERY_BROKER_URL, transport=transport)
    errors = conn.connection_errors + conn.channel_errors
    queue = conn.SimpleQueue(name)
    outcomes: list[Exception | None] = []
    try:
        queue.put({"id": "evt_closed"})
        message = queue.get(timeout=5)  # delivered, not acknowledged
        channel = message.channel
        conn._do_close_transport()  # the order kombu ends up in
        for step in (
            lambda: conn.maybe_close_channel(channel),  # restores unacked messages
            lambda: message.ack_log_error(logging.getLogger(__name__), errors),
        ):
            try:
                step()
                outcomes.append(None)
            except Exception as exc:  # what the worker would see
                outcomes.append(exc)
    finally:
        with Connection(settings.CELERY_BROKER_URL) as cleanup:
            cleanup.SimpleQueue(name).queue.delete()
    return outcomes[0], outcomes[1]


@pytest.mark.server  # talks to the Redis broker
def test_kombus_channel_fails_where_ours_reports_a_lost_connection():
    stock = broken_after_delivery(None, "webhooks-transport-stock")
    assert all(isinstance(error, AttributeError) for error in stock), stock
    ours = broken_after_delivery(Transport, "webhooks-transport-ours")
    assert ours == (None, None)  # restored and logged, nothing an exit follows


@pytest.mark.parametrize(
    ("url", "own", "expected"),
    [
        ("redis://127.0.0.1:6379/0", None, REDIS_TRANSPORT),
        ("amqp://guest:guest@127.0.0.1:5672//", None, None),
        ("redis://127.0.0.1:6379/0", "redis", "redis"),  # the project's own choice stands
    ],
)
def test_the_guarded_transport_is_chosen_for_redis_urls_only(monkeypatch, url, own, expected):
    # Celery reads the broker URL from the environment before its own settings.
    monkeypatch.setenv("CELERY_BROKER_URL", url)
    app = Celery("project", set_as_current=False)
    app.config_from_object({"broker_transport": own} if own else {})
    configure_celery(app)
    assert app.conf.broker_transport == expected
