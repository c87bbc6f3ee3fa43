# The two commands of the README, and the model they need.
#   make run    starts shelf's main job: the HTTP API with the demo shop (shelf serve --demo)
#   make test   fetches the model if missing, then runs every test of the workspace (built
#               with the Fluvio client), the Fluvio tests against a local SC + SPU started
#               by scripts/fluvio-local.sh (skipped with a message where fluvio-run is
#               missing, except under CI=true), and the tests of the Arroyo UDFs (udfs/,
#               their own workspace)
export CARGO_TARGET_DIR ?= $(HOME)/.cache/shelf/target
FEATURES := --features shelf-server/fluvio

.PHONY: model run test bench lint

model:
	scripts/fetch-model.sh

run: model
	cargo run --release -p shelf-server --bin shelf -- serve --demo

test: model
	cargo test --workspace --all-targets $(FEATURES)
	cargo test --workspace --doc $(FEATURES)
	scripts/fluvio-local.sh run -- cargo test --workspace $(FEATURES) --test fluvio -- --ignored --test-threads 1
	cargo test --manifest-path udfs/Cargo.toml --workspace

bench: model
	cargo bench -p shelf-embed --bench embed
	cargo bench -p shelf-index --bench index

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets $(FEATURES) -- -D warnings
	cargo fmt --manifest-path udfs/Cargo.toml --all --check
	cargo clippy --manifest-path udfs/Cargo.toml --workspace --all-targets -- -D warnings
