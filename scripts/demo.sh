#!/usr/bin/env bash
# linen's main job on one machine: the demo cluster (see README). Run as root.
# Installs what it needs, builds release binaries, then runs linen-demo with any arguments given
# (--nodes N, --pods N, --datapath auto|xdp|tap, --bench-secs S, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
echo "==> building linen (release)"
cargo build --release --workspace --bins --locked
exec ./target/release/linen-demo "$@"
