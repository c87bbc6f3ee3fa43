#!/usr/bin/env bash
# A one-SPU local Fluvio cluster from fluvio-run (Fluvio 0.18.1's SC and SPU in one binary),
# for shelf's Fluvio tests and for trying `shelf serve --source fluvio` by hand.
#
#   scripts/fluvio-local.sh start  [DIR]   start the SC and the SPU with their data under DIR,
#                                          register the SPU, create shelf's topics, write one
#                                          record, then print SHELF_FLUVIO_ENDPOINT=HOST:PORT
#   scripts/fluvio-local.sh status [DIR]   say whether both run, and the endpoint
#   scripts/fluvio-local.sh stop   [DIR]   stop both by their process ids
#   scripts/fluvio-local.sh restart-spu [DIR] [SECS]
#                                          stop the SPU, wait SECS (3), start it again
#   scripts/fluvio-local.sh run -- CMD...  start in a temporary DIR, run CMD with
#                                          SHELF_FLUVIO_ENDPOINT (and SHELF_FLUVIO_LOCAL_DIR)
#                                          set, stop (also when CMD fails), exit with
#                                          CMD's status
#
# DIR defaults to ${TMPDIR:-/tmp}/shelf-fluvio-local. Ports are chosen free, so two clusters
# on one machine do not collide.
#
# Environment:
#   SHELF_FLUVIO_RUN  the fluvio-run binary (default: ../shared/bin/fluvio-run beside the
#                     clone, then fluvio-run on PATH)
#   SHELF_BIN         a shelf binary built with the `fluvio` feature, used to register the SPU,
#                     create the topics and write the probe record (default:
#                     ${CARGO_TARGET_DIR:-target}/debug/shelf)
#   SHELF_FLUVIO_LOCAL_PARTITIONS
#                     partitions of each shelf topic created (default 2, so the tests see
#                     more than one partition)
#   CI                when `true`, `run` fails if fluvio-run is missing instead of skipping
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

find_fluvio_run() {
  if [ -n "${SHELF_FLUVIO_RUN:-}" ]; then
    echo "$SHELF_FLUVIO_RUN"
  elif [ -x "$root/../shared/bin/fluvio-run" ]; then
    echo "$root/../shared/bin/fluvio-run"
  else
    command -v fluvio-run || true
  fi
}

shelf_bin() {
  echo "${SHELF_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/shelf}"
}

free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Starts the SPU with the arguments `start` saved in DIR/spu.cmd (one per line).
start_spu() {
  local dir="$1"
  local -a cmd
  mapfile -t cmd <"$dir/spu.cmd"
  setsid "${cmd[@]}" >>"$dir/spu.log" 2>&1 </dev/null &
  echo $! >"$dir/spu.pid"
}

# Stops the SPU, waits SECS, starts it again on the same ports and log directory.
restart_spu() {
  local dir="$1" secs="$2" pid
  alive "$dir/spu.pid" || { echo "no SPU runs from $dir" >&2; return 1; }
  pid="$(cat "$dir/spu.pid")"
  kill -TERM "$pid"
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  echo "stopped spu ($pid); starting it again in $secs s" >&2
  sleep "$secs"
  start_spu "$dir"
  echo "started spu ($(cat "$dir/spu.pid"))" >&2
}

