#!/usr/bin/env bash
# shelf's own graph, hnsw_rs and hnswlib on the same vector files in one run, with the same
# settings, printed as one side-by-side table (and the raw JSON lines under $OUT).
#
#   scripts/index-bench.sh BASE QUERIES [FILTER_SELECTIVITIES]
#
#   BASE, QUERIES           .npy (float32, 2-D) or .fvecs files
#   FILTER_SELECTIVITIES    e.g. 0.01,0.1,0.5: also run shelf's filtered searches
#
# Environment: M (16), EF_CONSTRUCTION (200), EF (16,32,64,128,256), OUT (a temp dir),
# PYTHON (python3; hnswlib and numpy are installed into a venv under the cache dir when
# missing). Builds use every core, searches one thread. Run on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

base="${1:?usage: scripts/index-bench.sh BASE QUERIES [FILTER_SELECTIVITIES]}"
queries="${2:?usage: scripts/index-bench.sh BASE QUERIES [FILTER_SELECTIVITIES]}"
filters="${3:-}"
m="${M:-16}"
efc="${EF_CONSTRUCTION:-200}"
ef="${EF:-16,32,64,128,256}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"

python="${PYTHON:-python3}"
if ! "$python" -c "import hnswlib, numpy" 2>/dev/null; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/shelf/venv-hnswlib"
  if [ ! -x "$venv/bin/python" ]; then
    echo "installing hnswlib and numpy into $venv ..." >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check hnswlib numpy
  fi
  python="$venv/bin/python"
fi

echo "building shelf-index-bench (release) ..." >&2
cargo build --quiet --release -p shelf-index --bin shelf-index-bench
bench="${CARGO_TARGET_DIR:-target}/release/shelf-index-bench"

common=(--base "$base" --queries "$queries" --m "$m" --ef-construction "$efc" --ef "$ef")
for backend in shelf hnsw_rs; do
  echo "== $backend" >&2
  "$bench" "${common[@]}" --index-backend "$backend" --snapshot-dir "$out/snapshot-$backend" \
    | tee -a "$out/results.jsonl"
  rm -rf "$out/snapshot-$backend"
done
echo "== hnswlib" >&2
"$python" scripts/hnswlib-bench.py "${common[@]}" | tee -a "$out/results.jsonl"
if [ -n "$filters" ]; then
  echo "== shelf, filtered" >&2
  "$bench" "${common[@]}" --index-backend shelf --filter-selectivity "$filters" \
    | tee -a "$out/results.jsonl"
fi

"$python" - "$out/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
plain = [r for r in rows if "ef" in r and "selectivity" not in r]
snapshots = [r for r in rows if "restore_s" in r]
filtered = [r for r in rows if "selectivity" in r]
indexes = list(dict.fromkeys(r["index"] for r in plain))
build = {r["index"]: (r["build_s"], r["memory_bytes"]) for r in plain}
print()
print("| index | build s | memory MiB | " + " | ".join(f"ef {r['ef']}" for r in plain if r["index"] == indexes[0]) + " |")
print("|---|---|---|" + "---|" * len([r for r in plain if r["index"] == indexes[0]]))
for name in indexes:
    cells = [f"{r['qps']:,.0f} QPS, recall {r['recall_at_10']:.3f}" for r in plain if r["index"] == name]
    b, mem = build[name]
    print(f"| {name} | {b:.1f} | {mem / 2**20:.0f} | " + " | ".join(cells) + " |")
ref = {r["ef"]: r for r in plain if r["index"] == "hnswlib"}
if ref:
    print()
    print("Ratios to hnswlib (QPS at the same ef; build time; memory):")
    for name in indexes:
        if name == "hnswlib":
            continue
        ratios = [f"ef {r['ef']}: {r['qps'] / ref[r['ef']]['qps']:.2f}x" for r in plain if r["index"] == name and r["ef"] in ref]
        b, mem = build[name]
        hb, hm = build["hnswlib"]
        print(f"- {name}: " + ", ".join(ratios) + f"; build {b / hb:.2f}x; memory {mem / max(hm, 1):.2f}x")
if snapshots:
    print()
    for r in snapshots:
        print(f"- {r['index']}: snapshot of {r['live']:,} items written in {r['snapshot_s']:.1f} s, restored in {r['restore_s']:.1f} s")
if filtered:
    print()
    print("| selectivity | " + " | ".join(f"ef {r['ef']}" for r in filtered if r["selectivity"] == filtered[0]["selectivity"]) + " |")
    print("|---|" + "---|" * len([r for r in filtered if r["selectivity"] == filtered[0]["selectivity"]]))
    for s in dict.fromkeys(r["selectivity"] for r in filtered):
        cells = [f"{r['qps']:,.0f} QPS, recall {r['recall_at_10']:.3f}" for r in filtered if r["selectivity"] == s]
        print(f"| {s:g} | " + " | ".join(cells) + " |")
PY
echo "raw results: $out/results.jsonl" >&2
