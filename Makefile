# `make test` and `make demo` set up what they need; nothing else is required first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: dev lint format unit integration test demo clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

dev: $(STAMP)  ## create .venv with the project and its dev tools

lint: $(STAMP)  ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy src tests

format: $(STAMP)
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests

unit: $(STAMP)  ## tests without network
	$(PY) -m pytest tests/unit

integration: $(STAMP)  ## tests against the embedded DynamoDB (and, later, MariaDB)
	$(PY) -m pytest tests/integration

test: lint  ## everything CI runs
	$(PY) -m pytest

demo: $(STAMP)  ## the sample's load demo on the local stack; flags: make demo ARGS="-n 500 -c 40"
	$(PY) -m connlease.local.demo $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-output
