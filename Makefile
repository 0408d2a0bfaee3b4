# Two commands: `make run` starts the whole stack, `make test` runs the suite.
# Both create .venv and install on first use, and start embedded Postgres and
# Redis unless DATABASE_URL / CELERY_BROKER_URL are set.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run send test test-fast test-rabbitmq soak lint clean screenshot bench

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m devstack run

# From another terminal while `make run` runs: one realistic, signed event of
# TYPE, sent to it and waited for until processed.
TYPE ?= customer.created
send: $(STAMP)
	$(PY) -m devstack attach -- $(PY) manage.py webhooks_send_test $(TYPE) --wait

test: $(STAMP)
	$(PY) -m devstack exec -- $(PY) -m pytest $(PYTEST_ARGS)

# The tests that need no server (no database, broker or process): seconds.
test-fast: $(STAMP)
	DATABASE_URL=postgres://127.0.0.1:1/unused CELERY_BROKER_URL=redis://127.0.0.1:1/0 \
		$(PY) -m pytest -q -m "not server" -p no:cacheprovider $(PYTEST_ARGS)

# The broker-independent tests again with RabbitMQ as the broker (needs one
# running; RABBITMQ_URL overrides the local default).
RABBITMQ_URL ?= amqp://guest:guest@127.0.0.1:5672//
test-rabbitmq: $(STAMP)
	CELERY_BROKER_URL=$(RABBITMQ_URL) $(PY) -m devstack exec -- $(PY) -m pytest -q \
		tests/test_pipeline.py tests/test_worker.py tests/test_commands.py tests/test_admin.py $(PYTEST_ARGS)

# The long soak: 10,000 deliveries while workers are killed (tests/test_soak.py).
soak: $(STAMP)
	SOAK_EVENTS=$${SOAK_EVENTS:-10000} $(PY) -m devstack exec -- $(PY) -m pytest -s -q tests/test_soak.py $(PYTEST_ARGS)

# docs/admin-events.png from a throwaway stack; needs Chromium (apt-get install chromium).
screenshot: $(STAMP)
	$(PY) -m devstack exec -- $(PY) docs/screenshot.py

# Ingest and end to end against framework-free floors, side by side: prints
# the results and rewrites docs/benchmarks.md (bench/run.py). ~15 minutes;
# BENCH_ARGS=--quick for ~3. Installs wrk from Debian's packages if missing.
BENCH_STAMP := $(VENV)/.bench-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
	$(PY) -m bench.run $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	DATABASE_URL=postgres://localhost/lint CELERY_BROKER_URL=redis://localhost/0 $(VENV)/bin/mypy

clean:
	rm -rf .devstack staticfiles .pytest_cache .mypy_cache .ruff_cache
