"""Management commands: retry, requeue (the sweeper once), prune and send_test."""

from __future__ import annotations

import io
import re
import subprocess
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from webhook_ingest.models import WebhookEvent
from webhook_worker.models import WebhookAttempt

from . import stack
from .helpers import handler_calls, wait_for_status, wait_until
from .ops import add_attempt, store

COMMANDS = ["webhooks_retry", "webhooks_requeue", "webhooks_prune", "webhooks_send_test"]


def run(*args: str, **options: object) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, **options)
    return out.getvalue()


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_explains_itself_with_help(name, capsys):
    from django.core.management import ManagementUtility

    with pytest.raises(SystemExit) as exit_info:
        ManagementUtility(["manage.py", name, "--help"]).execute()
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: manage.py {name}" in text
    assert len(text.split("\n\n")[1]) > 80  # a real description, not just the usage line


@pytest.mark.django_db
def test_prune_deletes_only_old_events_of_the_chosen_statuses_with_their_attempts():
    old = timedelta(days=31)
    old_ok = [store("customer.created", "succeeded", age=old) for _ in range(5)]
    for event in old_ok:
        add_attempt(event, 1, "succeeded")
    old_failed = store("invoice.payment_failed", "failed", age=old)
    add_attempt(old_failed, 1, "failed")
    old_unfinished = [
        store("invoice.paid", status, age=old) for status in ("pending", "retrying", "processing")
    ]
    recent_ok = store("customer.updated", "succeeded", age=timedelta(days=29))
    add_attempt(recent_ok, 1, "succeeded")

    preview = run("webhooks_prune", older_than=30, dry_run=True)
    assert "Dry run: 5 succeeded event(s)" in preview
    assert WebhookEvent.objects.count() == 10

    output = run("webhooks_prune", older_than=30, batch_size=2)

    assert "Deleted 5 succeeded event(s)" in output
    remaining = set(WebhookEvent.objects.values_list("pk", flat=True))
    assert remaining == {old_failed.id, recent_ok.id, *(e.id for e in old_unfinished)}
    assert set(WebhookAttempt.objects.values_list("event_id", flat=True)) == {
        old_failed.id,
        recent_ok.id,
    }

    output = run("webhooks_prune", older_than=30, status=["failed"])

    assert "Deleted 1 failed event(s)" in output
    assert not WebhookEvent.objects.filter(pk=old_failed.id).exists()
    # Unfinished events are never pruned, whatever their age.
    assert WebhookEvent.objects.filter(pk__in=[e.id for e in old_unfinished]).count() == 3


def test_prune_refuses_unfinished_statuses():
    with pytest.raises(CommandError, match="invalid choice: 'pending'"):
        call_command("webhooks_prune", "--older-than", "1", "--status", "pending")


