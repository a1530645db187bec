# chat-proxy: every day-to-day command. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

.PHONY: help watch test lint build deploy deploy-tools deploy-ci invoke bench load fuzz screenshots reseal clean

# Python tools live in project venvs, pinned in tools/: .venv for the test tools and the
# linters, .venv-lambda for cargo-lambda alone (all `make watch` needs), .venv-deploy for
# SAM CLI (its pins clash with the test tools').
VENV := .venv
LAMBDA_VENV := .venv-lambda
DEPLOY_VENV := .venv-deploy
SAM := $(DEPLOY_VENV)/bin/sam
STACK ?= chat-proxy
export SAM_CLI_TELEMETRY := 0
# `cargo lambda` and SAM's rust-cargolambda build find cargo-lambda (and zig) here.
export PATH := $(CURDIR)/$(LAMBDA_VENV)/bin:$(CURDIR)/$(DEPLOY_VENV)/bin:$(PATH)

$(VENV)/.installed: tools/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	@touch $@

# The Vercel AI SDK's tests run on a Node 22 of their own (tests/js/package.json says why).
JS_CLIENTS := tests/js/node_modules/.installed
$(JS_CLIENTS): tests/js/package.json tests/js/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm is missing: apt-get install -y nodejs npm (or brew install node)"; exit 1; }
	npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
	@touch $@

$(LAMBDA_VENV)/.installed: tools/requirements-lambda.txt
	python3 -m venv $(LAMBDA_VENV)
	$(LAMBDA_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	@touch $@

$(DEPLOY_VENV)/.installed: tools/requirements-deploy.txt
	python3 -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --disable-pip-version-check -r $<
	@touch $@

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

PORT ?= 9000
export PORT

.env:
	@cp .env.example .env
	@echo "Created .env from .env.example (put your OpenAI key in GPT_API_KEY for real answers)."

watch: .env $(LAMBDA_VENV)/.installed ## Run the function locally on http://localhost:9000 (cargo lambda watch; PORT=...)
	@exec scripts/watch.sh

test: $(VENV)/.installed $(LAMBDA_VENV)/.installed $(JS_CLIENTS) ## Run every test (starts its own redis-server and moto; needs redis-server installed)
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is missing: apt-get install -y redis-server (or brew install redis)"; exit 1; }
	cargo test --locked
	@# Real clients against the function under cargo lambda watch (the build above).
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/python
	scripts/watch-smoke.sh

lint: $(VENV)/.installed $(LAMBDA_VENV)/.installed $(DEPLOY_VENV)/.installed ## fmt, clippy, template lint and SAM translation check, workflow lint
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml
	$(SAM) validate --lint --region us-east-1 --template template.yaml
	$(DEPLOY_VENV)/bin/python tools/check_template.py template.yaml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(VENV)/bin/zizmor --offline --min-severity medium .github/workflows/

build: $(LAMBDA_VENV)/.installed ## Build the Lambda bootstrap for arm64 (needs the aarch64 target)
	@rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$$' || { echo "The aarch64 target is missing: rustup target add aarch64-unknown-linux-gnu"; exit 1; }
	cargo lambda build --release --arm64
	@ls -l target/lambda/bootstrap/bootstrap

deploy-tools: $(LAMBDA_VENV)/.installed $(DEPLOY_VENV)/.installed ## Install SAM CLI (.venv-deploy) and cargo-lambda (.venv-lambda) (CI checks this step)
	$(SAM) --version
	cargo lambda --version

deploy: deploy-tools ## sam build + sam deploy (guided the first time), then print the ApiUrl
	@rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$$' || { echo "The aarch64 target is missing: rustup target add aarch64-unknown-linux-gnu"; exit 1; }
	$(SAM) build
	@if $(SAM) list stack-outputs --stack-name $(STACK) >/dev/null 2>&1; then \
	  $(SAM) deploy --stack-name $(STACK); \
	else \
	  echo "First deploy of $(STACK): SAM asks for the settings once and saves them to samconfig.toml."; \
	  $(SAM) deploy --guided --stack-name $(STACK); \
	fi
	$(SAM) list stack-outputs --stack-name $(STACK) --output table

deploy-ci: deploy-tools ## What the GitHub deploy job runs: build, deploy without questions, smoke-test the ApiUrl
	$(SAM) build
	$(SAM) deploy --stack-name $(STACK) --no-confirm-changeset --no-fail-on-empty-changeset
	scripts/smoke.sh "$$($(SAM) list stack-outputs --stack-name $(STACK) --output json | python3 -c 'import json,sys; print(next(o["OutputValue"] for o in json.load(sys.stdin) if o["OutputKey"]=="ApiUrl"))')"

EVENTS ?= events/*.json
invoke: $(LAMBDA_VENV)/.installed ## Send API Gateway events to the running `make watch` (all of events/, or EVENTS=events/get-system.json)
	@for event in $(EVENTS); do \
	  echo "--- $$event"; \
	  cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port $(PORT) --data-file "$$event" || exit 1; \
	  echo; \
	done

bench: ## Benchmarks: handler overhead per route, Redis cost per turn, cold start and memory, time to first delta
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is missing: apt-get install -y redis-server"; exit 1; }
	cargo bench --locked --bench handler
	cargo bench --locked --bench redis_cost
	cargo bench --locked --bench lambda
	cargo bench --locked --bench stream
	@echo "Release bootstrap size (x86_64):"
	@$(MAKE) --no-print-directory $(LAMBDA_VENV)/.installed
	cargo lambda build --release
	@ls -l target/lambda/bootstrap/bootstrap

load: ## End-to-end load run through cargo lambda watch with wrk (DURATION=10 s per run)
	scripts/load.sh

screenshots: $(VENV)/.installed $(LAMBDA_VENV)/.installed ## Retake the playground's screenshots in docs/ (headless Chromium)
	cargo build --locked
	SCREENSHOTS_DIR=$(CURDIR)/docs $(VENV)/bin/pytest -q -p no:cacheprovider tests/python/test_playground.py -k screenshots

reseal: .env ## Seal every stored value again under the first of SEAL_KEYS (with .env's REDIS_URL and SEAL_KEYS)
	@set -a && . ./.env && set +a && cargo run --locked --release --quiet -- reseal

FUZZ_SECONDS ?= 60
fuzz: ## Fuzz request parsing and routing with cargo-fuzz for FUZZ_SECONDS (default 60)
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	@# cargo-fuzz wants nightly for its sanitizer flags; RUSTC_BOOTSTRAP lets stable take them.
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run request -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096

clean: ## Remove build output and the tool venvs
	cargo clean
	rm -rf .aws-sam $(VENV) $(LAMBDA_VENV) $(DEPLOY_VENV) tests/js/node_modules