start() {
  local dir="$1"
  local fluvio_run
  fluvio_run="$(find_fluvio_run)"
  if [ -z "$fluvio_run" ] || [ ! -x "$fluvio_run" ]; then
    echo "fluvio-run not found: set SHELF_FLUVIO_RUN or put it at ../shared/bin/fluvio-run" >&2
    return 2
  fi
  local shelf
  shelf="$(shelf_bin)"
  if [ ! -x "$shelf" ]; then
    echo "no shelf binary at $shelf: build it (cargo build -p shelf --features fluvio) or set SHELF_BIN" >&2
    return 2
  fi
  if alive "$dir/sc.pid" || alive "$dir/spu.pid"; then
    echo "a cluster already runs from $dir (scripts/fluvio-local.sh stop $dir)" >&2
    return 1
  fi
  rm -rf "$dir/meta" "$dir/spu" "$dir/spu.log"
  mkdir -p "$dir"
  local sc_public sc_private spu_public spu_private
  read -r sc_public sc_private spu_public spu_private <<<"$(free_ports 4)"
  local spu_id=5001
  setsid "$fluvio_run" sc --local "$dir/meta" \
    --bind-public "127.0.0.1:$sc_public" --bind-private "127.0.0.1:$sc_private" \
    >"$dir/sc.log" 2>&1 </dev/null &
  echo $! >"$dir/sc.pid"
  printf '%s\n' "$fluvio_run" spu -i "$spu_id" -p "127.0.0.1:$spu_public" \
    -v "127.0.0.1:$spu_private" --sc-addr "127.0.0.1:$sc_private" \
    --log-base-dir "$dir/spu" >"$dir/spu.cmd"
  start_spu "$dir"
  local endpoint="127.0.0.1:$sc_public"
  echo "$endpoint" >"$dir/endpoint"

  # Register the SPU and create the topics, retrying while the SC comes up.
  local deadline=$((SECONDS + 90))
  until "$shelf" deploy --skip-pipelines --fluvio-endpoint "$endpoint" --wait-secs 10 \
      --partitions "${SHELF_FLUVIO_LOCAL_PARTITIONS:-2}" \
      --spu-id "$spu_id" --spu-public "127.0.0.1:$spu_public" \
      --spu-private "127.0.0.1:$spu_private" >"$dir/deploy.log" 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! alive "$dir/sc.pid" || ! alive "$dir/spu.pid"; then
      echo "the local Fluvio cluster did not come up; logs in $dir (sc.log, spu.log, deploy.log):" >&2
      tail -n 20 "$dir/deploy.log" "$dir/sc.log" "$dir/spu.log" >&2 || true
      stop "$dir" >/dev/null 2>&1 || true
      return 1
    fi
    sleep 1
  done
  # A topic is written once the SPU hosts its partition: write a delete of an item that
  # does not exist (a no-op for every consumer) until it is acknowledged.
  printf '{"op":"delete","id":"fluvio-local-probe"}\n' >"$dir/probe.jsonl"
  until "$shelf" ingest items "$dir/probe.jsonl" --to fluvio --fluvio-endpoint "$endpoint" \
      >"$dir/probe.log" 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "the local Fluvio cluster does not accept writes; logs in $dir:" >&2
      tail -n 20 "$dir/probe.log" "$dir/spu.log" >&2 || true
      stop "$dir" >/dev/null 2>&1 || true
      return 1
    fi
    sleep 1
  done
  echo "SHELF_FLUVIO_ENDPOINT=$endpoint"
}

stop() {
  local dir="$1" pid
  for name in spu sc; do
    if alive "$dir/$name.pid"; then
      pid="$(cat "$dir/$name.pid")"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
      done
      kill -KILL "$pid" 2>/dev/null || true
      echo "stopped $name ($pid)"
    fi
    rm -f "$dir/$name.pid"
  done
}

status() {
  local dir="$1" up=0
  for name in sc spu; do
    if alive "$dir/$name.pid"; then
      echo "$name: running ($(cat "$dir/$name.pid"))"
      up=$((up + 1))
    else
      echo "$name: not running"
    fi
  done
  [ -f "$dir/endpoint" ] && [ $up -eq 2 ] && echo "SHELF_FLUVIO_ENDPOINT=$(cat "$dir/endpoint")"
  [ $up -eq 2 ]
}

run() {
  if [ -z "$(find_fluvio_run)" ]; then
    if [ "${CI:-}" = "true" ]; then
      echo "fluvio-run not found, and CI must run the Fluvio tests" >&2
      return 2
    fi
    echo "fluvio-run not found (set SHELF_FLUVIO_RUN): skipping: $*" >&2
    return 0
  fi
  # Global: the EXIT trap runs after this function's locals are gone.
  run_dir="$(mktemp -d "${TMPDIR:-/tmp}/shelf-fluvio-XXXXXX")"
  trap 'stop "$run_dir" >/dev/null 2>&1; rm -rf "$run_dir"' EXIT
  local line
  line="$(start "$run_dir")"
  export "${line?}"
  export SHELF_FLUVIO_LOCAL_DIR="$run_dir"
  echo "local Fluvio cluster at $SHELF_FLUVIO_ENDPOINT" >&2
  local status=0
  "$@" || status=$?
  return $status
}

command="${1:-}"
shift || true
case "$command" in
  start) start "${1:-${TMPDIR:-/tmp}/shelf-fluvio-local}" ;;
  stop) stop "${1:-${TMPDIR:-/tmp}/shelf-fluvio-local}" ;;
  status) status "${1:-${TMPDIR:-/tmp}/shelf-fluvio-local}" ;;
  restart-spu) restart_spu "${1:-${TMPDIR:-/tmp}/shelf-fluvio-local}" "${2:-3}" ;;
  run)
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || { echo "usage: scripts/fluvio-local.sh run -- CMD..." >&2; exit 2; }
    run "$@"
    ;;
  *)
    sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
