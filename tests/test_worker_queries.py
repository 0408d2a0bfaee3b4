"""The database cost of one attempt: a regression guard for the worker's hot path.

dispatch.process runs in this process, against the real database, so every
statement is counted: the claim (which takes the advisory lock), the run
transaction (with the handlers' own writes, left out of the count, and the
finish, which releases the lock).
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from tests.testapp.models import SideEffect
from webhook_ingest.models import WebhookEvent
from webhook_ingest.parsing import parse_event
from webhook_worker import dispatch
from webhook_worker.stripe_events import encode_event

from .helpers import make_event, prepared_statements

pytestmark = pytest.mark.django_db(transaction=True)

# claim and lock (one autocommit statement); run: BEGIN, the handlers'
# queries, finish and unlock (one statement), COMMIT.
STATEMENTS_PER_SUCCESSFUL_ATTEMPT = 4


def stored(event_type: str) -> str:
    body = encode_event(make_event(event_type))
    parsed = parse_event(body)
    assert WebhookEvent.objects.record(parsed, body, "default")
    return parsed.id


def own_statements(queries: CaptureQueriesContext) -> list[str]:
    handler_table = SideEffect._meta.db_table
    return [q["sql"] for q in queries.captured_queries if handler_table not in q["sql"]]


def test_successful_attempt_costs_a_fixed_number_of_statements():
    event_id = stored("invoice.created")  # only the handler_all handler matches
    with CaptureQueriesContext(connection) as queries:
        result = dispatch.process(event_id, trigger="delivery")
    assert result.outcome == "succeeded"
    statements = own_statements(queries)
    assert len(statements) == STATEMENTS_PER_SUCCESSFUL_ATTEMPT, statements
    assert WebhookEvent.objects.get(pk=event_id).status == "succeeded"
    # One WAL flush per attempt: the claim (first statement) commits without
    # waiting for it, the run's commit waits for both; the setting lasts only
    # until the claim's commit, so the handlers' transaction is durable.
    assert "set_config('synchronous_commit', 'off', true)" in statements[0], statements[0]
    assert "synchronous_commit" not in " ".join(statements[1:])
    assert session_setting("synchronous_commit") == "on"
    # The lock is taken and released, in those two statements.
    assert "pg_try_advisory_lock" in statements[0]
    assert "pg_advisory_unlock" in statements[2]
    assert not advisory_locks_held()


def test_the_claim_and_finish_are_planned_once_per_connection():
    """Postgres parses and plans the worker's statements once, not for every attempt."""
    for _ in range(6):
        assert (
            dispatch.process(stored("invoice.created"), trigger="delivery").outcome == "succeeded"
        )
    prepared = prepared_statements()
    assert any("pg_try_advisory_lock" in sql for sql in prepared), prepared
    assert any("pg_advisory_unlock" in sql for sql in prepared), prepared


def session_setting(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s)", [name])
        return str(cursor.fetchone()[0])


def test_attempt_inside_a_callers_transaction_leaves_its_commit_durable():
    """Eager mode, or a retry run inside a request: the caller's commit still waits for the WAL."""
    event_id = stored("invoice.created")
    with transaction.atomic():
        assert dispatch.process(event_id, trigger="manual").outcome == "succeeded"
        assert session_setting("synchronous_commit") == "on"
    assert WebhookEvent.objects.get(pk=event_id).status == "succeeded"


def advisory_locks_held() -> list[tuple[int, int]]:
    """The advisory locks this session holds (our namespace is the first key)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT classid::bigint, objid::bigint FROM pg_locks "
            "WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        return cursor.fetchall()


def test_redelivered_message_for_a_finished_event_costs_a_read_and_the_lock():
    event_id = stored("invoice.created")
    assert dispatch.process(event_id, trigger="delivery").outcome == "succeeded"
    with CaptureQueriesContext(connection) as queries:
        result = dispatch.process(event_id, trigger="delivery")
    assert result.outcome == "skipped"
    # the claim, which takes the lock and finds nothing to do; the status,
    # to say why; the unlock.
    assert len(own_statements(queries)) == 3, own_statements(queries)
    assert not advisory_locks_held()
