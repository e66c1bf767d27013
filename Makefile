# Data Mash: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
POLICIES ?= 100000
SEED     ?= 42

export DATA_MASH_HOME ?= $(CURDIR)/.data-mash
export DAGSTER_HOME   ?= $(DATA_MASH_HOME)/dagster_home

.PHONY: setup demo test test-fast ui bench bench-e2e clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Generate a sample book and take it in through Dagster, on the embedded PostgreSQL.
demo: $(STAMP)
	$(BIN)/data-mash demo --policies $(POLICIES) --seed $(SEED)

## The whole test suite against a real PostgreSQL (DATA_MASH_TEST_DATABASE_URL, else embedded).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

## The fast tier (under a minute): pure logic, parsers and codecs, assets and sensors in process.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q tests/unit tests/assets

## The Dagster UI (webserver, daemon, code server) on the instance the CLI uses; started once, kept running.
ui: $(STAMP)
	$(BIN)/data-mash services start

bench: $(STAMP)
	$(BIN)/python bench/intake_bench.py --policies 1000000

## The whole user path through the CLI and Dagster, beside a raw COPY and the anchor pipeline (docs/benchmarks.md).
## A million policies unless POLICIES is given on the command line: make bench-e2e POLICIES=100000
bench-e2e: POLICIES = 1000000
bench-e2e: $(STAMP)
	$(BIN)/python bench/e2e_bench.py --policies $(POLICIES) --seed $(SEED)

clean:
	rm -rf $(VENV) .data-mash .pytest_cache
