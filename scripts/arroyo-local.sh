#!/usr/bin/env bash
# Builds Arroyo 0.15.0's `arroyo` binary (headless: no web UI, no Python UDFs) from the
# source tarball in ../shared/src, for shelf's Arroyo work.
#
#   scripts/arroyo-local.sh build         install what the build needs (Debian packages,
#                                         refinery_cli), unpack the source, fetch the crates,
#                                         start a throwaway Postgres with Arroyo's migrations
#                                         (arroyo-api's build script reads its schema), run
#                                         `cargo build --release --bin arroyo` at nice 19, stop
#                                         Postgres (also on failure), copy the binary to
#                                         $ARROYO_HOME/bin/arroyo. Resumable: a rerun skips
#                                         what is done, and cargo keeps finished crates.
#   scripts/arroyo-local.sh db -- CMD...  start the throwaway Postgres with the migrations
#                                         applied, run CMD with DATABASE_URL set, stop it,
#                                         exit with CMD's status
#
# `start`, `stop`, `status` and `run -- CMD` (a single-node Arroyo with SQLite state) are not
# written yet.
#
# Environment:
#   ARROYO_HOME        where everything goes (default ~/.cache/shelf/arroyo): src/ (the
#                      unpacked tree), target/ (CARGO_TARGET_DIR), tools/ (refinery_cli),
#                      bin/arroyo and bin/arroyo.stamp
#   ARROYO_TARBALL     the source tarball (default ../shared/src/arroyo-0.15.0.tar.gz beside
#                      the clone); its sha256 is checked
#   ARROYO_GIT_VENDOR  a `cargo vendor` directory holding the crates that Arroyo's Cargo.lock
#                      takes from git (its forks of DataFusion, arrow-rs, sqlparser,
#                      cornucopia, typify, jiter, and progenitor-client); when set, those git
#                      sources are replaced by it, for machines that cannot reach the git hosts
#   ARROYO_JOBS        cargo's -j (default: cargo's own, the number of cores)
#   ARROYO_PG_DIR      parent of the throwaway Postgres's directory (default ${TMPDIR:-/tmp});
#                      under root the cluster runs as the `postgres` system user
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

arroyo_home="${ARROYO_HOME:-$HOME/.cache/shelf/arroyo}"
tarball="${ARROYO_TARBALL:-$root/../shared/src/arroyo-0.15.0.tar.gz}"
tarball_sha256=f9ee682331086a6ac2b467d2667b6b98e7b9da69e95b4864f44ca5337c2e0911
src="$arroyo_home/src"
apt_packages=(pkg-config build-essential libssl-dev cmake clang postgresql postgresql-client
  libsasl2-dev protobuf-compiler)

