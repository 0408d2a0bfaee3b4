"""Register functions to run for Stripe event types.

    from webhook_worker import webhooks

    @webhooks.handler("customer.subscription.trial_will_end")   # exact type
    def remind(event, **kwargs): ...

    @webhooks.handler("customer")        # every customer.* type, at any depth
    def sync_customer(event, **kwargs): ...

    @webhooks.handler_all                # every event
    def audit(event, **kwargs): ...

    @webhooks.handler("customer.subscription.updated", skip_superseded=True)
    def sync(event, **kwargs): ...       # not run once a newer event about the object succeeded

Types match by dotted segments: "customer" and "customer.subscription" match
"customer.subscription.created", "cust" matches nothing; a bracketed
qualifier is one level below its segment (`"v2.core.account"` matches
`v2.core.account[requirements].updated`). For one event,
`handler_all` functions run first, then the handlers of each prefix from the
shortest to the full type, each group in registration order; a function
registered for several matching types runs once. Any callable is a handler.

Every installed app's `webhooks.py` is imported at startup (see apps.py),
the way the admin finds `admin.py`.

The names of dj-stripe 2.8's `djstripe.webhooks` are here too, with the same
shapes: `registrations` (type or prefix -> list of functions),
`registrations_global` (the `handler_all` functions) and `call_handlers(event)`.
The one difference: a function registered for several types that match one
event runs once, where dj-stripe called it once per registration.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar, overload

from webhook_ingest.parsing import EVENT_TYPE_RE, type_prefixes

__all__ = [
    "PermanentFailure",
    "call_handlers",
    "handler",
    "handler_all",
    "handlers_for",
    "registrations",
    "registrations_global",
    "registry",
    "skips_superseded",
]

Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)
Snapshot = tuple[dict[str, list[Handler]], list[Handler], dict[int, Handler]]


class PermanentFailure(Exception):
    """Raise from a handler to dead-letter the event at once, without retries."""


def _once(funcs: list[Handler]) -> list[Handler]:
    """`funcs` without repeats, first occurrence kept; by identity, so any callable will do."""
    seen: set[int] = set()
    unique = []
    for func in funcs:
        if id(func) not in seen:
            seen.add(id(func))
            unique.append(func)
    return unique


class HandlerRegistry:
    """Handlers by dotted type prefix, plus handlers for every event.

    `by_type` and `every_event` are the lists themselves (exported as
    `registrations` and `registrations_global`), so code written for
    dj-stripe's module-level names sees and changes the same registrations.
    """

    def __init__(self) -> None:
        self.by_type: defaultdict[str, list[Handler]] = defaultdict(list)
        self.every_event: list[Handler] = []
        # Functions registered with skip_superseded=True, by identity (the
        # value keeps the function alive, so its id is not reused).
        self.skip_superseded: dict[int, Handler] = {}
        self._lock = threading.Lock()

    def register(
        self, func: Handler, event_types: tuple[str, ...], skip_superseded: bool = False
    ) -> None:
        with self._lock:
            for event_type in event_types:
                funcs = self.by_type[event_type]
                if not any(f is func for f in funcs):
                    funcs.append(func)
            if skip_superseded:
                self.skip_superseded[id(func)] = func

    def register_all(self, func: Handler) -> None:
        with self._lock:
            if not any(f is func for f in self.every_event):
                self.every_event.append(func)

    def handlers_for(self, event_type: str) -> tuple[Handler, ...]:
        """The functions to call for `event_type`, in call order, each once."""
        chain: list[Handler] = list(self.every_event)
        for prefix in type_prefixes(event_type):
            chain.extend(self.by_type.get(prefix, ()))
        return tuple(_once(chain))

    def skips_superseded(self, func: Handler) -> bool:
        """Whether `func` was registered with skip_superseded=True."""
        return self.skip_superseded.get(id(func)) is func

    def registered_types(self) -> list[str]:
        return sorted(event_type for event_type, funcs in self.by_type.items() if funcs)

    def clear(self) -> None:
        """Forget every handler (for tests that register their own)."""
        with self._lock:
            self.by_type.clear()
            self.every_event.clear()
            self.skip_superseded.clear()

    def snapshot(self) -> Snapshot:
        return (
            {k: list(v) for k, v in self.by_type.items()},
            list(self.every_event),
            dict(self.skip_superseded),
        )

    def restore(self, snapshot: Snapshot) -> None:
        with self._lock:
            self.by_type.clear()
            self.by_type.update({k: list(v) for k, v in snapshot[0].items()})
            self.every_event[:] = snapshot[1]
            self.skip_superseded.clear()
            self.skip_superseded.update(snapshot[2])


registry = HandlerRegistry()
registrations = registry.by_type
registrations_global = registry.every_event


def _validate_types(event_types: tuple[Any, ...]) -> tuple[str, ...]:
    if len(event_types) == 1 and callable(event_types[0]):
        raise TypeError(
            'webhooks.handler needs event types: write @webhooks.handler("customer.created"), '
            "or @webhooks.handler_all for every event."
        )
    if not event_types:
        raise TypeError('webhooks.handler() needs at least one event type, e.g. "invoice.paid".')
    for event_type in event_types:
        if not isinstance(event_type, str):
            raise TypeError(f"event types are strings, got {event_type!r}.")
        if event_type in {"*", "all"}:
            raise ValueError(f"{event_type!r} is not an event type; use @webhooks.handler_all.")
        if not EVENT_TYPE_RE.fullmatch(event_type):
            raise ValueError(
                f"{event_type!r} is not a Stripe event type or prefix: use lowercase dotted "
                'segments such as "invoice" or "customer.subscription.updated".'
            )
    return tuple(event_types)


def handler(*event_types: str, skip_superseded: bool = False) -> Callable[[F], F]:
    """Decorator: run the function for events of these types or type prefixes.

    With `skip_superseded=True` the function is not called for an event that
    is superseded (`event.is_superseded`: a newer event about the same object
    already succeeded); the attempt history records the skip. A function
    registered several times skips if any registration asked for it.
    """
    types = _validate_types(event_types)
    if not isinstance(skip_superseded, bool):
        raise TypeError(f"skip_superseded is True or False, got {skip_superseded!r}.")

    def decorator(func: F) -> F:
        if not callable(func):
            raise TypeError(f"webhooks.handler decorates functions, got {func!r}.")
        registry.register(func, types, skip_superseded)
        return func

    return decorator


@overload
def handler_all(func: F) -> F: ...
@overload
def handler_all(func: None = None) -> Callable[[F], F]: ...
def handler_all(func: F | None = None) -> F | Callable[[F], F]:
    """Decorator: run the function for every event. Usable bare or called."""

    def decorator(f: F) -> F:
        if not callable(f):
            raise TypeError(f"webhooks.handler_all decorates functions, got {f!r}.")
        registry.register_all(f)
        return f

    return decorator(func) if func is not None else decorator


def handlers_for(event_type: str) -> tuple[Handler, ...]:
    """The registered functions for `event_type`, in the order they will be called."""
    return registry.handlers_for(event_type)


def skips_superseded(func: Handler) -> bool:
    """Whether `func` was registered with `skip_superseded=True`."""
    return registry.skips_superseded(func)


def call_handlers(event: Any) -> None:
    """Call every handler registered for `event.type`, in order, as `func(event=event)`.

    What the worker does inside its transaction, for code (and tests) written
    against dj-stripe's `call_handlers`. No transaction, retry or attempt
    record of its own, and no `pre_handlers` signal: exceptions propagate.
    """
    for func in handlers_for(event.type):
        func(event=event)
