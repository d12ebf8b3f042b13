# pdm-mlops: `make run` and `make test` work from a fresh clone (Python 3.11+, pip, make; no Docker, no AWS).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# checkov pins boto3==1.35.49, which the SageMaker SDK v3 cannot use: it gets a venv of its own.
CHECKOV_VENV := .venv-checkov
STAMP := $(VENV)/.installed
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup run test lint format bench definition clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

$(CHECKOV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --group checkov
	@touch $@

setup: $(STAMP) $(CHECKOV_STAMP) ## create .venv (and .venv-checkov) and install the package with dev extras

run: $(STAMP) ## run the whole pipeline locally on the built-in data set
	$(PY) -m pipelines.run --wait $(ARGS)

test: $(STAMP) $(CHECKOV_STAMP) ## run the whole test suite
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP) ## apply ruff formatting and safe fixes
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

definition: $(STAMP) ## write the compiled pipeline definition to out.json
	$(PY) -m pipelines.run --definition out.json

bench: $(STAMP) ## run the benchmarks; results in bench/results.md
	$(PY) -m bench

clean: ## remove the local engine's records, objects and endpoints (stops running local endpoints first)
	-$(PY) -m deploy.endpoint stop --all 2>/dev/null
	rm -rf .mlops
