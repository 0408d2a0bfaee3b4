"""Coverage-guided fuzzing of the webhook view with atheris; not part of `make test`.

    .venv/bin/pip install atheris
    .venv/bin/python -m devstack exec -- \\
        env DJANGO_SETTINGS_MODULE=tests.settings .venv/bin/python tests/fuzz_view_atheris.py \\
        -atheris_runs=200000

Each input becomes one request to the real view through Django's test client
(endpoint, content type, how it is signed, then the body), checked against
the same contract as tests/test_fuzz.py: a documented status, a row only for
a correctly signed Stripe event, no secret or traceback in the response.
Every request runs in a transaction that is rolled back, against the
throwaway database `devstack exec` starts. Coverage is collected for the
ingest app only.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import atheris

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

with atheris.instrument_imports(include=["webhook_ingest"]):
    import django

    django.setup()
    from webhook_ingest import parsing, signature, views  # noqa: F401

from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import Client  # noqa: E402

from tests.constants import OTHER_SECRET, SECRET  # noqa: E402
from tests.test_fuzz import SECRETS, Delivery, check_delivery  # noqa: E402
from webhook_worker.stripe_events import sign_body  # noqa: E402

ENDPOINTS = [None, None, "connect", "nope"]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain", ""]
client = Client()


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    endpoint = fdp.PickValueInList(ENDPOINTS)
    content_type = fdp.PickValueInList(CONTENT_TYPES)
    how = fdp.ConsumeIntInRange(0, 4)
    body = fdp.ConsumeBytes(fdp.remaining_bytes())
    text = body.decode("utf-8", "replace")
    now = int(time.time())
    secrets = SECRETS.get(endpoint or "default", ())
    signature_header: str | None
    if how == 0 and secrets:
        signature_header = sign_body(text, secrets[0], now)
    elif how == 1:
        signature_header = sign_body(text, OTHER_SECRET, now)
    elif how == 2:
        signature_header = sign_body(text, SECRET, now - 3600)
    elif how == 3:
        signature_header = text[:200]
    else:
        signature_header = None
    delivery = Delivery(body, signature_header, content_type, endpoint, how == 0 and bool(secrets))
    with transaction.atomic():
        check_delivery(client, delivery)
        transaction.set_rollback(True)


def main() -> None:
    call_command("migrate", verbosity=0)
    logging.disable(logging.WARNING)  # one "rejected webhook" line per input otherwise
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
