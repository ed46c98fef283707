# Every target installs what it needs first: `make train` and `make test` work on a fresh clone.
# `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
INSTALLED := $(VENV)/.installed
AIRFLOW_VENV := .venv-airflow
AIRFLOW_INSTALLED := $(AIRFLOW_VENV)/.installed
MLFLOW_PORT ?= 5000
# The serving image. DOCKER may be any engine with docker's build/run syntax, e.g.
# DOCKER=../shared/container/container.sh (podman) where no Docker engine runs.
IMAGE ?= fraud-detector:latest
DOCKER ?= docker
PORT ?= 8000
# make replay SCENARIO="amount_shift customer_mix" switches drift scenarios on; REPLAY_ARGS
# and MONITOR_ARGS pass any other option (see `python -m monitoring.replay --help`).
SCENARIO ?=
REPLAY_ARGS ?=
MONITOR_ARGS ?=
# Evidently's UI defaults to 8000, the service's port: give it its own.
MONITOR_UI_PORT ?= 8001
# podman with Docker's syntax, for `make test-image` (shared/ lies beside the clone; on these
# machines it is also at /work/shared).
CONTAINER_SH ?= $(firstword $(wildcard ../shared/container/container.sh \
	/work/shared/container/container.sh) ../shared/container/container.sh)

# Stage commands in dvc.yaml call `python`: make it the project's interpreter.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(CURDIR)/$(VENV)

.PHONY: help install preflight train repro test test-fast lint format typecheck mlflow-ui bench dvc-deps \
	push pull plots clean serve export-model docker-build docker-run test-image test-fresh bench-serving bench-replicas bench-dask deploy-files \
	replay monitor monitor-ui bench-monitoring docs handbook notebook stack-up stack-down stack-status \
	audit sbom

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "; printf "Usage: make <target>\n\n"} \
	/^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# What the wheels and the tests need from the system (OpenMP, curl, git...): checked
# before anything is installed, one line per missing piece with the command that adds it.
PREFLIGHT := $(PYTHON) scripts/preflight.py

$(UV):
	@$(PREFLIGHT)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on CI machines), Python would
# recompile every module on every start; precompiled, `import sklearn` is 4x faster here.
$(INSTALLED): uv.lock pyproject.toml | $(UV)
	@$(PREFLIGHT)
	$(UV) sync --frozen --all-extras --group dev --compile-bytecode --python $(PYTHON)
	@touch $@

install: $(INSTALLED) ## Create .venv from the lock file (uv.lock), after the preflight

preflight: ## Check what the project needs from the system (one line per missing piece)
	@$(PREFLIGHT) --report

train: $(INSTALLED) ## Run the training pipeline (dvc repro) and print the results
	dvc repro
	@echo; cat reports/train/leaderboard.md
	@echo; echo "Test-period metrics of the selected model (reports/evaluate/metrics.json):"
	@dvc metrics show reports/evaluate/metrics.json
	@echo; echo "Drift monitor on a seeded no-drift replay (reports/monitoring/baseline/):"
	@dvc metrics show reports/monitoring/baseline.json

repro: train ## Same as train

test: lint typecheck ## Lint, type-check and run every test (slow ones included)
	pytest

test-fast: $(INSTALLED) ## Run the tests that are not marked slow
	pytest -m "not slow"

lint: $(INSTALLED) ## ruff lint and format check, hadolint on the Dockerfile
	ruff check .
	ruff format --check .
	hadolint Dockerfile

format: $(INSTALLED) ## Apply ruff's fixes and formatting
	ruff check --fix .
	ruff format .

typecheck: $(INSTALLED) ## mypy
	mypy

mlflow-ui: $(INSTALLED) ## Open the MLflow UI on the project's store (http://127.0.0.1:5000)
	mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}" \
		--host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

# The shared services as local processes (no Docker): PostgreSQL (the system's), SeaweedFS's
# S3 store and an MLflow server on them, on 127.0.0.1; data in .stack/, STACK_* settings
# (stack/settings.py). A client's variables: eval "$$(python -m stack env)".
stack-up: $(INSTALLED) ## Start PostgreSQL, S3, MLflow, 2 API replicas and HAProxy on 127.0.0.1 (data in .stack/)
	python -m stack up

stack-down: $(INSTALLED) ## Stop the stack's servers (their data stays in .stack/)
	python -m stack down

stack-status: $(INSTALLED) ## One line per stack server: up or down, pid, port, version, health
	python -m stack status

dvc-deps: $(INSTALLED) ## Derive each dvc.yaml stage's code deps from what it imports (scripts/dvc_deps.py)
	python scripts/dvc_deps.py --write

