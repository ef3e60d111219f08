# dalc — the commands a person wants. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint audit bench fuzz chaos screenshots clean

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

## test: run the whole test suite against this machine's PostgreSQL and RabbitMQ, then the audit if it can
test: $(STAMP)
	$(BIN)/python -m pytest
	$(BIN)/python scripts/audit.py --if-reachable

## lint: check style with ruff, and the layers of app/ with import-linter (contracts in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check app tests benchmarks
	$(BIN)/lint-imports --no-cache

## audit: check the installed dependencies for known vulnerabilities with pip-audit
audit: $(STAMP)
	$(BIN)/python scripts/audit.py

## bench: throughput and latency of the production shape on the real services, what tracing and expiry cost it
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_service.py
	$(BIN)/python benchmarks/bench_tracing.py
	$(BIN)/python benchmarks/bench_purge.py
	$(BIN)/python benchmarks/bench_evaluator.py

## fuzz: a long fuzz run of the expression evaluator
fuzz: $(STAMP)
	$(BIN)/python -m pytest tests/fuzz_evaluator.py -p no:cacheprovider -q

## chaos: the full fault-injection suite against real processes (private PostgreSQL and RabbitMQ)
chaos: $(STAMP)
	$(BIN)/python tests/harness/chaos.py

## screenshots: save docs/page.png and docs/dashboard.png from an embedded dalc under a little load (Chromium)
screenshots: $(STAMP)
	$(BIN)/python scripts/screenshots.py

## clean: remove .venv, caches and the embedded database
clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info dalc.db dalc.db-*

# --- Kubernetes with kind and Helm (docs/deploy.md walks through it) ---------------------------
# Needs docker, kind and kubectl; helm is taken from PATH or fetched by scripts/fetch-helm.sh.
KIND_CLUSTER ?= dalc
IMAGE        ?= dalc
# A new tag per commit, so `make deploy` rolls the pods when the code changed.
IMAGE_TAG    ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
RELEASE      ?= dalc
NAMESPACE    ?= default
CHART        := helm/dalc
# More `helm upgrade` arguments for deploy, e.g. HELM_ARGS="--set tracing.enabled=true".
HELM_ARGS    ?=
# Expanded where it is used, so only the targets that need helm fetch it.
HELM          = $(shell scripts/fetch-helm.sh)

.PHONY: create-cluster build deploy helm-test teardown helm-lint

## create-cluster: create the kind cluster that kind-cluster.yaml describes (localhost:8080 reaches dalc)
create-cluster:
	kind create cluster --name $(KIND_CLUSTER) --config kind-cluster.yaml

## build: build the dalc image and load it into the kind cluster
build:
	docker build --tag $(IMAGE):$(IMAGE_TAG) .
	kind load docker-image $(IMAGE):$(IMAGE_TAG) --name $(KIND_CLUSTER)

## deploy: build, then install or upgrade dalc with its PostgreSQL and RabbitMQ, and wait until ready
deploy: build
	$(HELM) upgrade --install $(RELEASE) $(CHART) --namespace $(NAMESPACE) --create-namespace \
		--values $(CHART)/values-kind.yaml \
		--set image.repository=$(IMAGE) --set-string image.tag=$(IMAGE_TAG) \
		--wait --timeout 10m $(HELM_ARGS)

## helm-test: submit "1 + 1" through the deployed dalc and wait for 2
helm-test:
	$(HELM) test $(RELEASE) --namespace $(NAMESPACE) --logs

## teardown: delete the kind cluster and everything in it
teardown:
	kind delete cluster --name $(KIND_CLUSTER)

## helm-lint: lint the chart strictly with every CI values file, and each subchart on its own
helm-lint:
	$(HELM) lint --strict $(CHART)
	for values in $(CHART)/ci/*-values.yaml $(CHART)/values-kind.yaml; do \
		$(HELM) lint --strict $(CHART) --values $$values || exit 1; \
	done
	for chart in $(CHART)/charts/*/; do $(HELM) lint --strict $$chart || exit 1; done
