# chat-proxy: every day-to-day command. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

.PHONY: help watch test lint build invoke clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

.env:
	@cp .env.example .env
	@echo "Created .env from .env.example. Put your OpenAI key in GPT_API_KEY (and REDIS_URL"
	@echo "if you want chats in Redis rather than in memory), then run make watch again."
	@exit 1

watch: .env ## Run the function locally on http://localhost:9000 (cargo lambda watch)
	@command -v cargo-lambda >/dev/null 2>&1 || { echo "Installing cargo-lambda: pip install cargo-lambda"; pip install cargo-lambda; }
	@grep -qE '^(GPT_API_KEY|OPENAI_API_KEY)=.+' .env || { echo "Set GPT_API_KEY in .env first."; exit 1; }
	cargo lambda watch --env-file .env

test: ## Run every test (starts its own redis-server; needs redis-server installed)
	@command -v redis-server >/dev/null 2>&1 || { echo "redis-server is missing: apt-get install -y redis-server (or brew install redis)"; exit 1; }
	cargo test --locked

lint: ## cargo fmt --check and clippy with warnings denied
	cargo fmt --check
	cargo clippy --locked --all-targets -- -D warnings

build: ## Build the Lambda bootstrap for arm64 (needs cargo-lambda, zig and the aarch64 target)
	@command -v cargo-lambda >/dev/null 2>&1 || { echo "cargo-lambda is missing: pip install cargo-lambda (it brings zig too)"; exit 1; }
	@rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu$$' || { echo "The aarch64 target is missing: rustup target add aarch64-unknown-linux-gnu"; exit 1; }
	cargo lambda build --release --arm64
	@ls -l target/lambda/bootstrap/bootstrap

invoke: ## Send every events/*.json to a running `make watch`
	@for event in events/*.json; do \
	  echo "--- $$event"; \
	  cargo lambda invoke bootstrap --data-file "$$event" || exit 1; \
	  echo; \
	done

clean: ## Remove build output
	cargo clean
