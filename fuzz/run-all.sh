#!/usr/bin/env bash
# Runs every fuzz target for a fixed time (default 10 s each) on the stable toolchain.
# Usage: fuzz/run-all.sh [seconds] [target...]
# FUZZ_RUNS=N also stops each target after N executions, whichever comes first.
# New inputs go to fuzz/corpus/<target> (git-ignored); the committed seeds in
# fuzz/seeds/<target> are read but never written; fuzz/dicts/<target>.dict, when present, is
# passed as the libFuzzer dictionary. Crashes land in fuzz/artifacts/<target>; each target's
# full log is kept in fuzz/logs/<target>.log (git-ignored).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-10}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
export RUSTC_BOOTSTRAP=1  # cargo-fuzz passes -Z flags; this lets the stable compiler take them
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    opts=(-max_total_time="$secs")
    [ -n "${FUZZ_RUNS:-}" ] && opts+=(-runs="$FUZZ_RUNS")
    [ -f "dicts/$t.dict" ] && opts+=(-dict="dicts/$t.dict")
    echo "==> $t (${secs}s${FUZZ_RUNS:+ or $FUZZ_RUNS runs})"
    log="logs/$t.log"
    rc=0
    cargo fuzz run "$t" "corpus/$t" "${seeds[@]}" -- "${opts[@]}" >"$log" 2>&1 || rc=$?
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^Done|ERROR|panicked' "$log" || true
    echo "corpus/$t: $(find "corpus/$t" -type f | wc -l) files"
    if [ "$rc" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz target $t failed (exit $rc); full log: fuzz/$log" >&2
        exit 1
    fi
done
