# The two commands of the README, and the models they need.
#   make run    starts shelf's main job: the HTTP API with the demo shop (shelf serve --demo),
#               with the model MODEL (default all-MiniLM-L6-v2; multilingual-e5-small for
#               ~100 languages), fetched first when missing, in DEMO_LANGUAGE (en, or zh:
#               `make run MODEL=multilingual-e5-small DEMO_LANGUAGE=zh`)
#   make test   fetches both models if missing, then runs the converter's tests (Python), every
#               test of the workspace (built with the Fluvio client), the Fluvio tests against a
#               local SC + SPU started by scripts/fluvio-local.sh (skipped with a message where
#               fluvio-run is missing, except under CI=true); the Arroyo UDFs' tests (udfs/)
#               are workspace members
export CARGO_TARGET_DIR ?= $(HOME)/.cache/shelf/target
FEATURES := --features shelf/fluvio

MODEL ?= all-MiniLM-L6-v2
DEMO_LANGUAGE ?= en

.PHONY: model test-models run test check-cuda bench lint

model:
	scripts/fetch-model.sh $(MODEL)

test-models:
	scripts/fetch-model.sh all-MiniLM-L6-v2
	scripts/fetch-model.sh multilingual-e5-small

# `env -u`: a shell that shares CI's target directory may export ROCKSDB_LIB_DIR (see
# scripts/rocksdb-unity.sh); release builds compile RocksDB the crate's way, at -O3.
run: model
	env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC cargo run --release -p shelf --bin shelf -- serve --demo --model-name $(MODEL) \
	  --demo-language $(DEMO_LANGUAGE)

test: test-models
	"$$(scripts/python-numpy.sh)" -m unittest discover -s scripts -p 'test_*.py'
	cargo test --workspace --all-targets $(FEATURES)
	cargo test --workspace --doc $(FEATURES)
	scripts/fluvio-local.sh run -- cargo test --workspace $(FEATURES) --test it -- --ignored --test-threads 1 fluvio::

# The `cuda` build, type-checked on a machine without a GPU or a system CUDA install
# (scripts/cuda-toolkit.sh brings nvcc 13.4 from PyPI): every target of shelf-embed, the one
# crate with CUDA code (its lib, tests and benches), with candle's CUDA backend and its
# kernels compiled for one architecture, CUDA_COMPUTE_CAP (default 80, Ampere: the PTX
# JIT-compiles on newer GPUs; `make check-cuda CUDA_COMPUTE_CAP=90` for Hopper's own code).
# The binary's `cuda` feature only passes through to shelf-embed's: `cargo tree` checks that
# chain without compiling the rest of the binary again. Only a check: candle-core 0.11 links
# libcuda, cuBLAS, cuRAND and NVRTC, which come with the NVIDIA driver and ~700 MB of wheels.
# Its own target directory keeps the kernels cached. CUDAFORGE_THREADS: candle-kernels'
# build runs its nvcc jobs on half the cores by default (one, on two). NVCC: the static
# library of mixture-of-experts kernels that candle-kernels also builds is never linked by a
# check, so scripts/nvcc-check compiles it with the device optimisers mostly off (cold, that library
# was ~40 of this check's 45 minutes on 2 cores). cudaforge does not record which nvcc built
# an object: never point a GPU build's CARGO_TARGET_DIR at $(CUDA_TARGET_DIR).
CUDA_TARGET_DIR ?= $(HOME)/.cache/shelf/target-cuda
CUDA_COMPUTE_CAP ?= 80
check-cuda: export CUDAFORGE_THREADS ?= $(shell nproc)
check-cuda:
	cargo tree --locked -p shelf --features cuda -e features -i candle-core \
	  | grep -q 'candle-core feature "cuda"' \
	  || { echo "shelf's cuda feature does not reach candle-core's" >&2; exit 1; }
	mkdir -p $(CUDA_TARGET_DIR)/nvcc-check/bin
	cp scripts/nvcc-check $(CUDA_TARGET_DIR)/nvcc-check/bin/nvcc
	CUDA_COMPUTE_CAP=$(CUDA_COMPUTE_CAP) CARGO_TARGET_DIR=$(CUDA_TARGET_DIR) \
	  NVCC=$(CUDA_TARGET_DIR)/nvcc-check/bin/nvcc \
	  scripts/cuda-toolkit.sh run -- sh -c \
	  'ln -sfn "$$CUDA_HOME/include" $(CUDA_TARGET_DIR)/nvcc-check/include \
	  && exec cargo check --locked -p shelf-embed --all-targets --features cuda'

bench: model
	env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC cargo bench -p shelf-embed --bench embed
	env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC cargo bench -p shelf-index --bench index
	env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC cargo bench -p shelf-rank --bench rank

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets $(FEATURES) -- -D warnings
