# dalc — the commands a person wants. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint bench fuzz chaos clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## install: create .venv with dalc and its test tools
install: $(STAMP)

## run: start dalc (embedded SQLite + in-process broker, or the real services when DALC_BROKER_URL is set)
run: $(STAMP)
	$(BIN)/dalc run

## test: run the whole test suite against this machine's PostgreSQL and RabbitMQ
test: $(STAMP)
	$(BIN)/python -m pytest

## lint: check style with ruff
lint: $(STAMP)
	$(BIN)/ruff check app tests benchmarks

## bench: measure throughput and latency of the production shape on the real services
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_evaluator.py

## fuzz: a long fuzz run of the expression evaluator
fuzz: $(STAMP)
	$(BIN)/python -m pytest tests/fuzz_evaluator.py -p no:cacheprovider -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info dalc.db dalc.db-*
