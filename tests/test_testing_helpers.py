"""webhook_worker.testing, as a project's own test suite uses it: a plain Django
TestCase and pytest-django tests, no broker and no worker involved."""

from __future__ import annotations

import pytest
from django.test import TestCase

from tests.testapp.models import SideEffect
from webhook_ingest.models import WebhookEvent
from webhook_worker.models import WebhookAttempt
from webhook_worker.testing import build_event, deliver, run_handlers

from .helpers import make_event, post_signed


class DeliverInATestCase(TestCase):
    """Inside TestCase's transaction, where on_commit callbacks never run."""

    def test_deliver_posts_through_the_view_and_runs_the_handlers(self):
        event = deliver("invoice.paid")
        self.assertEqual(event.status, "succeeded")
        self.assertEqual(event.type, "invoice.paid")
        handlers = sorted(SideEffect.objects.filter(event_id=event.id).values_list("handler"))
        self.assertEqual(handlers, [("all",), ("exact",)])
        attempt = WebhookAttempt.objects.get(event_id=event.id)
        self.assertEqual((attempt.outcome, attempt.trigger), ("succeeded", "delivery"))

    def test_a_built_event_on_a_named_endpoint(self):
        built = build_event("customer.created", account="acct_1Connect")
        event = deliver(built, endpoint="connect")
        self.assertEqual(
            (event.id, event.endpoint, event.account), (built["id"], "connect", "acct_1Connect")
        )

    def test_a_failing_handler_raises_in_the_test_and_its_attempt_is_recorded(self):
        event = make_event(behavior="always_fail")
        with self.assertRaisesMessage(ValueError, "this handler always fails"):
            deliver(event)
        stored = WebhookEvent.objects.get(pk=event["id"])
        self.assertEqual(stored.status, "retrying")
        self.assertEqual(WebhookAttempt.objects.get(event_id=event["id"]).outcome, "retry")
        self.assertFalse(SideEffect.objects.filter(event_id=event["id"]).exists())

    def test_run_handlers_without_http(self):
        event = run_handlers(
            make_event("customer.created", behavior="permanent"), raise_errors=False
        )
        self.assertEqual(event.status, "failed")

    def test_a_plain_post_stores_the_event_and_runs_no_handler(self):
        """What the README warns about: the view's enqueue waits for a commit that,
        inside a TestCase, never comes."""
        event = make_event("invoice.paid")
        self.assertEqual(post_signed(self.client, event).status_code, 200)
        self.assertEqual(WebhookEvent.objects.get(pk=event["id"]).status, "pending")
        self.assertFalse(SideEffect.objects.filter(event_id=event["id"]).exists())


@pytest.mark.django_db
def test_deliver_in_a_pytest_django_test():
    event = deliver("customer.subscription.created")
    assert event.status == "succeeded"
    assert SideEffect.objects.filter(event_id=event.id, handler="exact").exists()


@pytest.mark.django_db(transaction=True)
def test_deliver_in_a_transactional_pytest_django_test():
    event = deliver("customer.created")
    assert WebhookEvent.objects.get(pk=event.id).status == "succeeded"
    assert SideEffect.objects.filter(event_id=event.id).count() == 1
