#!/usr/bin/env bash
# The README's test command: installs what is missing (scripts/setup.sh), builds every
# crate and runs every test of the workspace. Ends with the test runner's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# CI builds once from scratch: incremental caches would only double the disk the build needs.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
if cargo nextest --version >/dev/null 2>&1; then
  cargo build --workspace --all-targets --locked
  exec cargo nextest run --workspace --no-fail-fast --locked
else
  # `cargo test` alone does not build cdylibs; the plugin tests load the example one.
  cargo build --workspace --locked
  exec cargo test --workspace --no-fail-fast --locked
fi
