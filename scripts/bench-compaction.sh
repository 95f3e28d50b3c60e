#!/usr/bin/env bash
# Compaction benchmark (issue 6): the 100-host x 24 h data set written in 100 small persists,
# compacted, and the five TSBS queries before and after against a single-file layout of the
# same data (see scripts/bench_compaction.py).
#
# Usage: scripts/bench-compaction.sh [--binary PATH] [--runs N] [--slices N]
#                                    [--long-ingest SECONDS] [--json-out FILE] [--keep]
# Without --binary the release binary is built first (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$(pwd)

extra=()
if [[ " $* " != *" --binary "* && " $* " != *" --binary="* && " $* " != *" --help "* && " $* " != *" -h "* ]]; then
    cargo build --release --bin tributary
    target_dir=${CARGO_TARGET_DIR:-target}
    [[ "$target_dir" = /* ]] || target_dir="$repo_root/$target_dir"
    extra=(--binary "$target_dir/release/tributary")
fi

venv="$repo_root/.venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "" 2>/dev/null; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import duckdb, pyarrow" 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/bench-requirements.txt
fi
exec "$venv/bin/python" scripts/bench_compaction.py "${extra[@]}" "$@"