@pytest.mark.django_db
def test_retry_needs_ids_or_failed():
    with pytest.raises(CommandError, match="Give event ids, or --failed"):
        call_command("webhooks_retry")
    with pytest.raises(CommandError, match="not an ISO date"):
        call_command("webhooks_retry", "--failed", "--since", "last tuesday")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_retry_failed_by_type_and_since_requeues_only_matching_events():
    week = timedelta(days=7)
    recent_customer = store("customer.subscription.deleted", "failed", attempts=4)
    old_customer = store("customer.updated", "failed", attempts=4, age=week * 2)
    recent_invoice = store("invoice.paid", "failed", attempts=4)
    since = (timezone.now() - week).date().isoformat()

    output = run("webhooks_retry", "--failed", "--type", "customer", "--since", since)

    assert f"queued   {recent_customer.id}" in output
    assert "1 event queued for retry" in output
    done = wait_for_status(recent_customer.id, "succeeded")
    assert done.attempts == 5  # attempts keep counting across a manual retry
    assert WebhookAttempt.objects.get(event_id=done.id).trigger == "manual"
    stored = dict(
        WebhookEvent.objects.filter(pk__in=[old_customer.id, recent_invoice.id]).values_list(
            "pk", "status"
        )
    )
    assert stored == {old_customer.id: "failed", recent_invoice.id: "failed"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_manual_retry_of_an_exhausted_event_that_fails_again_is_failed_at_once(handler_log):
    event = store("charge.failed", "failed", attempts=4, behavior="always_fail")

    output = run("webhooks_retry", event.id)

    assert "1 event queued for retry" in output
    failed = wait_until(
        lambda: WebhookEvent.objects.filter(pk=event.id, status="failed", attempts=5).first(),
        message="the manual attempt to fail",
    )
    assert failed.last_error == "ValueError: this handler always fails"
    assert list(
        WebhookAttempt.objects.filter(event_id=event.id).values_list("trigger", "outcome")
    ) == [("manual", "failed")]
    assert [a for _, n, a in handler_calls(handler_log, event.id) if n == "all"] == [5]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_retry_leaves_succeeded_events_alone_unless_asked():
    event = store("customer.created", "succeeded")

    out = io.StringIO()
    # Not what was asked: an error, and manage.py's exit status 1.
    with pytest.raises(CommandError, match="0 events queued for retry"):
        call_command("webhooks_retry", event.id, "evt_does_not_exist", stdout=out)

    assert "succeeded, skipped (use --include-succeeded)" in out.getvalue()
    assert "evt_does_not_exist: unknown id" in out.getvalue()
    assert WebhookEvent.objects.get(pk=event.id).status == "succeeded"

    run("webhooks_retry", event.id, include_succeeded=True)

    wait_until(
        lambda: WebhookAttempt.objects.filter(
            event_id=event.id, trigger="manual", outcome="succeeded"
        ).exists(),
        message="the re-run to succeed",
    )
    assert WebhookEvent.objects.get(pk=event.id).attempts == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker")
def test_requeue_recovers_an_event_whose_worker_died_mid_attempt():
    # Processing, its worker gone (no lock held), its message gone too.
    event = store("customer.created", "processing", attempts=1, age=timedelta(minutes=10))
    add_attempt(event, 1, "running")

    output = run("webhooks_requeue")

    assert "re-enqueued 1 stale event(s)" in output
    done = wait_for_status(event.id, "succeeded")
    assert done.attempts == 2
    assert list(
        WebhookAttempt.objects.filter(event_id=event.id)
        .order_by("number")
        .values_list("trigger", "outcome")
    ) == [("delivery", "lost"), ("sweeper", "succeeded")]
    assert "re-enqueued 0 stale event(s)" in run("webhooks_requeue")


@pytest.mark.django_db(transaction=True)
def test_send_test_against_a_live_server_results_in_a_processed_event(web, worker, stack_env):
    result = stack.manage(
        stack_env,
        "webhooks_send_test",
        "checkout.session.completed",
        "--url",
        f"{web.url}/webhooks/stripe/",
        "--wait",
    )

    assert result.returncode == 0, result.stderr
    event_id = re.search(r"(evt_\w+) -> ", result.stdout).group(1)
    assert '200 {"received": true' in result.stdout
    assert f"{event_id}: succeeded after 1 attempt(s)" in result.stdout
    event = WebhookEvent.objects.get(pk=event_id)
    assert event.status == "succeeded"
    assert event.type == "checkout.session.completed"
    assert event.data["object"]["object"] == "checkout.session"


@pytest.mark.django_db(transaction=True)
def test_send_test_signs_with_the_named_endpoints_secret(web, stack_env):
    result = stack.manage(
        stack_env,
        "webhooks_send_test",
        "invoice.paid",
        "--endpoint",
        "connect",
        "--url",
        f"{web.url}/webhooks/stripe/connect/",
        "--count",
        "2",
    )

    assert result.returncode == 0, result.stderr
    ids = re.findall(r"(evt_\w+) -> ", result.stdout)
    assert len(ids) == 2
    assert set(WebhookEvent.objects.filter(pk__in=ids).values_list("endpoint", flat=True)) == {
        "connect"
    }


def test_send_test_knows_at_least_the_20_most_common_event_types():
    listed = run("webhooks_send_test", list=True).split()
    assert len(listed) >= 20
    for common in (
        "checkout.session.completed",
        "customer.subscription.updated",
        "invoice.paid",
        "invoice.payment_failed",
        "payment_intent.succeeded",
        "charge.refunded",
    ):
        assert common in listed


@pytest.mark.django_db(transaction=True)
def test_retry_of_an_unknown_event_exits_non_zero(stack_env):
    """What a script sees: exit status 1 and the reason, not a silent success."""
    done = subprocess.run(
        [stack.python(), "manage.py", "webhooks_retry", "evt_unknown_to_everyone"],
        cwd=stack.ROOT,
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "1 unknown id" in done.stderr
