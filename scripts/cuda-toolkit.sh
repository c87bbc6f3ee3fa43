#!/usr/bin/env bash
# A CUDA toolkit from NVIDIA's PyPI wheels, for building shelf's `cuda` feature on a machine
# without a system CUDA install (CI, containers). It holds nvcc, the CUDA headers and
# libcudart: what candle-kernels' build script and cudarc's need. It has no driver: binaries
# built with it run their CUDA paths only where an NVIDIA driver is installed.
#
#   scripts/cuda-toolkit.sh install        install the wheels into PREFIX (once; cached)
#   scripts/cuda-toolkit.sh env            print the exports that put the toolkit in use
#   scripts/cuda-toolkit.sh run -- CMD...  install if needed, run CMD with those exports
#
# Environment:
#   SHELF_CUDA_PREFIX  where the wheels are unpacked (default ~/.cache/shelf/cuda-13.4)
#   CUDA_COMPUTE_CAP   the GPU architecture candle's kernels are compiled for (default 80:
#                      Ampere machine code; the PTX kernels JIT-compile on newer GPUs)
#
# The toolkit is CUDA 13.4: cudarc 0.19.10 (candle 0.11's) rejects 13.5 at build time
# ("Unsupported cuda toolkit version"), and the CUDA 12 nvcc wheel lacks the nvcc driver.
set -euo pipefail

prefix="${SHELF_CUDA_PREFIX:-$HOME/.cache/shelf/cuda-13.4}"
toolkit="$prefix/nvidia/cu13"
# Pinned so that every machine builds with the same compiler; cccl's 13.4 wheel is numbered
# 13.3.5 upstream.
wheels=(
  nvidia-cuda-nvcc==13.4.92
  nvidia-cuda-crt==13.4.92
  nvidia-cuda-runtime==13.4.92
  nvidia-nvvm==13.4.92
  nvidia-cuda-cccl==13.3.5.0.6
)

install() {
  if [ -x "$toolkit/bin/nvcc" ] && [ -f "$prefix/.complete" ]; then
    return
  fi
  echo "cuda-toolkit: installing ${wheels[*]} into $prefix" >&2
  rm -rf "$prefix"
  mkdir -p "$prefix"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps --target "$prefix" \
    "${wheels[@]}" >&2
  # The linker looks for the unversioned name; the wheel carries only libcudart.so.13.
  ln -sf libcudart.so.13 "$toolkit/lib/libcudart.so"
  "$toolkit/bin/nvcc" --version >/dev/null
  touch "$prefix/.complete"
}

print_env() {
  cat <<EOF
export CUDA_HOME="$toolkit"
export CUDA_PATH="$toolkit"
export PATH="$toolkit/bin:\$PATH"
export LIBRARY_PATH="$toolkit/lib\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$toolkit/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
EOF
}

case "${1:-}" in
  install) install ;;
  env) print_env ;;
  run)
    shift
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || { echo "usage: $0 run -- CMD..." >&2; exit 2; }
    install
    eval "$(print_env)"
    echo "cuda-toolkit: $(nvcc --version | tail -2 | head -1), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP" >&2
    exec "$@"
    ;;
  *)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
