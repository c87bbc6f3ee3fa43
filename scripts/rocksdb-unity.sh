#!/usr/bin/env bash
# Builds the RocksDB that the `rocksdb` crate bundles as a unity build (its C++ sources
# #included into one translation unit per core) for dev and test builds, and prints the
# directory of the static library. Use it as CI does:
#
#   dir="$(scripts/rocksdb-unity.sh)" && export ROCKSDB_LIB_DIR="$dir" ROCKSDB_STATIC=1
#
# librocksdb-sys then links that library instead of compiling ~340 C++ files one by one:
# each of them parses most of RocksDB's headers again, so a unity build compiles the same
# code in a fraction of the CPU time (2 cores, clang -O0: ~1.5 CPU-minutes against ~16).
# RocksDB supports this build itself (its Makefile's `unity.a`, built by its pull-request CI).
#
# The library mirrors what librocksdb-sys's build.rs compiles on Linux for the features
# shelf enables (lz4 only; any other compression, jemalloc, io-uring, RTTI or LTO is
# refused): the same sources, defines, C++ standard and CPU flags, at -O0 without debug
# info, like the dev profile's `librocksdb-sys` (Cargo.toml). By default it is for tests:
# never export the -O0 library for a release build, whose RocksDB the crate compiles at -O3
# (`make run` and `make bench` unset both variables). ROCKSDB_UNITY_OPT=3 builds the same
# library at -O3 (a few CPU-minutes against ~22 minutes of the crate's build), for a release
# build that measures something where that time counts; the release figures in
# docs/performance.md say which RocksDB build they ran on.
#
# The result is cached by content (crate version, compiler, flags, sources, this script) under
# $CARGO_TARGET_DIR/rocksdb-unity/, so a second run prints the path at once.
# Environment: CXX (default clang++), CARGO_TARGET_DIR (default ~/.cache/shelf/target),
# ROCKSDB_UNITY_JOBS (translation units compiled in parallel; default: the number of cores),
# ROCKSDB_UNITY_OPT (the optimisation level, 0 to 3; default 0).
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

die() { echo "rocksdb-unity: $*" >&2; exit 1; }

[ "$(uname -s)" = Linux ] || die "only Linux is supported; unset ROCKSDB_LIB_DIR to use the bundled build"
CXX="${CXX:-clang++}"
command -v "$CXX" >/dev/null || die "C++ compiler '$CXX' not found"
TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shelf/target}"
mkdir -p "$TARGET_DIR"
TARGET_DIR="$(cd "$TARGET_DIR" && pwd)"  # rustc resolves ROCKSDB_LIB_DIR from elsewhere
JOBS="${ROCKSDB_UNITY_JOBS:-$(nproc)}"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "ROCKSDB_UNITY_JOBS must be a positive integer, got '$JOBS'"
OPT="${ROCKSDB_UNITY_OPT:-0}"
[[ "$OPT" =~ ^[0-3]$ ]] || die "ROCKSDB_UNITY_OPT must be 0, 1, 2 or 3, got '$OPT'"

# Where cargo unpacked librocksdb-sys and lz4-sys, and the features the workspace turns on.
read -r ROCKSDB_VERSION ROCKSDB_DIR LZ4_DIR FEATURES < <(
  cargo metadata --format-version 1 --locked \
    --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
packages = {p["id"]: p for p in meta["packages"]}
found = {}
for node in meta["resolve"]["nodes"]:
    p = packages[node["id"]]
    if p["name"] in ("librocksdb-sys", "lz4-sys"):
        found[p["name"]] = (p["version"], os.path.dirname(p["manifest_path"]), node["features"])
if set(found) != {"librocksdb-sys", "lz4-sys"}:
    sys.exit("librocksdb-sys or lz4-sys is not in the dependency graph")
version, rocksdb_dir, features = found["librocksdb-sys"]
print(version, rocksdb_dir, found["lz4-sys"][1], ",".join(sorted(features)))
')
for feature in ${FEATURES//,/ }; do
  case "$feature" in
    lz4 | lz4-sys | static | bindgen-runtime | bindgen-static) ;;
    *) die "librocksdb-sys feature '$feature' changes what its build.rs compiles; this script mirrors lz4 only" ;;
  esac
done
[ -f "$ROCKSDB_DIR/rocksdb_lib_sources.txt" ] || die "no rocksdb_lib_sources.txt in $ROCKSDB_DIR"
LZ4_INCLUDE="$LZ4_DIR/liblz4/lib"
[ -f "$LZ4_INCLUDE/lz4.h" ] || die "no lz4.h in $LZ4_INCLUDE"