plots: $(INSTALLED) ## Render the DVC plots to dvc_plots/index.html
	dvc plots show

bench: $(INSTALLED) ## Measure the pipeline's speed and quality figures (see docs/benchmarks.md)
	python benchmarks/pipeline.py

# The champion of the model params.yaml names (evaluate.registered_model_name), unless
# SERVING_MODEL_URI says otherwise.
serve: $(INSTALLED) ## Serve the registry champion on http://127.0.0.1:8000 (/docs; SERVING_* settings)
	SERVING_PORT=$${SERVING_PORT:-$(PORT)} \
		SERVING_MODEL_URI=$${SERVING_MODEL_URI:-$$(python -m pipelines.champion_uri)} \
		python -m serving

export-model: $(INSTALLED) ## Copy the registry champion into build/model (what the image serves)
	python -m pipelines.export_model --out build/model

docker-build: export-model ## Build the serving image (IMAGE=fraud-detector:latest) with the champion
	$(DOCKER) build -t $(IMAGE) .

docker-run: ## Run the serving image on port PORT (8000)
	$(DOCKER) run --rm -p $(PORT):$(PORT) -e SERVING_PORT=$(PORT) $(IMAGE)

# Every package uv.lock pins (all extras, the dev group, every Python and platform), exported
# in the standard lock format that pip-audit reads whole. scripts/audit.py runs pip-audit with
# --strict: a package it cannot check (its vulnerability data unreachable) fails the audit
# instead of being skipped under "No known vulnerabilities found". AUDIT_ARGS go to pip-audit,
# e.g. AUDIT_ARGS='--vulnerability-service osv' or '--ignore-vuln ID' (docs/security.md).
AUDIT_DIR ?= build/audit
AUDIT_ARGS ?=
audit: $(INSTALLED) ## Check uv.lock's packages for known vulnerabilities; fails if one cannot be checked (docs/security.md)
	@mkdir -p $(AUDIT_DIR)
	$(UV) export --frozen --all-extras --group dev --no-emit-project --format pylock.toml \
		--quiet -o $(AUDIT_DIR)/pylock.toml
	python scripts/audit.py $(AUDIT_DIR) $(AUDIT_ARGS)

# The CycloneDX SBOM of the serving image's venv, made in the Dockerfile's `sbom` stage (from
# the builder's /opt/venv, which the image copies as it is; the image itself holds no SBOM
# tool). Needs no model: the stage does not reach the runtime stage.
SBOM_IMAGE ?= localhost/fraud-detector-sbom:latest
sbom: ## CycloneDX SBOM of the serving image's packages, built with podman (build/sbom.cdx.json)
	@mkdir -p build
	bash "$(CONTAINER_SH)" build --target sbom -t $(SBOM_IMAGE) .
	bash "$(CONTAINER_SH)" run --rm $(SBOM_IMAGE) cat /sbom.cdx.json > build/sbom.cdx.json.tmp
	@mv build/sbom.cdx.json.tmp build/sbom.cdx.json
	@$(PYTHON) -c "import json; bom = json.load(open('build/sbom.cdx.json')); print('build/sbom.cdx.json:', \
		len(bom['components']), 'packages, CycloneDX', bom['specVersion'])"

# The champion comes from the local MLflow store: a fresh clone has none, so when the export
# fails this trains one first (`make train`, a few minutes) and exports again.
test-image: $(INSTALLED) ## Build the serving image with podman and check it end to end
	@$(MAKE) --no-print-directory export-model || { \
		echo "test-image: no champion to export; training one (make train)"; \
		$(MAKE) --no-print-directory train export-model; }
	python tests/image/check_image.py --container-sh "$(CONTAINER_SH)"

# About 30 minutes, most of it the container's own `make test`. CI runs it after
# test-image with FRESH_ARGS=--fast-tests (the slow tests have just run on the host).
test-fresh: $(INSTALLED) ## In a bare Debian container: the preflight, then the README's two commands
	python tests/fresh_machine/check_fresh_machine.py --container-sh "$(CONTAINER_SH)" $(FRESH_ARGS)

bench-serving: $(INSTALLED) ## Measure the service against `mlflow models serve` and the ceiling
	@command -v wrk >/dev/null || { echo "bench-serving needs wrk, the HTTP load generator: \
	apt-get install wrk (Debian/Ubuntu) or brew install wrk (macOS)"; exit 1; }
	python benchmarks/serving.py

