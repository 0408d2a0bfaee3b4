"""Register functions to run for Stripe event types.

    from webhook_worker import webhooks

    @webhooks.handler("customer.subscription.trial_will_end")   # exact type
    def remind(event, **kwargs): ...

    @webhooks.handler("customer")        # every customer.* type, at any depth
    def sync_customer(event, **kwargs): ...

    @webhooks.handler_all                # every event
    def audit(event, **kwargs): ...

Source-compatible with dj-stripe's handler API. Types match by dotted
segments: "customer" and "customer.subscription" match
"customer.subscription.created", "cust" matches nothing. For one event,
`handler_all` functions run first, then the handlers of each prefix from the
shortest to the full type, each group in registration order; a function
registered for several matching types runs once.

Every installed app's `webhooks.py` is imported at startup (see apps.py),
the way the admin finds `admin.py`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

__all__ = [
    "PermanentFailure",
    "handler",
    "handler_all",
    "handlers_for",
    "registry",
]

Handler = Callable[..., Any]
F = TypeVar("F", bound=Handler)

_TYPE_RE = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")


class PermanentFailure(Exception):
    """Raise from a handler to dead-letter the event at once, without retries."""


class HandlerRegistry:
    """Handlers by dotted type prefix, plus handlers for every event."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, list[Handler]] = {}
        self._all: list[Handler] = []
        self._cache: dict[str, tuple[Handler, ...]] = {}
        self._lock = threading.Lock()

    def register(self, func: Handler, event_types: tuple[str, ...]) -> None:
        with self._lock:
            for event_type in event_types:
                funcs = self._by_prefix.setdefault(event_type, [])
                if func not in funcs:
                    funcs.append(func)
            self._cache.clear()

    def register_all(self, func: Handler) -> None:
        with self._lock:
            if func not in self._all:
                self._all.append(func)
            self._cache.clear()

    def handlers_for(self, event_type: str) -> tuple[Handler, ...]:
        """The functions to call for `event_type`, in call order, each once."""
        cached = self._cache.get(event_type)
        if cached is not None:
            return cached
        chain: list[Handler] = list(self._all)
        parts = event_type.split(".")
        for depth in range(1, len(parts) + 1):
            chain.extend(self._by_prefix.get(".".join(parts[:depth]), ()))
        ordered = tuple(dict.fromkeys(chain))  # first occurrence wins, order kept
        self._cache[event_type] = ordered
        return ordered

    def registered_types(self) -> list[str]:
        return sorted(self._by_prefix)

    def clear(self) -> None:
        """Forget every handler (for tests that register their own)."""
        with self._lock:
            self._by_prefix.clear()
            self._all.clear()
            self._cache.clear()

    def snapshot(self) -> tuple[dict[str, list[Handler]], list[Handler]]:
        return {k: list(v) for k, v in self._by_prefix.items()}, list(self._all)

    def restore(self, snapshot: tuple[dict[str, list[Handler]], list[Handler]]) -> None:
        with self._lock:
            self._by_prefix = {k: list(v) for k, v in snapshot[0].items()}
            self._all = list(snapshot[1])
            self._cache.clear()


registry = HandlerRegistry()


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
        if not _TYPE_RE.fullmatch(event_type):
            raise ValueError(
                f"{event_type!r} is not a Stripe event type or prefix: use lowercase dotted "
                'segments such as "invoice" or "customer.subscription.updated".'
            )
    return tuple(event_types)


def handler(*event_types: str) -> Callable[[F], F]:
    """Decorator: run the function for events of these types or type prefixes."""
    types = _validate_types(event_types)

    def decorator(func: F) -> F:
        if not callable(func):
            raise TypeError(f"webhooks.handler decorates functions, got {func!r}.")
        registry.register(func, types)
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