# The CPU flags build.rs passes for the target features rustc enables (RUSTFLAGS included).
# shellcheck disable=SC2086
TARGET_FEATURES="$(rustc --print cfg ${RUSTFLAGS:-} | sed -n 's/^target_feature="\(.*\)"$/\1/p')"
ARCH="$(uname -m)"
CPU_FLAGS=()
has() { grep -qx "$1" <<<"$TARGET_FEATURES"; }
case "$ARCH" in
  x86_64)
    has sse2 && CPU_FLAGS+=(-msse2)
    has sse4.1 && CPU_FLAGS+=(-msse4.1)
    has sse4.2 && CPU_FLAGS+=(-msse4.2)
    has avx2 && CPU_FLAGS+=(-mavx2)
    has bmi1 && CPU_FLAGS+=(-mbmi)
    has lzcnt && CPU_FLAGS+=(-mlzcnt)
    has pclmulqdq && CPU_FLAGS+=(-mpclmul)
    CPU_FLAGS+=(-m64)
    ;;
  aarch64)
    has crc && has aes && CPU_FLAGS+=(-march=armv8-a+crc+aes+crypto)
    ;;
  *) die "architecture $ARCH is not mirrored; unset ROCKSDB_LIB_DIR to use the bundled build" ;;
esac

FLAGS=(
  "-O$OPT" -w -ffunction-sections -fdata-sections -fPIC "${CPU_FLAGS[@]}"
  -std=c++20 -include cstdint
  -I"$ROCKSDB_DIR/rocksdb/include" -I"$ROCKSDB_DIR/rocksdb" -I"$ROCKSDB_DIR"
  -I"$ROCKSDB_DIR/rocksdb/third-party/gtest-1.8.1/fused-src" -I"$LZ4_INCLUDE"
  -DLZ4=1 -DNDEBUG=1 -DHAVE_ALIGNED_NEW -DHAVE_UINT128_EXTENSION
  -DOS_LINUX -DROCKSDB_PLATFORM_POSIX -DROCKSDB_LIB_IO_POSIX -DROCKSDB_SCHED_GETCPU_PRESENT
  -DROCKSDB_AUXV_GETAUXVAL_PRESENT -DROCKSDB_FALLOCATE_PRESENT -DROCKSDB_RANGESYNC_PRESENT
)

# The crate's own source list, less util/build_version.cc, plus its pre-generated
# build_version.cc: exactly build.rs's list.
SOURCES="$(
  grep -v '^[[:space:]]*$' "$ROCKSDB_DIR/rocksdb_lib_sources.txt" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' \
    | grep -vx 'util/build_version.cc' | sed "s|^|$ROCKSDB_DIR/rocksdb/|"
  echo "$ROCKSDB_DIR/build_version.cc"
)"

# Cached by content: the crate, the compiler, the flags, the sources and this script.
KEY="$( {
  echo "$ROCKSDB_VERSION $FEATURES $JOBS"
  "$CXX" --version
  printf '%s\n' "${FLAGS[@]}"
  echo "$SOURCES"
  cat "$SELF"
} | sha256sum | cut -c1-16)"
OUT="$TARGET_DIR/rocksdb-unity/$ROCKSDB_VERSION-$KEY"
if [ -f "$OUT/librocksdb.a" ]; then
  echo "$OUT"
  exit 0
fi

# The sources dealt round-robin into $JOBS units.
WORK="$(mktemp -d "$TARGET_DIR/rocksdb-unity.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "$SOURCES" >"$WORK/sources.txt"
count=$(wc -l <"$WORK/sources.txt")
awk -v jobs="$JOBS" -v dir="$WORK" \
  '{ printf "#include \"%s\"\n", $0 > (dir "/unity" (NR - 1) % jobs ".cc") }' "$WORK/sources.txt"

echo "rocksdb-unity: compiling RocksDB $ROCKSDB_VERSION ($count files) as $JOBS unity units with $CXX" >&2
start=$SECONDS
pids=()
for unit in "$WORK"/unity*.cc; do
  "$CXX" "${FLAGS[@]}" -c "$unit" -o "${unit%.cc}.o" 2>"${unit%.cc}.log" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if [ $failed != 0 ]; then
  cat "$WORK"/unity*.log >&2
  die "compiling a unity unit failed (above); unset ROCKSDB_LIB_DIR to use the bundled build"
fi
ar crs "$WORK/librocksdb.a" "$WORK"/unity*.o
# A rename within one file system: a concurrent run sees the whole library or none.
mkdir -p "$OUT"
mv "$WORK/librocksdb.a" "$OUT/librocksdb.a"
echo "rocksdb-unity: built $OUT/librocksdb.a in $((SECONDS - start)) s" >&2
echo "$OUT"
