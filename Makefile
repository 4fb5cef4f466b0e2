# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test fuzz lint typecheck unit bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/copool serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest --hypothesis-profile=ci

# Long random runs of every property and state-machine test (not part of `make test`).
fuzz: $(VENV)/.installed-dev
	$(BIN)/pytest --hypothesis-profile=fuzz --hypothesis-show-statistics -m "not slow" \
		tests/unit tests/integration/payments/test_ledger_model.py

bench: $(VENV)/.installed-dev
	@command -v wrk >/dev/null || { echo "make bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench.ledger
	$(BIN)/python -m bench.http
	$(BIN)/python -m bench.pool_join
	$(BIN)/python -m bench.matching
	$(BIN)/python -m bench.rides_http

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache copool.db*