bench-replicas: $(INSTALLED) ## Measure the log's stores and commit modes, HAProxy (beside Caddy, Traefik) with 1 and 2 replicas, the kill test
	@command -v wrk >/dev/null || { echo "bench-replicas needs wrk, the HTTP load generator: \
	apt-get install wrk (Debian/Ubuntu) or brew install wrk (macOS)"; exit 1; }
	python benchmarks/replicas.py

bench-dask: $(INSTALLED) ## Time the pipeline on Dask: full size beside local (and both champions), then ~18 M payments
	python benchmarks/dask_scale.py

deploy-files: $(INSTALLED) ## Rewrite the files of compose.yaml made from the code (deploy/compose/haproxy.cfg)
	python -m stack.deploy

replay: $(INSTALLED) ## Send a week of simulated production traffic to the service (SCENARIO=... for drift)
	python -m monitoring.replay $(foreach name,$(SCENARIO),--scenario $(name)) $(REPLAY_ARGS)

# make exits 2 whenever a recipe fails: the line below says which of the monitor's own
# codes it was. Schedulers should run `python -m monitoring` itself (exit 1 = drift).
monitor: $(INSTALLED) ## Drift report on the last 24 h of the prediction log (make exits 2 on drift or error)
	python -m monitoring $(MONITOR_ARGS) || { code=$$?; echo "make monitor: the monitor \
	exited $$code ($$( [ $$code -eq 1 ] && echo drift || echo 'it could not run')); make \
	itself exits 2 for any failure: run python -m monitoring for the monitor's own code" >&2; \
	exit $$code; }

monitor-ui: $(INSTALLED) ## Add a monitor run to an Evidently UI workspace and serve the UI on :8001
	python -m monitoring --workspace reports/monitoring/workspace $(MONITOR_ARGS) || [ $$? -eq 1 ]
	DO_NOT_TRACK=1 evidently ui --workspace reports/monitoring/workspace \
		--host 127.0.0.1 --port $(MONITOR_UI_PORT)

handbook: $(INSTALLED) ## The handbook table over 10 simulator seeds, with its spread (about 4 min)
	@test -f models/selection.json || $(MAKE) --no-print-directory train
	python benchmarks/handbook.py

bench-monitoring: $(INSTALLED) ## Time the monitor on 100,000 rows; gate pass/fail over seeded replays
	python benchmarks/monitoring.py

# Airflow gets its own environment and lock (orchestration/airflow): it pins SQLAlchemy, pydantic
# and others in ranges the project's stack does not share. The DAGs only run shell commands.
$(AIRFLOW_INSTALLED): orchestration/airflow/uv.lock orchestration/airflow/pyproject.toml | $(UV)
	UV_PROJECT_ENVIRONMENT=$(CURDIR)/$(AIRFLOW_VENV) $(UV) sync --frozen \
		--project orchestration/airflow --compile-bytecode --python $(PYTHON)
	@touch $@

.PHONY: airflow-check
airflow-check: $(AIRFLOW_INSTALLED) ## Load the Airflow DAGs with real Airflow, check them, run them on a stand-in
	$(AIRFLOW_VENV)/bin/python orchestration/airflow/check_dags.py

docs: $(INSTALLED) ## Regenerate docs/walkthrough.md (figures, numbers) and the notebook from the pipeline's data
	@test -f data/split/train.parquet || $(MAKE) --no-print-directory train
	python docs/build_walkthrough.py
	python notebooks/run.py notebooks/explore.ipynb --in-place

notebook: $(INSTALLED) ## Execute notebooks/explore.ipynb on the pipeline's outputs and save them in it
	@test -f data/split/train.parquet || $(MAKE) --no-print-directory train
	python notebooks/run.py notebooks/explore.ipynb --in-place

# DVC_REMOTE picks the remote: unset, DVC's default (`local`, the folder ../dvc-storage);
# `shared`, the object store of the team's stack (`eval "$$(python -m stack env)"` sets it
# with the endpoint and the keys, which stay out of the repository).
DVC_REMOTE ?=
push: $(INSTALLED) ## Send data and models to the DVC remote (DVC_REMOTE=shared: the stack's object store)
	dvc push $(if $(DVC_REMOTE),--remote $(DVC_REMOTE))

pull: $(INSTALLED) ## Fetch data and models from the DVC remote (DVC_REMOTE as for push)
	dvc pull $(if $(DVC_REMOTE),--remote $(DVC_REMOTE))

clean: ## Remove pipeline outputs (kept in DVC's cache), the MLflow store and tool caches
	git clean -fdqX -- data models
	rm -rf mlflow.db mlartifacts dvc_plots build .bench .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
