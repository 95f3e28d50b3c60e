#!/usr/bin/env bash
# The README's test command: builds the workspace, runs the Rust tests, then the
# end-to-end tests (tests/e2e) against the built binary with real clients.
#
# Both suites run even if the first fails; the script fails if either does.
# PYTEST_ADDOPTS passes extra options to pytest, e.g. PYTEST_ADDOPTS="-k crash".
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo_root=$(pwd)

# -- Python environment for the end-to-end tests -------------------------------------------
venv="$repo_root/.venv"
requirements="$repo_root/tests/requirements.txt"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "" 2>/dev/null; then
    echo "==> creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
fi
# Reinstall only when the requirements (or the interpreter) change.
want_stamp=$({ cat "$requirements"; "$venv/bin/python" --version; } | sha256sum | cut -d' ' -f1)
stamp_file="$venv/.requirements.sha256"
if [[ "$(cat "$stamp_file" 2>/dev/null || true)" != "$want_stamp" ]]; then
    echo "==> installing $requirements"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$want_stamp" >"$stamp_file"
fi

# -- Rust ------------------------------------------------------------------------------------
# One build: the test build also makes the `tributary` binary (its integration tests need it),
# and a separate `cargo build` could pick another feature set and compile DataFusion twice.
echo "==> cargo build --workspace --tests"
cargo build --workspace --tests

failed=()

echo "==> Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast || failed+=("cargo nextest")
else
    echo "(cargo-nextest not installed: using cargo test)"
    cargo test --workspace --no-fail-fast || failed+=("cargo test")
fi

# -- end-to-end ------------------------------------------------------------------------------
target_dir=${CARGO_TARGET_DIR:-target}
[[ "$target_dir" = /* ]] || target_dir="$repo_root/$target_dir"
export TRIBUTARY_BIN="$target_dir/debug/tributary"
echo "==> end-to-end tests against $TRIBUTARY_BIN"
"$venv/bin/pytest" "$repo_root/tests/e2e" -q || failed+=("end-to-end tests")

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all tests passed"
