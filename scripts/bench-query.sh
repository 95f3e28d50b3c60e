#!/usr/bin/env bash
# Query benchmark: the five TSBS cpu-only queries over the 100-host x 24 h data set after it
# is persisted to Parquet, with DuckDB over one Parquet copy of the same data side by side.
# Starts a release server on a fresh data directory, loads it with `tributary bench write`,
# waits for persistence, restarts the server and measures (see scripts/bench_query.py). The
# fastest formulation of each query is also measured over Arrow Flight (JSON-ticket DoGet).
#
# Usage: scripts/bench-query.sh [--binary PATH] [--data-dir DIR] [--keep] [--runs N]
#                               [--json-out FILE] [--explain none|missed|all] [--no-flight]
#                               [--ingest-rounds N]
#                               [--help]
# Without --binary the release binary is built first (cargo build --release), as
# bench-write.sh does. DuckDB and pyarrow are installed into .venv from
# scripts/bench-requirements.txt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$(pwd)

have_binary=false
for arg in "$@"; do
    case "$arg" in
        --binary | --binary=* | -h | --help) have_binary=true ;;
    esac
done
extra=()
if ! $have_binary; then
    cargo build --release --bin tributary
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ "$target_dir" = /* ]] || target_dir="$repo_root/$target_dir"
    extra=(--binary "$target_dir/release/tributary")
fi

venv="$repo_root/.venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "" 2>/dev/null; then
    echo "==> creating $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import duckdb, pyarrow" 2>/dev/null; then
    echo "==> installing scripts/bench-requirements.txt into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/bench-requirements.txt
fi
exec "$venv/bin/python" scripts/bench_query.py "${extra[@]}" "$@"
