"""The handler registry: matching, call order, validation, discovery."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook_worker import webhooks
from webhook_worker.webhooks import HandlerRegistry, registry


@pytest.fixture
def empty_registry() -> Iterator[None]:
    saved = registry.snapshot()
    registry.clear()
    yield
    registry.restore(saved)


def names(event_type: str) -> list[str]:
    return [f.__name__ for f in webhooks.handlers_for(event_type)]


@pytest.mark.usefixtures("empty_registry")
class TestMatching:
    def test_prefix_matches_every_type_below_it_at_any_depth(self):
        @webhooks.handler("customer")
        def on_customer(event, **kwargs): ...

        assert names("customer.created") == ["on_customer"]
        assert names("customer.subscription.trial_will_end") == ["on_customer"]
        assert names("customer") == ["on_customer"]

    def test_partial_segment_matches_nothing(self):
        @webhooks.handler("cust")
        def on_cust(event, **kwargs): ...

        @webhooks.handler("customer.sub")
        def on_sub(event, **kwargs): ...

        assert names("customer.created") == []
        assert names("customer.subscription.created") == []

    def test_exact_type_does_not_match_siblings_or_parents(self):
        @webhooks.handler("invoice.paid")
        def on_paid(event, **kwargs): ...

        assert names("invoice.paid") == ["on_paid"]
        assert names("invoice.payment_failed") == []
        assert names("invoice") == []

    def test_several_types_at_once(self):
        @webhooks.handler("plan", "product")
        def catalog(event, **kwargs): ...

        assert names("plan.created") == ["catalog"]
        assert names("product.updated") == ["catalog"]
        assert names("price.created") == []

    def test_handler_all_runs_for_every_event_bare_or_called(self):
        @webhooks.handler_all
        def bare(event, **kwargs): ...

        @webhooks.handler_all()
        def called(event, **kwargs): ...

        assert names("anything.at.all") == ["bare", "called"]
        assert names("charge.dispute.created") == ["bare", "called"]

    def test_call_order_all_first_then_shortest_prefix_then_registration_order(self):
        @webhooks.handler("customer.subscription.created")
        def exact(event, **kwargs): ...

        @webhooks.handler("customer.subscription")
        def middle(event, **kwargs): ...

        @webhooks.handler("customer")
        def first_short(event, **kwargs): ...

        @webhooks.handler_all
        def everything(event, **kwargs): ...

        @webhooks.handler("customer")
        def second_short(event, **kwargs): ...

        assert names("customer.subscription.created") == [
            "everything",
            "first_short",
            "second_short",
            "middle",
            "exact",
        ]

    def test_function_registered_for_several_matching_types_runs_once(self):
        @webhooks.handler_all
        @webhooks.handler("customer", "customer.created")
        @webhooks.handler("customer.created")
        def once(event, **kwargs): ...

        assert names("customer.created") == ["once"]

    def test_decorator_returns_the_function_unchanged(self):
        def f(event, **kwargs):
            return "called"

        assert webhooks.handler("invoice")(f) is f
        assert webhooks.handler_all(f) is f

    def test_thin_types_match_by_segments_and_a_bracket_is_a_level_below_its_segment(self):
        @webhooks.handler("v2.core.account")
        def account(event, **kwargs): ...

        @webhooks.handler("v2.core.account[requirements]")
        def requirements(event, **kwargs): ...

        @webhooks.handler("v1.customer")
        def thin_customer(event, **kwargs): ...

        assert names("v2.core.account.updated") == ["account"]
        assert names("v2.core.account[requirements].updated") == ["account", "requirements"]
        assert names("v2.core.account[configuration.merchant].updated") == ["account"]
        assert names("v2.core.account_person.created") == []
        assert names("v1.customer.updated") == ["thin_customer"]
        assert names("customer.updated") == []

    def test_skip_superseded_is_remembered_per_function(self):
        @webhooks.handler("customer.updated", skip_superseded=True)
        def guarded(event, **kwargs): ...

        @webhooks.handler("customer")
        def plain(event, **kwargs): ...

        @webhooks.handler("customer.updated")
        @webhooks.handler("customer", skip_superseded=True)
        def both(event, **kwargs): ...

        assert webhooks.skips_superseded(guarded) is True
        assert webhooks.skips_superseded(plain) is False
        assert webhooks.skips_superseded(both) is True  # any registration that asked

    def test_registration_after_a_lookup_is_seen(self):
        assert names("invoice.paid") == []

        @webhooks.handler("invoice")
        def late(event, **kwargs): ...

        assert names("invoice.paid") == ["late"]


@pytest.mark.usefixtures("empty_registry")
class TestValidation:
    def test_bare_handler_decorator_fails_loudly(self):
        with pytest.raises(TypeError, match="needs event types"):

            @webhooks.handler  # type: ignore[arg-type]
            def oops(event, **kwargs): ...

    def test_no_types(self):
        with pytest.raises(TypeError, match="at least one event type"):
            webhooks.handler()

    @pytest.mark.parametrize(
        "bad",
        [
            "",
            "Customer",
            "customer.",
            ".created",
            "customer..x",
            "customer created",
            "invoice.*",
            "charge/x",
        ],
    )
    def test_malformed_types(self, bad):
        with pytest.raises(ValueError, match="not a Stripe event type"):
            webhooks.handler(bad)

    @pytest.mark.parametrize("wildcard", ["*", "all"])
    def test_wildcards_point_to_handler_all(self, wildcard):
        with pytest.raises(ValueError, match="handler_all"):
            webhooks.handler(wildcard)

    def test_skip_superseded_must_be_a_boolean(self):
        with pytest.raises(TypeError, match="skip_superseded"):
            webhooks.handler("invoice", skip_superseded="yes")  # type: ignore[arg-type]

    def test_non_string_type(self):
        with pytest.raises(TypeError, match="strings"):
            webhooks.handler("invoice", 3)  # type: ignore[arg-type]

    def test_decorating_a_non_function(self):
        with pytest.raises(TypeError, match="decorates functions"):
            webhooks.handler("invoice")("not a function")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="decorates functions"):
            webhooks.handler_all("not a function")  # type: ignore[arg-type]

    def test_failed_registration_registers_nothing(self):
        with pytest.raises(ValueError):
            webhooks.handler("invoice", "BAD")
        assert registry.registered_types() == []


def test_every_installed_apps_webhooks_module_is_discovered():
    """Autodiscovery at startup found the demo app's and the test app's handlers."""
    from demo.webhooks import log_event
    from tests.testapp.webhooks import customer_prefix, record_every_event

    found = webhooks.handlers_for("customer.created")
    assert log_event in found
    assert record_every_event in found
    assert customer_prefix in found


def test_permanent_failure_is_an_exception_handlers_can_raise():
    assert issubclass(webhooks.PermanentFailure, Exception)


# --- properties of the prefix matcher --------------------------------------

segment = st.from_regex(r"[a-z0-9_]{1,5}", fullmatch=True)
# Few distinct segments, so generated types and prefixes often share a path.
shared_segment = st.sampled_from(["customer", "subscription", "created", "a", "a_b", "x1"])
event_type = st.lists(st.one_of(shared_segment, segment), min_size=1, max_size=4).map(".".join)


def reference_handlers(registrations: list[tuple[int, str | None]], event_type: str) -> list[int]:
    """The documented order, written the slow and obvious way: handler_all
    functions first, then each prefix from shortest to the full type, each in
    registration order; a function only at its first place."""
    parts = event_type.split(".")
    groups = [None] + [".".join(parts[:depth]) for depth in range(1, len(parts) + 1)]
    order: list[int] = []
    for group in groups:
        for func, prefix in registrations:
            if prefix == group and func not in order:
                order.append(func)
    return order


@settings(max_examples=300, deadline=None)
@given(prefix=event_type, target=event_type)
def test_property_prefix_matches_by_whole_dotted_segments(prefix, target):
    registry = HandlerRegistry()

    def handler(event, **kwargs): ...

    registry.register(handler, (prefix,))
    matches = handler in registry.handlers_for(target)
    assert matches == (target == prefix or target.startswith(prefix + "."))


@settings(max_examples=300, deadline=None)
@given(prefix=event_type, extra=segment, target=event_type)
def test_property_a_partial_segment_never_matches(prefix, extra, target):
    registry = HandlerRegistry()

    def handler(event, **kwargs): ...

    registry.register(handler, (prefix + extra,))  # e.g. "cust" + "omer" is not "cust"
    if handler in registry.handlers_for(prefix + "." + target):
        assert (prefix + "." + target).startswith(prefix + extra + ".")


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 5), st.one_of(st.none(), event_type), st.booleans()),
        max_size=25,
    ),
    targets=st.lists(event_type, min_size=1, max_size=5),
)
def test_property_call_order_matches_the_documented_rule(steps, targets):
    """Any sequence of registrations (and lookups between them, which fill the
    cache) gives exactly the documented order, each function once."""
    registry = HandlerRegistry()
    funcs = [lambda event, **kwargs: None for _ in range(6)]
    done: list[tuple[int, str | None]] = []
    for func, prefix, look_up in steps:
        if prefix is None:
            registry.register_all(funcs[func])
        else:
            registry.register(funcs[func], (prefix,))
        done.append((func, prefix))
        if look_up:
            registry.handlers_for(targets[0])
    for target in targets:
        got = [funcs.index(f) for f in registry.handlers_for(target)]
        assert got == reference_handlers(done, target)
        assert len(got) == len(set(got))


@dataclass
class CallableRecorder:
    """A callable dataclass instance: equal-by-value, so not hashable."""

    label: str
    calls: list[str] = field(default_factory=list)

    def __call__(self, event: Any, **kwargs: Any) -> None:
        self.calls.append(event.id)


@pytest.mark.usefixtures("empty_registry")
class TestAnyCallable:
    def test_an_unhashable_callable_is_a_handler_and_runs_once(self):
        recorder = CallableRecorder("audit")
        webhooks.handler("customer", "customer.created")(recorder)
        webhooks.handler_all(recorder)
        webhooks.call_handlers(SimpleNamespace(id="evt_1", type="customer.created"))
        assert recorder.calls == ["evt_1"]

    def test_two_equal_callables_are_two_handlers(self):
        first, second = CallableRecorder("same"), CallableRecorder("same")
        assert first == second
        webhooks.handler("invoice")(first)
        webhooks.handler("invoice")(second)
        assert webhooks.handlers_for("invoice.paid") == (first, second)


@pytest.mark.usefixtures("empty_registry")
class TestDjStripeNames:
    """dj-stripe 2.8's `djstripe.webhooks` names, with the same shapes."""

    def test_registrations_hold_what_the_decorators_registered(self):
        @webhooks.handler("customer.created", "invoice")
        def on_both(event, **kwargs): ...

        @webhooks.handler_all
        def on_all(event, **kwargs): ...

        assert webhooks.registrations["customer.created"] == [on_both]
        assert webhooks.registrations["invoice"] == [on_both]
        assert webhooks.registrations_global == [on_all]
        assert webhooks.registrations["plan"] == []  # a defaultdict(list), as in dj-stripe

    def test_code_that_appends_to_registrations_is_honoured(self):
        calls: list[str] = []
        webhooks.registrations["invoice.paid"].append(lambda event: calls.append("exact"))
        webhooks.registrations["invoice"].append(lambda event: calls.append("prefix"))
        webhooks.registrations_global.append(lambda event: calls.append("global"))
        webhooks.call_handlers(SimpleNamespace(id="evt_2", type="invoice.paid"))
        assert calls == ["global", "prefix", "exact"]

    def test_call_handlers_lets_exceptions_through(self):
        @webhooks.handler("charge")
        def broken(event, **kwargs):
            raise LookupError("no such charge")

        with pytest.raises(LookupError):
            webhooks.call_handlers(SimpleNamespace(id="evt_3", type="charge.failed"))
