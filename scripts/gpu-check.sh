#!/usr/bin/env bash
# The device check for a machine with an NVIDIA GPU, run with a `shelf` binary built here with
# `--features cuda` and the model files beside it (the device machine reaches no registry).
# Prints one JSON line per figure and finishes in under 5 minutes:
#   1. reference: `shelf embed --device D` on sentence-transformers' reference texts
#      (tests/fixtures/minilm_reference.json); every cosine must be >= 0.9999;
#   2. throughput: `shelf bench embed` on the GPU and on the CPU, same texts, batch 1 and 32;
#   3. search: `shelf serve --demo` on a small shop with the model on the device, then
#      `shelf bench search` (closed loop 1 and 8, open loop at 50 req/s).
# Exit status 1 when the reference check fails.
#
#   scripts/gpu-check.sh [--device cuda] [--bin PATH] [--model-dir DIR] [--seconds S]
#
#   --device D     the device under test (default cuda; `cpu` dry-runs the script anywhere)
#   --bin PATH     the shelf binary (default: target/release/shelf)
#   --model-dir D  the model directory (default: $SHELF_MODEL_DIR, else shelf's model cache)
#   --seconds S    seconds per throughput figure (default 5)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
device=cuda seconds=5
shelf="$root/target/release/shelf"
model="${SHELF_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shelf/models/all-MiniLM-L6-v2}"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift ;;
    --bin) shelf="$2"; shift ;;
    --model-dir) model="$2"; shift ;;
    --seconds) seconds="$2"; shift ;;
    *) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
[ -x "$shelf" ] || { echo "no shelf binary at $shelf (--bin)" >&2; exit 2; }
[ -f "$model/model.safetensors" ] || { echo "no model at $model (--model-dir)" >&2; exit 2; }
fixture="$root/tests/fixtures/minilm_reference.json"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
export SHELF_MODEL_DIR="$model"

# 1. The reference vectors.
python3 -c '
import json, sys
for item in json.load(open(sys.argv[1]))["items"]:
    print(json.dumps({"text": item["text"]}))' "$fixture" >"$work/texts.jsonl"
"$shelf" embed --device "$device" <"$work/texts.jsonl" >"$work/vectors.jsonl"
reference_ok=0
python3 - "$fixture" "$work/vectors.jsonl" "$device" <<'PY' || reference_ok=1
import json, math, sys
ref = json.load(open(sys.argv[1]))["items"]
got = [json.loads(l) for l in open(sys.argv[2])]
cos = lambda a, b: sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
cosines = [cos(r["embedding"], g["vector"]) for r, g in zip(ref, got)]
ok = len(got) == len(ref) and min(cosines) >= 0.9999
print(json.dumps({"check": "reference", "device": sys.argv[3], "texts": len(got),
                  "lowest_cosine": round(min(cosines), 7), "pass": ok}))
sys.exit(0 if ok else 1)
PY

# 2. Throughput, the device against the CPU.
for texts in queries titles descriptions; do
  for on in "$device" cpu; do
    "$shelf" bench embed --device "$on" --texts "$texts" --batch 1,32 --seconds "$seconds" |
      sed 's/^{/{"check":"throughput",/'
  done
done

# 3. Search latency on a small demo shop with the model on the device.
port=$((20000 + RANDOM % 20000))
"$shelf" serve --demo --demo-items 5000 --device "$device" \
  --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 240); do
  if python3 -c 'import json, sys, urllib.request
r = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))
sys.exit(0 if r.get("status") == "ready" else 1)' "http://127.0.0.1:$port/ready" 2>/dev/null; then break; fi
  kill -0 "$server_pid" 2>/dev/null || { tail -20 "$work/serve.log" >&2; exit 1; }
  sleep 0.5
done
"$shelf" bench search --url "http://127.0.0.1:$port" --concurrency 1,8 --rate 50 --seconds 15 |
  sed "s/^{/{\"check\":\"search\",\"device\":\"$device\",/"
exit "$reference_ok"
