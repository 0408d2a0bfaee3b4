"""kombu's Redis transport, with one Redis client per channel instead of one per command.

kombu builds a new `redis.Redis` object for every command it sends outside
the consumer loop: every publish, every ack, every task event. redis-py's
constructor costs about 0.15 ms of CPU (it fills a table of ~170 response
callbacks), as much as the rest of a publish. The object is only a handle on
the channel's connection pool (each command borrows a pooled connection and
returns it), so one per channel does the same work.

Selected for `redis://` brokers by the reference settings:

    CELERY_BROKER_TRANSPORT = "webhook_worker.transport:RedisTransport"
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis


class RedisChannel(redis.Channel):
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        # The pool is replaced after a fork or a disconnect; follow it.
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()  # type: ignore[attr-defined]
        yield shared


class RedisTransport(redis.Transport):
    Channel = RedisChannel
