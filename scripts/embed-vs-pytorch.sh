#!/usr/bin/env bash
# shelf's BERT forward pass against sentence-transformers on PyTorch: the same model files, the same
# texts, the same thread count and batch sizes, interleaved in one run so that machine noise
# hits both alike. Prints one JSON line per measurement and a table of sentences/s with the
# ratio shelf / PyTorch (the median of --rounds rounds).
#
#   scripts/embed-vs-pytorch.sh [--install] [--f32] [--q8] [--threads 2] [--seconds 8] [--rounds 3]
#
#   --install   create the venv (sentence-transformers and torch from PyPI) if it is missing
#   --f32       also measure shelf with --quantize none (f32 weights; the default, auto, holds
#               them as f16 on CPUs that widen half floats in their vector registers)
#   --q8        also measure shelf with --quantize q8
#   --threads N threads for both engines (RAYON_NUM_THREADS for candle, torch.set_num_threads
#               and OMP/MKL threads for PyTorch); default 2
#   --seconds S seconds per measurement; default 8
#   --rounds R  rounds of the whole interleaved sequence; default 3
#
# Environment:
#   SHELF_BIN         the shelf binary (default: ${CARGO_TARGET_DIR:-target}/release/shelf)
#   SHELF_ST_VENV     the venv with sentence-transformers (default: ~/.cache/shelf/venv-st)
#   SHELF_MODEL_DIR   the model directory both engines load (default: shelf's model cache)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
threads=2 seconds=8 rounds=3 install=0 extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --install) install=1 ;;
    --f32) extra+=(none) ;;
    --q8) extra+=(q8) ;;
    --threads) threads="$2"; shift ;;
    --seconds) seconds="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
shelf="${SHELF_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/shelf}"
[ -x "$shelf" ] || { echo "no shelf binary at $shelf (cargo build --release -p shelf, or set SHELF_BIN)" >&2; exit 2; }
venv="${SHELF_ST_VENV:-$HOME/.cache/shelf/venv-st}"
model="${SHELF_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/models/all-MiniLM-L6-v2}"
[ -f "$model/config.json" ] || { echo "no model at $model (scripts/fetch-model.sh)" >&2; exit 2; }
if [ ! -x "$venv/bin/python" ]; then
  if [ "$install" = 1 ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q sentence-transformers
  else
    echo "no venv at $venv: run with --install (downloads sentence-transformers and torch, ~3 GB)" >&2
    exit 2
  fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for texts in queries titles descriptions; do
  "$shelf" bench embed --texts "$texts" --print-texts >"$work/$texts.txt"
done

cat >"$work/st.py" <<'PY'
import json, sys, time
threads, model, texts_file, kind, batch, seconds = sys.argv[1:7]
threads, batch, seconds = int(threads), int(batch), float(seconds)
import torch
torch.set_num_threads(threads)
from sentence_transformers import SentenceTransformer
texts = [l.rstrip("\n") for l in open(texts_file) if l.strip()]
st = SentenceTransformer(model, device="cpu")
chunk = lambda i: [texts[(i * batch + j) % len(texts)] for j in range(batch)]
st.encode(chunk(0), batch_size=batch, normalize_embeddings=True)  # warm-up
n, i, start = 0, 1, time.perf_counter()
while time.perf_counter() - start < seconds:
    n += len(st.encode(chunk(i), batch_size=batch, normalize_embeddings=True))
    i += 1
elapsed = time.perf_counter() - start
print(json.dumps({"bench": "embed", "engine": "pytorch", "texts": kind, "batch": batch,
                  "sentences": n, "seconds": round(elapsed, 3),
                  "sentences_per_s": round(n / elapsed, 3), "threads": threads,
                  "torch": torch.__version__}))
PY

results="$work/results.jsonl"
for round in $(seq "$rounds"); do
  for texts in queries titles descriptions; do
    for batch in 1 32; do
      # Each shelf line is labelled with the setting asked for (its own "quantize" field
      # says what `auto` resolved to).
      for quantize in auto "${extra[@]}"; do
        RAYON_NUM_THREADS="$threads" "$shelf" bench embed --model-dir "$model" --texts "$texts" \
          --batch "$batch" --seconds "$seconds" --quantize "$quantize" \
          | sed "s/^{/{\"setting\":\"$quantize\",/" | tee -a "$results"
      done
      OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" "$venv/bin/python" "$work/st.py" \
        "$threads" "$model" "$work/$texts.txt" "$texts" "$batch" "$seconds" 2>/dev/null | tee -a "$results"
    done
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
engine = lambda r: "pytorch" if r["engine"] == "pytorch" else "shelf-" + r["setting"]
extras = sorted({engine(r) for r in rows} - {"pytorch", "shelf-auto"})
default = next(r["quantize"] for r in rows if engine(r) == "shelf-auto")
head = f"| texts | batch | shelf, auto = {default} (sentences/s) | PyTorch (sentences/s) | shelf / PyTorch |"
rule = "|---|---|---|---|---|"
for e in extras:
    head += f" {e} | {e} / PyTorch |"
    rule += "---|---|"
print("\n" + head + "\n" + rule)
for texts in ["queries", "titles", "descriptions"]:
    for batch in [1, 32]:
        med = lambda e: statistics.median(r["sentences_per_s"] for r in rows
                                          if engine(r) == e and r["texts"] == texts and r["batch"] == batch)
        s, p = med("shelf-auto"), med("pytorch")
        line = f"| {texts} | {batch} | {s:.1f} | {p:.1f} | {s / p:.2f}x |"
        for e in extras:
            x = med(e)
            line += f" {x:.1f} | {x / p:.2f}x |"
        print(line)
PY
