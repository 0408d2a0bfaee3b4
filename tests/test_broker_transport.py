"""The reference project's Redis transport: kombu's, with one client object per channel."""

from __future__ import annotations

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
