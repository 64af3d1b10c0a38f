# Every target installs what it needs: npm packages from package-lock.json
# into node_modules, Python tools from requirements-dev.txt into .venv, and
# crates through Cargo.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c

VENV := .venv
PYTHON_TOOLS := $(VENV)/.installed
SAM_CLI := $(VENV)/.sam-installed
NODE_TOOLS := node_modules/.installed

.PHONY: test demo lint unit template-lint sam-build tools clean

## test: formatting, lints, every test against dynalite, and the template lint
test: lint unit template-lint

## demo: the real binary under `cargo lambda watch`, fed every sample event, on a seeded dynalite
demo: $(NODE_TOOLS) $(PYTHON_TOOLS)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

lint:
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

unit: $(NODE_TOOLS)
	cargo test --locked

template-lint: $(PYTHON_TOOLS)
	$(VENV)/bin/cfn-lint template.yaml

## sam-build: `sam build --beta-features` of template.yaml (arm64 needs the aarch64-unknown-linux-gnu target)
sam-build: $(PYTHON_TOOLS) $(SAM_CLI)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" SAM_CLI_TELEMETRY=0 sam build --beta-features

tools: $(NODE_TOOLS) $(PYTHON_TOOLS)

$(NODE_TOOLS): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(PYTHON_TOOLS): requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(SAM_CLI): requirements-sam.txt $(PYTHON_TOOLS)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-sam.txt
	touch $@

clean:
	rm -rf $(VENV) node_modules target .aws-sam
