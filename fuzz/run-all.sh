#!/usr/bin/env bash
# Runs every fuzz target for a fixed time (default 10 s each) on the stable toolchain.
# Usage: fuzz/run-all.sh [seconds] [target...]
# New inputs go to fuzz/corpus/<target> (git-ignored); the committed seeds in
# fuzz/seeds/<target> are read but never written. Crashes land in fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-10}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1  # cargo-fuzz passes -Z flags; this lets the stable compiler take them
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    echo "==> $t (${secs}s)"
    log="$(mktemp)"
    rc=0
    cargo fuzz run "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$secs" >"$log" 2>&1 || rc=$?
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^Done|ERROR|panicked' "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz target $t failed (exit $rc); full log: $log" >&2
        exit 1
    fi
    rm -f "$log"
done
