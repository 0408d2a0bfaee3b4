"""`process_event` messages built by the web process's publisher itself, on Redis.

`apply_async()` costs ~240 µs of CPU per message even inside a batch, of which
the message itself (Celery's `create_task_message()`) is ~10 µs. The rest
(options merging, routing, settings look-ups, kombu's publish with its retry
wrapper and declarations, the result object) changes nothing in the message
of this one task when all of these hold: our Redis transport, Celery's default
routing, JSON, no compression or priorities, no task-sent events, nothing
connected to Celery's publish signals and no integration wrapping
`apply_async()` (which is how Sentry, OpenTelemetry and the like add their
headers). Then the publisher builds each message here, with Celery's
`create_task_message()` and kombu's `prepare_message()`, and the transport
pushes the batch at once (`RedisChannel.put_many`): ~60 µs per message.
Anywhere else it uses `apply_async()`. `tests/test_publisher.py` compares the
stored messages with `apply_async()`'s, field by field.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from celery import Celery
from celery.app.task import Task
from celery.signals import after_task_publish, before_task_publish
from kombu.entity import maybe_delivery_mode
from kombu.utils.uuid import uuid

from .transport import RedisTransport, kombu_json


@dataclass(frozen=True)
class PlainMessages:
    """What every `process_event` message of this process has in common."""

    task: Any
    queue: str
    delivery_mode: int | None

    def build(
        self, channel: Any, event_id: str, event_type: str, reply_to: str, origin: str
    ) -> dict[str, Any]:
        """The message `apply_async()` would hand the channel, ready for `put_many()`.

        `reply_to` and `origin` are what Celery would fill in for the calling
        thread (`app.thread_oid`, `anon_nodename()`); the caller computes them
        once for a batch.
        """
        args = (event_id,)
        kwargs = {"trigger": "delivery", "event_type": event_type}
        argsrepr, kwargsrepr = repr(args), repr(kwargs)
        headers, properties, body, _ = self.task.app.amqp.create_task_message(
            uuid(),
            self.task.name,
            args,
            kwargs,
            reply_to=reply_to,
            origin=origin,
            shadow=self.task.shadow_name(args, kwargs, {}),
            ignore_result=True,
            argsrepr=argsrepr,
            kwargsrepr=kwargsrepr,
        )
        # What send_task_message() and Producer.publish() add to the properties.
        properties.update(
            argsrepr=argsrepr, kwargsrepr=kwargsrepr, delivery_mode=self.delivery_mode
        )
        # What kombu's JSON serializer gives for such a body.
        message: dict[str, Any] = channel.prepare_message(
            kombu_json(body).encode(), 0, "application/json", "utf-8", headers, properties
        )
        return message


def plain_messages(app: Celery, transport: Any) -> PlainMessages | None:
    """The shared parts of the messages, if the publisher may build them itself; else None."""
    plain = _plain_settings(app)
    if (
        plain is None
        or not isinstance(transport, RedisTransport)
        or before_task_publish.receivers
        or after_task_publish.receivers
        or hasattr(Task.apply_async, "__wrapped__")
        or type(plain.task).apply_async is not Task.apply_async
    ):
        return None
    return plain


@cache
def _plain_settings(app: Celery) -> PlainMessages | None:
    """The part of `plain_messages` that depends on settings only, read once."""
    from .enqueue import _publish_declares_queue
    from .tasks import process_event

    conf = app.conf
    task = app.tasks[process_event.name]
    options = task._get_exec_options()  # type: ignore[attr-defined]
    if (
        _publish_declares_queue(app)
        or conf.task_protocol != 2
        or conf.task_serializer != "json"
        or conf.task_compression is not None
        or conf.task_send_sent_event
        or conf.task_queue_max_priority
        or conf.task_default_priority is not None
        or any(value is not None for name, value in options.items() if name != "serializer")
        or options.get("serializer") not in (None, "json")
    ):
        return None
    queue = app.amqp.default_queue
    delivery_mode = maybe_delivery_mode(
        queue.exchange.delivery_mode or conf.task_default_delivery_mode
    )
    return PlainMessages(task=task, queue=queue.name, delivery_mode=delivery_mode)
