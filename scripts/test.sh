#!/usr/bin/env bash
# linen's whole test suite, as CI runs it (.ci/run calls exactly this).
# Installs what it needs, checks formatting and lints, builds everything, then runs every test —
# the root-only netns integration tests included (they fail loudly without root).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> build binaries used by the integration tests"
cargo build --workspace --bins --locked

echo "==> tests"
cargo test --workspace --locked --no-fail-fast -- --include-ignored
