"""kombu's Redis transport: one Redis client per channel, and a worker that survives broker loss.

kombu builds a new `redis.Redis` object for every command it sends outside
the consumer loop: every publish, every ack, every task event. redis-py's
constructor costs about 0.15 ms of CPU (it fills a table of ~170 response
callbacks), as much as the rest of a publish. The object is only a handle on
the channel's connection pool (each command borrows a pooled connection and
returns it), so one per channel does the same work.

`RedisChannel.put_many` pushes a batch of messages that the web process's
publisher built itself (webhook_worker/messages.py) in one command.

Selected for `redis://` brokers by the reference settings:

    CELERY_BROKER_TRANSPORT = "webhook_worker.transport:RedisTransport"
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis
from redis import exceptions as redis_exceptions


def kombu_json(value: Any) -> str:
    """`kombu.utils.json.dumps(value)` for values made of strings, numbers, lists and dicts.

    kombu passes its encoder class to `json.dumps`, which then builds a new
    encoder on every call: a fifth of building a message. Its class only adds
    types these messages never hold, so the standard encoder writes the same
    text.
    """
    return json.dumps(value)


class RedisChannel(redis.Channel):
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        transport = self.connection
        if transport is None or transport.client is None:
            # After the broker connection is lost, kombu still acks, and
            # restores unacked messages, on channels it has already closed or
            # detached from their connection. Building a client for them then
            # fails with an AttributeError, which
            # Celery's worker treats as unrecoverable and exits on; report it
            # as the lost connection it is, which Celery recovers from. The
            # unrestored messages stay in Redis' unacked set, and the
            # sweeper covers the events in any case.
            raise redis_exceptions.ConnectionError("the broker connection was closed")
        shared = self._shared_client
        # The pool is replaced after a fork or a disconnect; follow it.
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()  # type: ignore[attr-defined]
        yield shared

    def put_many(self, queue: str, messages: list[dict[str, Any]]) -> None:
        """Deliver prepared messages to `queue` at once: `basic_publish` for each, one push.

        `messages` come from `prepare_message()` (webhook_worker/messages.py);
        each is completed as kombu completes a message published to the
        default (anonymous) exchange, and goes where `_put` would push it, in
        order: one `LPUSH` with several values stores them as that many
        `LPUSH`es would.
        """
        by_key: dict[str, list[str]] = {}
        for message in messages:
            self._inplace_augment_message(message, "", queue)
            key = self._q_for_pri(queue, self._get_message_priority(message))  # type: ignore[attr-defined]
            by_key.setdefault(key, []).append(kombu_json(message))
        with self.conn_or_acquire() as client:
            if len(by_key) == 1:
                [(key, values)] = by_key.items()
                client.lpush(key, *values)
                return
            pipe = client.pipeline(transaction=False)
            for key, values in by_key.items():
                pipe.lpush(key, *values)
            pipe.execute()


class RedisTransport(redis.Transport):
    Channel = RedisChannel
