# Targets a newcomer can guess: run, test, lint, bench.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
PORT ?= 8000

.PHONY: install install-test run test coverage test-faults screenshots lint format bench bench-quick bench-10m clean

$(BIN)/auditlog: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

$(VENV)/.test-installed: $(BIN)/auditlog
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/auditlog

install-test: $(VENV)/.test-installed

## Migrate and start web, worker and beat from the Procfile (SQLite and a filesystem broker by default).
run: install
	$(BIN)/auditlog db upgrade
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start --port $(PORT) web worker beat

## The whole suite: unit, integration (SQLite and PostgreSQL, a real Celery worker on Redis), e2e.
test: install-test
	$(BIN)/pytest -q $(PYTEST_ARGS)

## The whole suite with branch coverage (about a quarter slower: the tracer is in Python).
coverage: install-test
	$(BIN)/pytest --cov --cov-branch --cov-report=term:skip-covered -q $(PYTEST_ARGS)

## Only the fault-injection suite (kill -9, broker and database restarts, crashes).
test-faults: install-test
	$(BIN)/pytest -m faults -q -s $(PYTEST_ARGS)

## Console screenshots: the browser tests named *screenshot* save PNGs into docs/screenshots.
screenshots: install-test
	SCREENSHOTS_DIR=docs/screenshots $(BIN)/pytest -q -m browser -k screenshot -p no:cacheprovider

## Benchmarks against PostgreSQL and Redis (DATABASE_URL / REDIS_URL or the local defaults).
bench: install-test
	$(BIN)/python -m bench --write bench/RESULTS.md

## The same code at a tenth of the scale (under a minute).
bench-quick: install-test
	$(BIN)/python -m bench --scale 0.1

## The read figures over 10,000,000 events (bulk-loaded in a few minutes), in their own report.
bench-10m: install-test
	$(BIN)/python -m bench --only reads --events 10000000 --write bench/RESULTS-10m.md

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .coverage
