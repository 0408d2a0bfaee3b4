"""The reference project's Redis transport: kombu's, with one client object per channel."""

from __future__ import annotations

import logging

import pytest

from config.celery_app import app
from webhook_worker.transport import RedisChannel


def test_redis_broker_uses_one_client_per_channel_and_still_delivers():
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        assert isinstance(channel, RedisChannel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        queue = conn.SimpleQueue("webhooks-transport-test")
        try:
            queue.put({"id": "evt_transport"})
            message = queue.get(timeout=5)
            message.ack()
            assert message.payload == {"id": "evt_transport"}
        finally:
            queue.queue.delete()
            queue.close()


def test_channel_closed_after_the_connection_broke_does_not_kill_the_worker():
    """After a broken broker connection, kombu detaches the transport and then
    closes the channel, restoring and acking late messages on it. kombu's stock
    channel fails there with an AttributeError, which Celery's worker treats as
    unrecoverable ("Unrecoverable error", the worker exits). Ours reports a
    connection error: Celery logs it ("Couldn't ack") and reconnects."""
    name = "webhooks-transport-closed-test"
    conn = app.connection_for_write()
    errors = conn.connection_errors + conn.channel_errors
    queue = conn.SimpleQueue(name)
    try:
        queue.put({"id": "evt_closed"})
        message = queue.get(timeout=5)  # delivered, not acknowledged
        channel = message.channel

        conn._do_close_transport()  # the order kombu ends up in
        conn.maybe_close_channel(channel)  # restores unacked messages: no AttributeError
        message.ack_log_error(logging.getLogger(__name__), errors)  # logged, not raised

        with pytest.raises(errors):
            with channel.conn_or_acquire():
                pass
    finally:
        with app.connection_for_write() as cleanup:
            cleanup.SimpleQueue(name).queue.delete()
