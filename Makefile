# Common framefleet tasks. Each target is a thin wrapper over a script, so CI and people
# run the same commands.
.PHONY: help setup demo test lint fmt infra-up infra-down infra-status

help: ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: ## install what is missing (Debian packages, nisshi)
	scripts/setup.sh

demo: ## run a local fleet on real sample videos, with live progress and a final report
	scripts/demo.sh

test: ## format check, clippy and every test against real etcd and broker
	scripts/test.sh

lint: ## format check, clippy and the module import-loop check
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	scripts/module-cycles.py

fmt: ## format the code
	cargo fmt --all

infra-up: ## start etcd + PostgreSQL + nisshi in .run/local and print their env
	deploy/local/infra.sh up

infra-down: ## stop the infrastructure in .run/local
	deploy/local/infra.sh down

infra-status: ## show what is running in .run/local
	deploy/local/infra.sh status
