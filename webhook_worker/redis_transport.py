"""kombu's Redis transport with one guard: a worker outlives a broker restart.

After the broker connection is lost, kombu still acknowledges, and restores
unacknowledged messages, on channels it has already detached from their
connection. kombu's own channel then fails with an AttributeError, which
Celery's worker treats as unrecoverable: it exits ("Unrecoverable error").
This channel reports the lost connection as the ConnectionError it is, which
Celery recovers from by reconnecting. The messages it could not restore stay
in Redis' unacked set, and the sweeper covers their events in any case.

`configure_celery` selects it for `redis://` broker URLs when the project
names no transport of its own; every other broker keeps kombu's transport.
No other behaviour of kombu's changes (docs/internals.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(redis.Channel):
    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client is None and (self.connection is None or self.connection.client is None):
            raise RedisConnectionError("the broker connection was closed")
        with super().conn_or_acquire(client) as acquired:
            yield acquired


class Transport(redis.Transport):
    Channel = Channel
