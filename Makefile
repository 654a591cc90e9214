# `make test` and `make demo` set up what they need; nothing else is required first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
# Every Python tree ruff and mypy check.
CODE := domain adapters service connlease_client local cli examples tests benchmarks reliability

.PHONY: dev lint format unit integration test demo local example bench bench-quick reliability infra-tools infra clean \
	build-HelperFunction build-TestFunction build-HarnessFunction build-SeederFunction

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

dev: $(STAMP)  ## create .venv with the project and its dev tools

# cfn-lint (with the SAM translator) and checkov in their own venv: checkov pins boto3 and
# packaging, the SAM translator pydantic, to versions the project does not use.
INFRA_VENV := $(VENV)/infra
INFRA_STAMP := $(INFRA_VENV)/.installed

$(INFRA_STAMP): Makefile
	@test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install --quiet checkov==3.3.30 cfn-lint==1.58.0 aws-sam-translator==1.115.0
	@touch $(INFRA_STAMP)

infra-tools: $(INFRA_STAMP)  ## cfn-lint and checkov for the template checks

infra: $(STAMP) $(INFRA_STAMP)  ## template checks: cfn-lint, checkov, bandit, template tests
	$(PY) -m pytest tests/unit/test_template*.py tests/integration/test_infra_checks.py

lint: $(STAMP)  ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)
	$(VENV)/bin/mypy $(CODE)

format: $(STAMP)
	$(VENV)/bin/ruff format $(CODE)
	$(VENV)/bin/ruff check --fix $(CODE)

unit: $(STAMP)  ## tests without network
	$(PY) -m pytest tests/unit

integration: $(STAMP) $(INFRA_STAMP)  ## tests against the embedded DynamoDB (and, later, MariaDB)
	$(PY) -m pytest tests/integration

test: lint $(INFRA_STAMP)  ## everything CI runs
	$(PY) -m pytest

demo: $(STAMP)  ## the sample's load demo on the local stack; flags: make demo ARGS="-n 500 -c 40"
	$(PY) -m local.demo $(ARGS)

local: $(STAMP)  ## a standing local stack on 127.0.0.1:4566 under load, until Ctrl-C: connlease watch demo-mysql --local; flags: ARGS="--limit 3 --no-load"
	$(PY) -m local.serve $(ARGS)

example: $(STAMP)  ## examples/orders, a function written as README says, on the local stack; flags: ARGS="--mode direct"
	$(PY) -m local.run handler.handler --code-dir examples/orders --name orders --event '{"hold_s": 0.2}' \
		--invocations 20 --concurrency 8 --quota 3 $(ARGS)

bench: $(STAMP)  ## benchmarks side by side (about 12 min); writes docs/benchmarks.md
	$(PY) -m benchmarks.run

bench-quick: $(STAMP)  ## a shorter run of every benchmark (about 3 min)
	$(PY) -m benchmarks.run --quick

reliability: $(STAMP)  ## every reliability campaign in full, both layouts, with and without groups (about 22 min here); writes docs/reliability.md
	$(PY) -m reliability.run $(ARGS)

# `sam build` (infra/template.yaml, BuildMethod: makefile, CodeUri: the repository root) runs
# these with ARTIFACTS_DIR set: a function's package is the hexagon's three packages and the
# helper's wire contract (connlease_client) alone, its dependencies come from the layer.
LAMBDA_PACKAGES := domain adapters service connlease_client
build-HelperFunction build-TestFunction build-HarnessFunction build-SeederFunction:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (sam build sets it)" >&2; exit 2; }
	mkdir -p "$(ARTIFACTS_DIR)"
	cp -R $(LAMBDA_PACKAGES) "$(ARTIFACTS_DIR)/"
	find "$(ARTIFACTS_DIR)" -name __pycache__ -prune -exec rm -rf {} +

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-output
