# Every target creates .venv and installs what it needs, so a fresh clone
# needs nothing but python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest adversarial bench bench-full clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# submit exits 1 here by design: examples/tasks.jsonl has invalid lines to show
# how they are reported.  A usage/config error (2) or an interruption (130)
# still fails the target, and so does the metrics summary.  The summary is of
# this run only (--since its start): the database keeps earlier runs, which
# would make the two tables disagree from the second run on.
run: $(STAMP)
	@start=$$($(PY) -c 'import datetime; print(datetime.datetime.now(datetime.timezone.utc).isoformat())'); \
	echo "$(PY) -m runner submit examples/tasks.jsonl --config config/local.yaml --out .runner/results.jsonl"; \
	$(PY) -m runner submit examples/tasks.jsonl --config config/local.yaml --out .runner/results.jsonl; \
	status=$$?; test $$status -le 1 || exit $$status; \
	echo; echo "$(PY) -m runner metrics summary --config config/local.yaml --since $$start"; \
	$(PY) -m runner metrics summary --config config/local.yaml --since $$start

lint: $(STAMP)
	$(PY) -m ruff check runner workers tests benchmarks
	$(PY) -m ruff format --check runner workers tests benchmarks
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(PY) -m mypy

pytest: $(STAMP)
	$(PY) -m pytest -q

test: lint typecheck pytest

# The worker under attack (slow clients, hostile bodies, SIGKILL), printing the
# figures docs/worker.md quotes.  make test runs the same tests, quietly.
adversarial: $(STAMP)
	$(PY) -m pytest -q -s tests/test_worker_adversarial.py

# The benchmarks also need LiteLLM (the `compare` extra) for the side-by-side case.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,compare]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks

bench-full: $(BENCH_STAMP)
	$(PY) -m benchmarks --full

clean:
	rm -rf $(VENV) .runner .mypy_cache .pytest_cache .ruff_cache
