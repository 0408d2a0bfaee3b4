"""The database cost of one attempt: a regression guard for the worker's hot path.

dispatch.process runs in this process, against the real database, so every
statement is counted: the advisory lock, the claim transaction, the run
transaction (with the handlers' own writes, left out of the count), the unlock.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.testapp.models import SideEffect
from webhook_ingest.models import WebhookEvent
from webhook_ingest.parsing import parse_event
from webhook_worker import dispatch
from webhook_worker.testing import encode_event

from .helpers import make_event

pytestmark = pytest.mark.django_db(transaction=True)

# lock; claim (one autocommit statement); run: BEGIN, the handlers' queries,
# finish (one statement), COMMIT; unlock.
STATEMENTS_PER_SUCCESSFUL_ATTEMPT = 6


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
    # One WAL flush per attempt: the claim (second statement) commits without
    # waiting for it, the run's commit waits for both.
    assert statements[1].rstrip().endswith("SET LOCAL synchronous_commit TO off"), statements[1]
    assert "synchronous_commit" not in " ".join(statements[2:])


def test_redelivered_message_for_a_finished_event_costs_a_read_and_the_lock():
    event_id = stored("invoice.created")
    assert dispatch.process(event_id, trigger="delivery").outcome == "succeeded"
    with CaptureQueriesContext(connection) as queries:
        result = dispatch.process(event_id, trigger="delivery")
    assert result.outcome == "skipped"
    # lock; the claim, which finds nothing to do; the status, to say why; unlock.
    assert len(own_statements(queries)) == 4, own_statements(queries)
