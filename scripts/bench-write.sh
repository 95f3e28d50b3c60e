#!/usr/bin/env bash
# Write benchmark: a release server on a fresh data directory, loaded by `tributary bench write`.
# Usage: scripts/bench-write.sh [extra `bench write` flags, e.g. --connections 4 --hours 24]
# SERVER_ARGS adds `serve` flags, e.g. SERVER_ARGS="--persist-interval 1s" to measure ingest
# while persistence runs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin tributary
bin="${CARGO_TARGET_DIR:-target}/release/tributary"
data="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
# shellcheck disable=SC2086 # SERVER_ARGS is a list of flags
"$bin" serve --data-dir "$data" --http-bind 127.0.0.1:0 --log-filter warn ${SERVER_ARGS:-} &
pid=$!
for _ in $(seq 1 300); do [ -s "$data/http-addr" ] && break; sleep 0.1; done
addr="$(cat "$data/http-addr")"
"$bin" bench write --url "http://$addr" --server-pid "$pid" "$@"
