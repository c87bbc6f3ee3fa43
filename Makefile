# The two commands of the README, and the model they need.
#   make run    starts shelf's main job: the HTTP API with the demo shop (shelf serve --demo)
#   make test   fetches the model if missing, then runs every test of the workspace (built
#               with the Fluvio client), the Fluvio tests against a local SC + SPU started
#               by scripts/fluvio-local.sh (skipped with a message where fluvio-run is
#               missing, except under CI=true), and the tests of the Arroyo UDFs (udfs/,
#               their own workspace)
export CARGO_TARGET_DIR ?= $(HOME)/.cache/shelf/target
FEATURES := --features shelf-server/fluvio

.PHONY: model run test check-cuda bench lint

model:
	scripts/fetch-model.sh

run: model
	cargo run --release -p shelf-server --bin shelf -- serve --demo

test: model
	cargo test --workspace --all-targets $(FEATURES)
	cargo test --workspace --doc $(FEATURES)
	scripts/fluvio-local.sh run -- cargo test --workspace $(FEATURES) --test fluvio -- --ignored --test-threads 1
	cargo test --manifest-path udfs/Cargo.toml --workspace

# The `cuda` build, type-checked on a machine without a GPU or a system CUDA install
# (scripts/cuda-toolkit.sh brings nvcc 13.4 from PyPI): the binary and every target of
# shelf-embed (the crate with the CUDA code) with candle's CUDA backend, its kernels compiled
# for one architecture, CUDA_COMPUTE_CAP (default 80, Ampere: the PTX JIT-compiles on newer
# GPUs; `make check-cuda CUDA_COMPUTE_CAP=90` for Hopper's own code). Only a check:
# candle-core 0.11 links libcuda, cuBLAS, cuRAND and NVRTC, which come with the NVIDIA driver
# and ~700 MB of wheels. A check links nothing, so RocksDB's C++ is not needed either:
# ROCKSDB_LIB_DIR names an empty directory and librocksdb-sys skips compiling it. Without
# the fluvio feature (type-checked by `make test`) no aws-lc C is compiled either. Its own
# target directory keeps the kernels cached; the host-side features differ from the test
# build's, which would rebuild RocksDB in the shared one. CUDAFORGE_THREADS: candle-kernels'
# build runs its nvcc jobs on half the cores by default (one, on two).
CUDA_TARGET_DIR ?= $(HOME)/.cache/shelf/target-cuda
CUDA_COMPUTE_CAP ?= 80
check-cuda: export CUDAFORGE_THREADS ?= $(shell nproc)
check-cuda:
	mkdir -p $(CUDA_TARGET_DIR)/no-rocksdb
	CUDA_COMPUTE_CAP=$(CUDA_COMPUTE_CAP) CARGO_TARGET_DIR=$(CUDA_TARGET_DIR) \
	  ROCKSDB_LIB_DIR=$(CUDA_TARGET_DIR)/no-rocksdb scripts/cuda-toolkit.sh run -- \
	  cargo check --locked -p shelf-server --bin shelf -p shelf-embed --lib --tests --benches \
	  --features shelf-server/cuda

bench: model
	cargo bench -p shelf-embed --bench embed
	cargo bench -p shelf-index --bench index

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets $(FEATURES) -- -D warnings
	cargo fmt --manifest-path udfs/Cargo.toml --all --check
	cargo clippy --manifest-path udfs/Cargo.toml --workspace --all-targets -- -D warnings
