# Every target installs what it needs: npm packages from package-lock.json
# into node_modules, Python tools from requirements-dev.txt into .venv, the
# SAM CLI from requirements-sam.txt into .sam-venv, and crates through Cargo.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c

VENV := .venv
PYTHON_TOOLS := $(VENV)/.installed
# The SAM CLI gets its own venv, because its boto3 and packaging pins
# conflict with checkov's.
SAM_VENV := .sam-venv
SAM_CLI := $(SAM_VENV)/.installed
NODE_TOOLS := node_modules/.installed
BENCH_VENV := .bench-venv
BENCH_PYTHON_TOOLS := $(BENCH_VENV)/.installed
CONFORMANCE_VENV := .conformance-venv
CONFORMANCE_TOOLS := $(CONFORMANCE_VENV)/.installed
SOAK_CASES ?= 2000

.PHONY: test demo lint unit template-lint sam-build tools clean bench

## test: formatting, lints, every test against dynalite, and the template lint
test: lint unit template-lint

## demo: the real binary under `cargo lambda watch`, fed every sample event, on a seeded dynalite
demo: $(NODE_TOOLS) $(PYTHON_TOOLS)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

lint:
	cargo fmt --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

unit: $(NODE_TOOLS)
	cargo test --locked --workspace

# checkov runs with --skip-download, so that it sends no request to its
# vendor's API and uses only the checks it ships with. Each finding that the
# template accepts is skipped in the template's Metadata with its reason.
# checkov 3.3.30 does not expand Fn::ForEach, so it skips the extra tables'
# policies and logs a warning about them on every run; LOG_LEVEL=ERROR hides
# that warning. check_template_grants.py checks those policies instead.
template-lint: $(PYTHON_TOOLS)
	$(VENV)/bin/cfn-lint template.yaml
	LOG_LEVEL=ERROR $(VENV)/bin/checkov --file template.yaml --framework cloudformation --skip-download --compact --quiet
	$(VENV)/bin/python scripts/check_template_grants.py template.yaml

# The SAM CLI with cargo-lambda on its PATH and without telemetry. After a
# command, the SAM CLI asks the package registry for its newest version, at
# most once a week; a failed request only skips that notice.
SAM := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
# The build's architecture in check-template: this machine's, so that no
# cross-compiling target has to be installed.
SAM_CHECK_ARCHITECTURE := $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,x86_64)
SAM_BOOTSTRAP := .aws-sam/build/DeleteLearningUserFunction/bootstrap

## sam-build: `sam build` of template.yaml for deployment (arm64 needs the aarch64-unknown-linux-gnu target)
sam-build: $(PYTHON_TOOLS) $(SAM_CLI)
	$(SAM) build --beta-features --language-extensions

.PHONY: check-template

## check-template: `sam validate --lint` and `sam build` for this machine's architecture, then the grants check on the built template
check-template: $(PYTHON_TOOLS) $(SAM_CLI)
	$(SAM) validate --lint
	rm -rf .aws-sam/build
	$(SAM) build --beta-features --language-extensions --parameter-overrides Architecture=$(SAM_CHECK_ARCHITECTURE)
	test -x $(SAM_BOOTSTRAP)
	cmp -s -n 4 $(SAM_BOOTSTRAP) <(printf '\177ELF') || { echo "$(SAM_BOOTSTRAP) is not an ELF executable" >&2; exit 1; }
	$(VENV)/bin/python scripts/check_template_grants.py .aws-sam/build/template.yaml

## bench: throughput, memory, DELETE_CONCURRENCY sweep and cold start of the release binary on dynalite, written to BENCHMARKS.md
## (settings: BENCH_SIZES=1000,10000,100000 BENCH_REPEATS=3 BENCH_LATENCY_MS=5 BENCH_CONCURRENCY=8)
# One build makes both binaries, so the SDK is compiled once. Both --bin flags
# are needed, because one --bin alone limits the build to that binary.
bench: $(NODE_TOOLS) $(BENCH_PYTHON_TOOLS)
	cargo build --release --locked -p delete-learning-user --bin bootstrap -p delete-learning-user-bench --bin delete-learning-user-bench
	target/release/delete-learning-user-bench

$(BENCH_PYTHON_TOOLS): bench/requirements.txt
	python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

.PHONY: conformance

## conformance: schemathesis against api/ on the function under `cargo lambda watch` and dynalite; fails on an undocumented status, a body off the schema, or a 5xx
## (settings: CONFORMANCE_MAX_EXAMPLES=1000 CONFORMANCE_SEED=20261205)
conformance: $(NODE_TOOLS) $(PYTHON_TOOLS) $(CONFORMANCE_TOOLS)
	bash scripts/conformance.sh

$(CONFORMANCE_TOOLS): requirements-conformance.txt
	python3 -m venv $(CONFORMANCE_VENV)
	$(CONFORMANCE_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-conformance.txt
	touch $@

.PHONY: fuzz soak

## soak: the property test of tests/property_deletion.rs with SOAK_CASES random cases (default 2000, about 9 minutes); prints the counts of cases, statuses and faults
soak: $(NODE_TOOLS)
	PROPTEST_CASES=$(SOAK_CASES) cargo test --locked --test property_deletion -- --nocapture

## fuzz: cargo fuzz on the parsing from Lambda event to validated request, for FUZZ_SECONDS (default 60); exits non-zero on a crash
## (settings: FUZZ_SECONDS=60 FUZZ_MAX_LEN=65536 FUZZ_TIMEOUT=10 FUZZ_SANITIZER=none)
fuzz:
	bash scripts/fuzz.sh

tools: $(NODE_TOOLS) $(PYTHON_TOOLS)

$(NODE_TOOLS): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(PYTHON_TOOLS): requirements-dev.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(SAM_CLI): requirements-sam.txt
	python3 -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-sam.txt
	touch $@

clean:
	rm -rf $(VENV) $(SAM_VENV) $(BENCH_VENV) $(CONFORMANCE_VENV) node_modules target .aws-sam .demo .conformance
	rm -rf .tools fuzz/target fuzz/corpus fuzz/artifacts fuzz/coverage
