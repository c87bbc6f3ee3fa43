#!/usr/bin/env bash
# shelf's BERT forward pass against sentence-transformers on PyTorch: the same model files, the same
# texts, the same thread count and batch sizes, interleaved in one run so that machine noise
# hits both alike. Prints one JSON line per measurement and a table of sentences/s with the
# ratio shelf / PyTorch (the median of --rounds rounds).
#
#   scripts/embed-vs-pytorch.sh [--install] [--q8] [--threads 2] [--seconds 8] [--rounds 3]
#
#   --install   create the venv (sentence-transformers and torch from PyPI) if it is missing
#   --q8        also measure shelf with --quantize q8 (a third column)
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
threads=2 seconds=8 rounds=3 install=0 q8=0
while [ $# -gt 0 ]; do
  case "$1" in
    --install) install=1 ;;
    --q8) q8=1 ;;
    --threads) threads="$2"; shift ;;
    --seconds) seconds="$2"; shift ;;
    --rounds) rounds="$2"; shift ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
shelf="${SHELF_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/shelf}"
[ -x "$shelf" ] || { echo "no shelf binary at $shelf (cargo build --release -p shelf-server, or set SHELF_BIN)" >&2; exit 2; }
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
      RAYON_NUM_THREADS="$threads" "$shelf" bench embed --model-dir "$model" --texts "$texts" \
        --batch "$batch" --seconds "$seconds" | tee -a "$results"
      if [ "$q8" = 1 ]; then
        RAYON_NUM_THREADS="$threads" "$shelf" bench embed --model-dir "$model" --texts "$texts" \
          --batch "$batch" --seconds "$seconds" --quantize q8 | tee -a "$results"
      fi
      OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" "$venv/bin/python" "$work/st.py" \
        "$threads" "$model" "$work/$texts.txt" "$texts" "$batch" "$seconds" 2>/dev/null | tee -a "$results"
    done
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
engine = lambda r: r["engine"] + ("-q8" if r.get("quantize") == "q8" else "")
q8 = any(engine(r) == "shelf-q8" for r in rows)
extra_head, extra_rule = (" shelf q8 (sentences/s) | q8 / PyTorch |", "---|---|") if q8 else ("", "")
print(f"\n| texts | batch | shelf (sentences/s) | PyTorch (sentences/s) | shelf / PyTorch |{extra_head}")
print(f"|---|---|---|---|---|{extra_rule}")
for texts in ["queries", "titles", "descriptions"]:
    for batch in [1, 32]:
        med = lambda e: statistics.median(r["sentences_per_s"] for r in rows
                                          if engine(r) == e and r["texts"] == texts and r["batch"] == batch)
        s, p = med("shelf"), med("pytorch")
        line = f"| {texts} | {batch} | {s:.1f} | {p:.1f} | {s / p:.2f}x |"
        if q8:
            s8 = med("shelf-q8")
            line += f" {s8:.1f} | {s8 / p:.2f}x |"
        print(line)
PY
