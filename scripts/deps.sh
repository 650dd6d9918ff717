#!/usr/bin/env bash
# Installs what linen's build, tests, demo and benchmarks need on Debian 12, idempotently:
# packages already present are not touched, and nothing is fetched when all are there.
set -euo pipefail

PACKAGES=(
  # build: XDP program (clang/llvm, BTF), xsk-rs/libbpf, etcd-client's protobuf codegen
  # (protoc's well-known .proto files are in libprotobuf-dev, which protoc only recommends),
  # and a CA store for cargo's HTTPS downloads (libcurl and python3 only recommend ca-certificates)
  clang llvm libelf-dev zlib1g-dev libpcap-dev libbpf-dev m4 pkg-config make gcc protobuf-compiler libprotobuf-dev
  ca-certificates
  # fuzz crate: libfuzzer-sys compiles libFuzzer's C++ sources (even for a check build)
  g++
  # testbed and traffic
  iproute2 iputils-ping ethtool tcpdump iperf3 nftables iptables socat netcat-openbsd procps
  # Kubernetes-path tests: Calico-style policy matches its allowed peers in an ipset
  ipset
  # control plane: a real etcd server and etcdctl
  etcd-server etcd-client
  # CNI: a real container runtime and the reference plugins
  podman runc containernetworking-plugins busybox-static
  # measuring (bpftool also for the restart tests: which XDP programs are still loaded)
  valgrind bpftool openssl linux-perf
  # checking deploy/ and the operations guide: systemd-analyze, YAML, the guide's jq and curl
  systemd python3-yaml jq curl
)

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/deps.sh: must run as root (it installs Debian packages)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The Debian etcd-server package starts a system etcd on 2379; linen's tests start their own on
# other ports and never use it, so leave it as it is.

if ! command -v cargo >/dev/null; then
  echo "scripts/deps.sh: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
for comp in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$comp" || rustup component add "$comp"
done
