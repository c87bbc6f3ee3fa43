#!/usr/bin/env bash
# Prints a Python interpreter that has numpy: python3 when it has one, else a virtual
# environment in shelf's cache ($SHELF_MODEL_CACHE/.python), made and filled on first use.
# Used by scripts/fetch-model.sh (the multilingual model's converter) and `make test`.
set -euo pipefail
if python3 -c 'import numpy' 2>/dev/null; then
  command -v python3
  exit 0
fi
cache="${SHELF_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/models}"
venv="$cache/.python"
if ! "$venv/bin/python" -c 'import numpy' 2>/dev/null; then
  echo "installing numpy into $venv ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy >&2
fi
echo "$venv/bin/python"
