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

echo "==> fuzz crate (its own workspace): format, lints and a check build of every target, seeds"
# Stable toolchain, no sanitizers: this keeps every fuzz target compiling against the current
# code and checks each committed seed still reaches the parser path it was written for. Running
# the fuzzers needs cargo-fuzz (docs/fuzzing.md). Built in the workspace's target directory, so
# dependencies both lockfiles share at the same version and features are compiled once.
cargo fmt --manifest-path fuzz/Cargo.toml --check
cargo clippy --manifest-path fuzz/Cargo.toml --target-dir target --locked --all-targets -- -D warnings
cargo test --manifest-path fuzz/Cargo.toml --target-dir target --locked --lib

echo "==> build binaries used by the integration tests"
cargo build --workspace --bins --locked

echo "==> tests"
cargo test --workspace --locked --no-fail-fast -- --include-ignored
