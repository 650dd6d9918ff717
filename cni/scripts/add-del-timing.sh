#!/usr/bin/env bash
# Wall time of the plugin's ADD and DEL, for comparing builds of the `linen` binary.
#
#   cni/scripts/add-del-timing.sh [CYCLES] PLUGIN [PLUGIN...]
#
# Needs root. Builds a node namespace and a pod namespace (lt-cnitime-<pid>-*), then runs CYCLES
# ADD+DEL cycles of each plugin binary in turn, interleaved so that machine noise falls on all of
# them alike, and prints the median and 90th percentile of ADD and of DEL per binary. Everything
# happens inside the two namespaces; both, and the scratch directory, are removed on exit.
set -euo pipefail

cycles=50
if [[ ${1:-} =~ ^[0-9]+$ ]]; then cycles=$1; shift; fi
(($# > 0)) || { echo "usage: $0 [CYCLES] PLUGIN [PLUGIN...]" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }

node=lt-cnitime-$$-node
pod=lt-cnitime-$$-pod
dir=$(mktemp -d)
cleanup() {
    ip netns del "$node" 2>/dev/null || true
    ip netns del "$pod" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$node"
ip netns add "$pod"
ip -n "$node" link set lo up
ip -n "$pod" link set lo up
printf 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.8.1/24\nFLANNEL_MTU=1450\n' >"$dir/subnet.env"

ip netns exec "$node" python3 - "$cycles" "/var/run/netns/$pod" "$dir" "$@" <<'PY'
import json, os, statistics, subprocess, sys, time

cycles, netns, scratch, plugins = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
conf = json.dumps({"cniVersion": "1.0.0", "name": "lt", "type": "linen",
                   "subnetFile": f"{scratch}/subnet.env", "dataDir": f"{scratch}/ipam"}).encode()

def call(plugin, command, cid):
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command,
           "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": "/"}
    start = time.perf_counter()
    out = subprocess.run([plugin], input=conf, env=env, capture_output=True)
    took = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"{plugin} {command}: exit {out.returncode}: {out.stdout!r} {out.stderr!r}")
    return took * 1000

times = {p: {"ADD": [], "DEL": []} for p in plugins}
for i in range(cycles):
    for p in plugins:
        cid = f"timing{i}x{plugins.index(p)}"
        times[p]["ADD"].append(call(p, "ADD", cid))
        times[p]["DEL"].append(call(p, "DEL", cid))
for p in plugins:
    for op in ("ADD", "DEL"):
        t = sorted(times[p][op])
        p90 = t[min(len(t) - 1, int(len(t) * 0.9))]
        print(f"{p}: {op} median {statistics.median(t):.2f} ms, p90 {p90:.2f} ms ({len(t)} runs)")
PY
