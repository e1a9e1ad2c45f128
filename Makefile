# Everything a developer runs. `make test` and `make run` create the virtualenv themselves.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# `make run`: the streaming pipeline on the embedded default (no server) for about a minute.
RATE ?= 300
DURATION_S ?= 60
OUTPUT_ROOT ?= out
KEY_FILE := .local/pseudonym.key

.PHONY: venv compiled lint format test test-unit fuzz run report chromium key \
	bench-redaction bench-pipeline bench-dlp clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The redaction engine's hot modules compiled with Cython (transforms/pii/compiled.py): rebuilt
# when they change; without a C compiler the sources run as plain Python, except in CI.
COMPILED := transforms/pii/_compiled/manifest.json
$(COMPILED): $(STAMP) transforms/pii/detectors.py transforms/pii/phones.py \
		transforms/pii/normalise.py transforms/pii/offline.py transforms/pii/compiled.py \
		transforms/pii/build.py
	$(BIN)/python -m transforms.pii.build $(if $(filter true,$(CI)),--require)

compiled: $(COMPILED)

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Headless Chromium (Debian's package) for the test that opens the HTML report
# (tests/e2e/test_report.py): installed when missing (after an apt-get update if the package
# lists are stale), so a fresh machine and CI have it.
chromium:
	@command -v chromium > /dev/null || apt-get install -y -q chromium > /dev/null \
		|| { apt-get update -q > /dev/null && apt-get install -y -q chromium > /dev/null; }

# Unit and integration tests. Starts the local Google Cloud stand-ins unless they already run
# (then they are left running), and stops what it started even when a test fails.
test: venv lint compiled chromium
	@if ! $(STACK) status --quiet; then \
		trap '$(STACK) down' EXIT; \
		$(STACK) up > /dev/null || exit 1; \
	fi; \
	set -a; . $(STACK_ENV); set +a; \
	$(BIN)/pytest

# The layers that need no service, in under two minutes on a 2-core machine: plain functions,
# composite transforms and TestStream streaming tests, in two pytest processes (pytest-xdist;
# 96 s for 1,028 tests on 2026-12-07, 153 s in one process). The end-to-end runs (tests/e2e)
# and the infrastructure checks (tests/infrastructure) need no service either but take as long
# again, so only `make test` runs them (or, without the stack, `$(BIN)/pytest -m "not
# integration"`). Format and lint first, as in `make test`.
test-unit: venv lint compiled
	$(BIN)/pytest -n 2 tests/functions tests/transforms tests/streaming

# The fuzz tests (hypothesis) with the large budget: over 100,000 generated inputs, most through
# the plain functions, fewer through the composites and end-to-end backfills; about 6 minutes
# of CPU in one process (docs/performance.md). `make test` runs them with a small budget.
FUZZ_TESTS := tests/functions/test_fuzz.py tests/transforms/test_fuzz.py tests/e2e/test_fuzz_backfill.py

fuzz: venv compiled
	$(BIN)/pytest -q $(FUZZ_TESTS) --hypothesis-profile=fuzz --hypothesis-show-statistics

# A local pseudonym key, made once and kept (pseudonyms stay stable across runs).
$(KEY_FILE):
	@mkdir -p $(dir $(KEY_FILE))
	@umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_hex(32))' > $(KEY_FILE)
	@echo "created a local pseudonym key in $(KEY_FILE) (keep it; never commit it)"

key: $(KEY_FILE)

run: venv compiled $(KEY_FILE)
	$(BIN)/python -m pipelines.streaming --source synthetic --rate $(RATE) --duration_s $(DURATION_S) \
		--output_root $(OUTPUT_ROOT) --pseudonym_key file:$(KEY_FILE)
	$(BIN)/python -m pipelines.report --output_root $(OUTPUT_ROOT)

# The HTML report of what the embedded warehouse under OUTPUT_ROOT holds (make run ends with it).
report: venv
	$(BIN)/python -m pipelines.report --output_root $(OUTPUT_ROOT)

# Every performance target in one run (~35 min; alone on the machine). With the local stack up
# and its variables exported (make stack-up) it measures the Pub/Sub path too.
bench-pipeline: venv compiled
	$(BIN)/python benchmarks/pipeline.py

