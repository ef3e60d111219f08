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
