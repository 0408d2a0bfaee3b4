# Two commands: `make run` starts the whole stack, `make test` runs the suite.
# Both create .venv and install on first use, and start embedded Postgres and
# Redis unless DATABASE_URL / CELERY_BROKER_URL are set.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run send test test-fast test-compat test-rabbitmq soak lint clean screenshot bench cluster cluster-tools

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

test: $(STAMP) cluster-tools
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

# The whole suite again on the newest Python and Django supported (CI runs it
# after `make test`), in its own .venv-compat. The interpreter: COMPAT_PYTHON
# if given, else pyenv's newest 3.13, python3.13 on PATH, pyenv's 3.12,
# python3.12 on PATH; with none of them, the job says so and is skipped.
PYENV_ROOT ?= /root/.pyenv
# The newest Django with the oldest Celery and kombu supported: the main job has
# the newest Celery with the oldest Django.
COMPAT_DJANGO := Django>=6.1,<6.2
COMPAT_CELERY := celery[redis]>=5.4,<5.5 kombu>=5.4,<5.5
COMPAT_VENV := .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
COMPAT_STAMP := $(COMPAT_VENV)/.installed
# Runs, is 3.12 or 3.13 and can make a virtualenv (Debian splits ensurepip off).
COMPAT_PROBE := import sys, venv, ensurepip; sys.exit(sys.version_info[:2] not in ((3, 12), (3, 13)))

test-compat:
	@py='$(COMPAT_PYTHON)'; \
	if [ -n "$$py" ]; then \
		"$$py" -c '$(COMPAT_PROBE)' || { echo "test-compat: COMPAT_PYTHON=$$py is not a working Python 3.12 or 3.13" >&2; exit 1; }; \
	else \
		for c in $$(ls -d $(PYENV_ROOT)/versions/3.13.*/bin/python 2>/dev/null | sort -rV) python3.13 \
		         $$(ls -d $(PYENV_ROOT)/versions/3.12.*/bin/python 2>/dev/null | sort -rV) python3.12; do \
			if "$$c" -c '$(COMPAT_PROBE)' >/dev/null 2>&1; then py=$$c; break; fi; \
		done; \
	fi; \
	if [ -z "$$py" ]; then \
		echo "test-compat: skipped: no Python 3.13 or 3.12 with venv found ($(PYENV_ROOT)/versions/3.1[23].*, python3.13 or python3.12 on PATH; COMPAT_PYTHON=... to name one)"; \
		exit 0; \
	fi; \
	py=$$("$$py" -c 'import sys; print(sys.executable)'); \
	if [ "$$(cat $(COMPAT_VENV)/.interpreter 2>/dev/null)" != "$$py" ]; then rm -rf $(COMPAT_VENV); fi; \
	echo "test-compat: $$("$$py" -V) ($$py) with $(COMPAT_DJANGO) $(COMPAT_CELERY)"; \
	$(MAKE) --no-print-directory COMPAT_PYTHON="$$py" $(COMPAT_STAMP) && \
	$(COMPAT_PY) -m devstack exec -- $(COMPAT_PY) -m pytest $(PYTEST_ARGS)

$(COMPAT_STAMP): pyproject.toml
	test -x $(COMPAT_PY) || $(COMPAT_PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install --quiet --upgrade pip
	$(COMPAT_PY) -m pip install --quiet -e '.[dev]' '$(COMPAT_DJANGO)' $(foreach req,$(COMPAT_CELERY),'$(req)')
	echo '$(COMPAT_PYTHON)' > $(COMPAT_VENV)/.interpreter
	touch $(COMPAT_STAMP)

# The long soak: 10,000 deliveries while workers are killed (tests/test_soak.py).
soak: $(STAMP)
	SOAK_EVENTS=$${SOAK_EVENTS:-10000} $(PY) -m devstack exec -- $(PY) -m pytest -s -q tests/test_soak.py $(PYTEST_ARGS)

# docs/admin-events.png from a throwaway stack; needs Chromium (apt-get install chromium).
screenshot: $(STAMP)
	$(PY) -m devstack exec -- $(PY) docs/screenshot.py

# Ingest and end to end against framework-free floors, side by side, then
# what each ordering mode costs the worker, then what each request costs as
# the events table grows to 2,000,000 events: prints the results and rewrites
# docs/benchmarks.md (bench/run.py, bench/ordering.py, bench/growth.py).
# ~40 minutes; BENCH_ARGS=--quick for ~8. Installs wrk from Debian's packages if missing.
BENCH_STAMP := $(VENV)/.bench-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
	$(PY) -m bench.run $(BENCH_ARGS)
	$(PY) -m bench.ordering $(BENCH_ARGS)
	$(PY) -m bench.growth $(BENCH_ARGS)

# Several hosts on one machine (network namespaces; needs root): two web
# hosts behind haproxy, three worker hosts each with beat's schedule, a
# database host and a broker host; 20,000 deliveries while hosts fail
# (devstack/cluster.py, devstack/scenario.py). Prints the result and rewrites
# it in docs/scaling.md; ~10 minutes. CLUSTER_ARGS="--events 2000" for less.
cluster: $(STAMP) cluster-tools
	$(PY) -m devstack.cluster --write-docs $(CLUSTER_ARGS)

# haproxy from Debian's packages for the cluster, where we may install it
# (tests/test_cluster.py says why it skips where it is missing).
cluster-tools:
	@command -v haproxy >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; } || \
		echo "cluster-tools: could not install haproxy; the cluster test will be skipped"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	DATABASE_URL=postgres://localhost/lint CELERY_BROKER_URL=redis://localhost/0 $(VENV)/bin/mypy

clean:
	rm -rf .devstack staticfiles .pytest_cache .mypy_cache .ruff_cache