bench-redaction: venv compiled
	$(BIN)/python benchmarks/redaction.py

bench-dlp: venv compiled
	$(BIN)/python benchmarks/dlp_hybrid.py

clean:
	rm -rf $(VENV) $(OUTPUT_ROOT) .pytest_cache .ruff_cache transforms/pii/_compiled

# --- Deploy to Google Cloud: Flex Templates and Terraform (docs/deploy.md, the runbook) -------
# The template-* and deploy-* targets print the exact commands of each step; EXECUTE=1 also
# runs them (it needs gcloud with an active account and the settings written by
# `make deploy-settings`). A test checks that docs/deploy.md shows what they print.
TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
EXECUTE ?=
PARAMS ?=
JOB_NAME ?=
DEPLOY_SETTINGS ?= .local/deploy-settings.json
FLEX = $(BIN)/python -m templates.flex --settings $(DEPLOY_SETTINGS) --tag $(TAG) \
	$(if $(filter 1,$(EXECUTE)),--execute) $(if $(JOB_NAME),--job_name $(JOB_NAME))
DEPLOY = $(BIN)/python -m templates.deploy --settings $(DEPLOY_SETTINGS) \
	$(if $(filter 1,$(EXECUTE)),--execute)
BUILD_REQUIRES := import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))

.PHONY: lock schemas deploy-settings template-build template-run-streaming template-run-backfill \
	deploy-infra deploy-key deploy-audit-grant deploy-check-schema deploy-replay bench-cost

# Hash-pinned lock of the image: pyproject.toml's dependencies, its accel extra (Cython) and build
# requirements, resolved for the workers' platform (Linux x86_64, Python 3.11).
lock: venv
	$(BIN)/python -c '$(BUILD_REQUIRES)' | $(BIN)/uv pip compile pyproject.toml - --extra accel \
		--generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--custom-compile-command "make lock" --output-file templates/requirements.lock

# BigQuery schema files Terraform reads, generated from schemas/avro.
schemas: venv
	$(BIN)/python -m schemas.bigquery_files terraform/schemas

# Names of the applied stack (terraform output flex_settings) for the template-* targets.
deploy-settings:
	@mkdir -p $(dir $(DEPLOY_SETTINGS))
	terraform -chdir=terraform output -json flex_settings > $(DEPLOY_SETTINGS)

template-build: venv
	@$(FLEX) build

template-run-streaming: venv
	@$(FLEX) run streaming $(PARAMS)

template-run-backfill: venv
	@$(FLEX) run backfill $(PARAMS)

deploy-infra: venv
	@$(DEPLOY) infra

deploy-key: venv
	@$(DEPLOY) key

deploy-audit-grant: venv
	@$(DEPLOY) audit-grant

deploy-check-schema: venv
	@$(DEPLOY) check-schema

deploy-replay: venv
	@$(DEPLOY) replay $(PARAMS)

# CPU per event of each step on the Dataflow path, and the workers it takes (docs/deploy.md).
bench-cost: venv compiled
	$(BIN)/python benchmarks/cost_per_event.py

# `terraform validate` needs the google and google-beta providers from the registry (not reachable
# on the development machine, so not part of `make test`): run it where they can be downloaded.
.PHONY: terraform-validate
terraform-validate:
	terraform -chdir=terraform init -backend=false -input=false > /dev/null
	terraform -chdir=terraform validate

# --- Local Google Cloud stand-ins (tests/stack/local_stack.py) --------------------------------
# Pub/Sub emulator, Cloud Storage emulator, bqemulator (own venv), fake ADC token server and a
# throw-away PostgreSQL 15, all on 127.0.0.1. `make stack-up` prints the variables to export.
STACK := $(BIN)/python -m tests.stack.local_stack
STACK_ENV := .local/stack/env.sh

.PHONY: stack-up stack-down stack-status

stack-up: venv
	$(STACK) up

stack-down:
	$(PYTHON) -m tests.stack.local_stack down

stack-status:
	@$(PYTHON) -m tests.stack.local_stack status || echo "(not every service is up: make stack-up starts them)"