say() { echo "arroyo-local: $*" >&2; }
die() { say "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
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

install_apt() {
  local -a missing=()
  local p
  for p in "${apt_packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "Debian packages: all present"
    return 0
  fi
  say "Debian packages: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

install_refinery() {
  export PATH="$arroyo_home/tools/bin:$PATH"
  if command -v refinery >/dev/null 2>&1; then
    say "refinery: $(command -v refinery)"
    return 0
  fi
  say "refinery: cargo install refinery_cli into $arroyo_home/tools"
  nice -n 19 cargo install --locked --quiet --root "$arroyo_home/tools" refinery_cli
}

unpack() {
  if [ -f "$src/.unpacked" ]; then
    say "source: $src (unpacked before)"
    return 0
  fi
  [ -f "$tarball" ] || die "no source tarball at $tarball (set ARROYO_TARBALL)"
  local sum
  sum="$(sha256sum "$tarball" | cut -d' ' -f1)"
  [ "$sum" = "$tarball_sha256" ] || die "$tarball has sha256 $sum, not $tarball_sha256"
  say "source: unpacking $tarball into $src"
  rm -rf "$src" "$src.partial"
  mkdir -p "$src.partial"
  tar -xzf "$tarball" -C "$src.partial" --strip-components=1
  mv "$src.partial" "$src"
  touch "$src/.unpacked"
}

# The web UI is embedded from webui/dist (RustEmbed); a placeholder page is enough headless.
webui_placeholder() {
  if [ ! -f "$src/webui/dist/index.html" ]; then
    mkdir -p "$src/webui/dist"
    printf '<!doctype html><title>Arroyo</title><p>Built without the web UI.</p>\n' \
      >"$src/webui/dist/index.html"
    say "web UI: placeholder webui/dist/index.html"
  fi
}

# With ARROYO_GIT_VENDOR, replaces each git source of Cargo.lock by that vendor directory.
git_vendor_config() {
  local config="$src/.cargo/config.toml"
  if [ -z "${ARROYO_GIT_VENDOR:-}" ]; then
    rm -f "$config"
    return 0
  fi
  [ -d "$ARROYO_GIT_VENDOR" ] || die "ARROYO_GIT_VENDOR=$ARROYO_GIT_VENDOR is not a directory"
  mkdir -p "$src/.cargo"
  python3 - "$src/Cargo.lock" "$(cd "$ARROYO_GIT_VENDOR" && pwd)" >"$config" <<'PY'
import re, sys, urllib.parse
sources = sorted(set(re.findall(r'^source = "git\+([^"#]+)#', open(sys.argv[1]).read(), re.M)))
for i, s in enumerate(sources):
    url, _, query = s.partition("?")
    print(f'[source.arroyo-git-{i}]\ngit = "{url}"')
    for k, v in urllib.parse.parse_qsl(query):
        print(f'{k} = "{v}"')
    print('replace-with = "arroyo-git-vendor"\n')
print(f'[source.arroyo-git-vendor]\ndirectory = "{sys.argv[2]}"')
PY
  say "git sources: replaced by $ARROYO_GIT_VENDOR ($config)"
}

fetch() {
  say "crates: cargo fetch --locked"
  if ! (cd "$src" && cargo fetch --locked); then
    say "cargo could not fetch Arroyo's crates. Its Cargo.lock takes these from git:"
    grep -o '^source = "git+[^"#]*' "$src/Cargo.lock" | cut -d'"' -f2 | sort -u | sed 's/^/arroyo-local:   /' >&2
    say "if those hosts are unreachable here, set ARROYO_GIT_VENDOR to a \`cargo vendor\` directory of this source tree"
    exit 1
  fi
}

# The throwaway Postgres: db_start sets pg_dir and DATABASE_URL; db_stop undoes it.
pg_dir=""
pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [ -n "$d" ] || die "no Postgres server in /usr/lib/postgresql (apt-get install postgresql)"
  echo "$d"
}

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

db_start() {
  local bin port
  bin="$(pg_bin)"
  read -r port <<<"$(free_ports 1)"
  pg_dir="$(mktemp -d "${ARROYO_PG_DIR:-${TMPDIR:-/tmp}}/shelf-arroyo-pg-XXXXXX")"
  chmod 755 "$pg_dir"
  echo arroyo >"$pg_dir/pwfile"
  [ "$(id -u)" -eq 0 ] && chown -R postgres: "$pg_dir"
  say "postgres: initdb in $pg_dir"
  as_pg "$bin/initdb" -D "$pg_dir/data" -U arroyo --pwfile="$pg_dir/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C >"$pg_dir/initdb.log" 2>&1 \
    || { cat "$pg_dir/initdb.log" >&2; die "initdb failed"; }
  as_pg "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$pg_dir" start \
    >/dev/null || { cat "$pg_dir/postgres.log" >&2; die "Postgres did not start"; }
  as_pg "$bin/createdb" -h "$pg_dir" -p "$port" -U arroyo arroyo
  export DATABASE_URL="postgres://arroyo:arroyo@127.0.0.1:$port/arroyo"
  say "postgres: up on 127.0.0.1:$port (pid $(head -n 1 "$pg_dir/data/postmaster.pid"))"
  # refinery reads its connection from a file laid out as docker/refinery.toml.
  sed -e "s/^db_host = .*/db_host = \"127.0.0.1\"/" -e "s/^db_port = .*/db_port = \"$port\"/" \
    "$src/docker/refinery.toml" >"$pg_dir/refinery.toml"
  (cd "$src" && refinery migrate -c "$pg_dir/refinery.toml" -p crates/arroyo-api/migrations) \
    >"$pg_dir/migrate.log" 2>&1 || { cat "$pg_dir/migrate.log" >&2; die "migrations failed"; }
  say "postgres: migrations of crates/arroyo-api/migrations applied"
}

db_stop() {
  [ -n "$pg_dir" ] || return 0
  if [ -f "$pg_dir/data/postmaster.pid" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
    say "postgres: stopped"
  fi
  rm -rf "$pg_dir"
  pg_dir=""
}

build() {
  local started=$SECONDS
  mkdir -p "$arroyo_home/bin"
  exec 9>"$arroyo_home/build.lock"
  flock -n 9 || die "another build holds $arroyo_home/build.lock"
  install_apt
  install_refinery
  unpack
  webui_placeholder
  git_vendor_config
  fetch
  trap 'db_stop' EXIT
  trap 'exit 130' INT TERM HUP
  db_start
  local -a jobs=()
  [ -n "${ARROYO_JOBS:-}" ] && jobs=(-j "$ARROYO_JOBS")
  say "cargo: build --release --bin arroyo into $arroyo_home/target (nice 19)"
  (cd "$src" && CARGO_TARGET_DIR="$arroyo_home/target" CARGO_PROFILE_RELEASE_DEBUG=false \
    nice -n 19 cargo build --release --locked "${jobs[@]}" --bin arroyo)
  db_stop
  cp "$arroyo_home/target/release/arroyo" "$arroyo_home/bin/arroyo.new"
  mv "$arroyo_home/bin/arroyo.new" "$arroyo_home/bin/arroyo"
  local elapsed=$((SECONDS - started))
  {
    echo "version=$("$arroyo_home/bin/arroyo" --version 2>/dev/null || echo 'arroyo 0.15.0')"
    echo "source_sha256=$tarball_sha256"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "elapsed_s=$elapsed"
  } >"$arroyo_home/bin/arroyo.stamp"
  say "built $arroyo_home/bin/arroyo in $((elapsed / 3600))h$((elapsed % 3600 / 60))m$((elapsed % 60))s"
}

db() {
  export PATH="$arroyo_home/tools/bin:$PATH"
  command -v refinery >/dev/null 2>&1 || die "no refinery: run scripts/arroyo-local.sh build first"
  [ -f "$src/.unpacked" ] || unpack
  trap 'db_stop' EXIT
  trap 'exit 130' INT TERM HUP
  db_start
  local status=0
  "$@" || status=$?
  return $status
}

command="${1:-}"
shift || true
case "$command" in
  build) build ;;
  db)
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || { echo "usage: scripts/arroyo-local.sh db -- CMD..." >&2; exit 2; }
    db "$@"
    ;;
  *)
    sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
