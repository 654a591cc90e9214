# `make test` and `make demo` set up what they need; nothing else is required first.
PYTHON ?= python3
VENV := .venv
.DEFAULT_GOAL := help
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
# Every Python tree ruff and mypy check.
CODE := domain adapters service connlease_client client_build local cli examples tests benchmarks reliability

.PHONY: help dev cli lint format unit integration test demo local example bench bench-quick reliability infra-tools infra client clean \
	build-HelperFunction build-TestFunction build-HarnessFunction build-SeederFunction \
	build-DependenciesLayer check-rds-ca-bundle

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

dev: $(STAMP)  ## create .venv with the project and its dev tools (and .venv/bin/connlease)
	@echo "connlease is $(CLI): run $(CLI) --help, or source $(VENV)/bin/activate first"

# The operator's command line alone: the project and its `cli` extra in .venv, the console
# script at .venv/bin/connlease (what README names). `make dev` installs it too.
CLI := $(VENV)/bin/connlease
CLI_STAMP := $(VENV)/.installed-cli

$(CLI_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[cli]'
	@touch $(CLI_STAMP)

cli: $(CLI_STAMP)  ## install the operator's command line at .venv/bin/connlease (source .venv/bin/activate puts it on PATH)
	@$(CLI) --help > /dev/null
	@echo "connlease is $(CLI): run $(CLI) --help, or source $(VENV)/bin/activate first"

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

infra: $(STAMP) $(INFRA_STAMP)  ## template checks: cfn-lint, checkov, bandit, template and layer-build tests
	$(PY) -m pytest tests/unit/test_template*.py tests/unit/test_layer_build.py tests/integration/test_infra_checks.py

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

# The tests that share this machine's MariaDB, .venv or a local stack run on one worker, in
# order; the rest beside them (tests/conftest.py says which and why).
TEST_WORKERS ?= 2

test: lint $(INFRA_STAMP)  ## everything CI runs
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

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

# The client another function installs: the package connlease_client alone, with the
# repository modules it runs on vendored under connlease_client._core (client_build/), as a
# wheel and as a Lambda layer (python/ at the zip's root). The standard library builds it:
# no venv needed. pip install dist/connlease_client-*.whl, or publish the layer.
CLIENT_DIST ?= dist
client:  ## the client's wheel and layer: dist/connlease_client-<version>-py3-none-any.whl, dist/connlease-client-layer.zip
	$(PYTHON) -m client_build.build --dist $(CLIENT_DIST)

# `sam build` (infra/template.yaml, BuildMethod: makefile, CodeUri: the repository root) runs
# these with ARTIFACTS_DIR set: a function's package is the hexagon's three packages and the
# helper's wire contract (connlease_client) alone, its dependencies come from the layer.
LAMBDA_PACKAGES := domain adapters service connlease_client
build-HelperFunction build-TestFunction build-HarnessFunction build-SeederFunction:
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (sam build sets it)" >&2; exit 2; }
	mkdir -p "$(ARTIFACTS_DIR)"
	cp -R $(LAMBDA_PACKAGES) "$(ARTIFACTS_DIR)/"
	find "$(ARTIFACTS_DIR)" -name __pycache__ -prune -exec rm -rf {} +
	$(call compile_for_lambda,$(ARTIFACTS_DIR))

# Bytecode for Lambda's Python. /var/task and /opt are read-only, so a module shipped as
# source alone is compiled again on every cold start and the result thrown away (`make
# bench`'s cold start measures the helper both ways). So the functions and the layer ship
# .pyc too, made by the runtime's own Python version (a .pyc is only read by the version
# that wrote it): LAMBDA_PYTHON, by default python$(LAMBDA_PYTHON_VERSION) on PATH
# (LAMBDA_PYTHON=/path/to/python3.13 sam build ...). Hash-checked (PEP 552): valid whatever
# dates the zip and Lambda's unzip give the files, where pip's default (by modification
# time) would mostly be stale on arrival; a .py edited after the build is compiled again
# rather than run from old bytecode.
# - No such Python found: the build says so and ships source, which works and starts slower.
#   On stdout: `sam build` shows make's stdout, and its stderr only when make fails.
# - LAMBDA_PYTHON given but not a working final release of that version: the build fails.
# - A layer module that does not compile (a dependency's Python 2 test file, say) ships as
#   source, as pip's own compiling leaves it; one of ours fails the build.
LAMBDA_PYTHON_VERSION := 3.13
ifeq ($(origin LAMBDA_PYTHON),undefined)
LAMBDA_PYTHON := $(shell command -v python$(LAMBDA_PYTHON_VERSION) 2>/dev/null)
endif
IS_LAMBDA_PYTHON := import sys; v = sys.version_info; \
	sys.exit(f"{v.major}.{v.minor}" != "$(LAMBDA_PYTHON_VERSION)" or v.releaselevel != "final")
COMPILE_FOR_LAMBDA := "$(LAMBDA_PYTHON)" -m compileall -q -j 0 --invalidation-mode checked-hash
# $(1): the directory; $(2): what to run if some module in it does not compile.
define compile_for_lambda
	@if [ -n "$(LAMBDA_PYTHON)" ] && "$(LAMBDA_PYTHON)" -c '$(IS_LAMBDA_PYTHON)' 2>/dev/null; then \
		$(COMPILE_FOR_LAMBDA) "$(1)" $(2); \
	elif [ -n "$(LAMBDA_PYTHON)" ] && [ "$(origin LAMBDA_PYTHON)" != file ]; then \
		echo "LAMBDA_PYTHON=$(LAMBDA_PYTHON) is not a working Python $(LAMBDA_PYTHON_VERSION)" \
			"(a final release): give one, or LAMBDA_PYTHON= (empty) to ship source alone" >&2; \
		exit 2; \
	else echo "warning: no working python$(LAMBDA_PYTHON_VERSION) on PATH to compile $(1) for" \
		"Lambda with: shipped as source, which each cold start compiles; put one on PATH, or" \
		"set LAMBDA_PYTHON to one, to ship bytecode"; fi
endef

# The layer (DependenciesLayer, BuildMethod: makefile, ContentUri: the repository root).
# The RDS CA bundle comes first: the functions verify MySQL's certificate with it
# (DB_CA_BUNDLE, /opt/python/rds-global-bundle.pem), and without it the deploy failed only
# at LeaseQuota, after RDS was made. It is checked as the functions load it
# (ssl.create_default_context), before anything is installed. Then the runtime
# dependencies, as wheels for Lambda's arm64 Python 3.13 whatever the build machine is
# (pip's cross-platform install, as AWS's guide to layers does it), into python/, which
# Lambda mounts at /opt/python. pip's own compiling is off: it would compile for the build
# machine's Python, not Lambda's (compile_for_lambda above does that). RDS_CA_BUNDLE=path
# sam build ... takes another file.
RDS_CA_BUNDLE ?= layer/rds-global-bundle.pem
RDS_CA_BUNDLE_URL := https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
LAYER_REQUIREMENTS := layer/requirements.txt
LAYER_PLATFORM := manylinux2014_aarch64
LAYER_PIP ?= $(PYTHON) -m pip

check-rds-ca-bundle:  ## the RDS CA bundle the layer ships is there and loads (sam build runs it first)
	@if [ ! -s "$(RDS_CA_BUNDLE)" ]; then problem="is missing"; \
	elif ! $(PYTHON) -c 'import ssl, sys; ssl.create_default_context(cafile=sys.argv[1])' \
		"$(RDS_CA_BUNDLE)" 2>/dev/null; then problem="is not a PEM certificate bundle"; \
	else exit 0; fi; \
	echo "RDS CA bundle $(RDS_CA_BUNDLE) $$problem; get it with: curl -fsSL -o $(RDS_CA_BUNDLE) $(RDS_CA_BUNDLE_URL)" >&2; \
	exit 2

build-DependenciesLayer: check-rds-ca-bundle
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (sam build sets it)" >&2; exit 2; }
	mkdir -p "$(ARTIFACTS_DIR)/python"
	cp "$(RDS_CA_BUNDLE)" "$(ARTIFACTS_DIR)/python/rds-global-bundle.pem"
	PIP_ROOT_USER_ACTION=ignore $(LAYER_PIP) install --quiet --disable-pip-version-check \
		--no-warn-conflicts --no-compile --requirement $(LAYER_REQUIREMENTS) \
		--target "$(ARTIFACTS_DIR)/python" --platform $(LAYER_PLATFORM) --implementation cp \
		--python-version $(LAMBDA_PYTHON_VERSION) --only-binary=:all:
	$(call compile_for_lambda,$(ARTIFACTS_DIR)/python,|| echo "warning: some modules in \
		$(ARTIFACTS_DIR)/python did not compile for Lambda: they ship as source")

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-output dist
