//! linend's options: flags and their `LINEN_*` environment mirrors (clap).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::cli::EtcdFlags;
use crate::metrics;
use clap::{Parser, ValueEnum};

/// Which packet I/O backend to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Datapath {
    /// AF_XDP when it works, else the TAP fallback.
    Auto,
    /// AF_XDP (poll-mode userspace router).
    Xdp,
    /// TAP device + UDP socket (fallback for hosts without AF_XDP).
    Tap,
}

/// How the TAP datapath sends VXLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TapSend {
    /// Raw IPv4 socket, one datagram per packet: the outer UDP source port is exactly the flow
    /// hash (needs CAP_NET_RAW); no segmentation offload.
    Raw,
    /// UDP sockets chosen by flow hash, the segments of a super-packet sent as one message
    /// (UDP_SEGMENT).
    Udp,
}

/// linen node daemon.
#[derive(Debug, Parser)]
#[command(name = "linend", version, about = "linen node daemon: VXLAN pod overlay router")]
pub struct Args {
    /// Run from a static-peers file (JSON: network, subnet, public_ip, vtep_mac, peers) instead of etcd.
    #[arg(long, env = "LINEN_STATIC_PEERS", value_name = "FILE")]
    pub static_peers: Option<PathBuf>,

    /// etcd connection (used unless --static-peers is given).
    #[command(flatten)]
    pub etcd: EtcdFlags,

    /// Serve /metrics, /healthz, /readyz and linenctl's /v1 API on this address.
    #[arg(long, env = "LINEN_METRICS_ADDR", default_value = metrics::DEFAULT_ADDR)]
    pub metrics_addr: std::net::SocketAddr,

    /// Packet I/O backend.
    #[arg(long, env = "LINEN_DATAPATH", value_enum, default_value = "auto")]
    pub datapath: Datapath,

    /// Underlay interface (default: the one holding --public-ip, else the default route's).
    #[arg(long, env = "LINEN_IFACE")]
    pub iface: Option<String>,

    /// Find the underlay by asking the kernel how it reaches this IPv4 address (e.g. etcd or the
    /// underlay gateway): its output interface and source address become --iface and --public-ip.
    #[arg(long, env = "LINEN_CAN_REACH", value_name = "IP", conflicts_with_all = ["iface", "public_ip"])]
    pub can_reach: Option<Ipv4Addr>,

    /// Public (underlay) IPv4 address, the local VTEP (default: from the static file, else the
    /// underlay interface's first address).
    #[arg(long, env = "LINEN_PUBLIC_IP")]
    pub public_ip: Option<Ipv4Addr>,

    /// VXLAN network identifier (static mode; in etcd mode the network config's VNI).
    #[arg(long, env = "LINEN_VNI", default_value_t = 1)]
    pub vni: u32,

    /// VXLAN UDP port (static mode; in etcd mode the network config's Port).
    #[arg(long, env = "LINEN_PORT", default_value_t = 8472)]
    pub port: u16,

    /// Overlay MTU (default: the etcd config's Backend.MTU, else underlay MTU − 50).
    #[arg(long, env = "LINEN_MTU")]
    pub mtu: Option<u32>,

    /// Compute the outer UDP checksum (the kernel's `udpcsum`); default zero, as RFC 7348 allows.
    #[arg(long, env = "LINEN_UDP_CHECKSUM")]
    pub udp_checksum: bool,

    /// Where to write the flannel-format subnet file for the CNI plugin.
    #[arg(long, env = "LINEN_SUBNET_FILE", default_value = "/run/flannel/subnet.env")]
    pub subnet_file: PathBuf,

    /// Masquerade pod traffic that leaves the cluster network (nftables table `ip linen`, see
    /// docs/ipmasq.md); also written as FLANNEL_IPMASQ. Needs the `nft` command.
    #[arg(long, env = "LINEN_IP_MASQ")]
    pub ip_masq: bool,

    /// Seconds between checks that the masquerade table is in place (restored when missing or
    /// changed; in etcd mode the network config is re-read as often).
    #[arg(long, env = "LINEN_IP_MASQ_RESYNC", value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ip_masq_resync: u64,

    /// Write per-worker counters (JSON) to this file, replaced atomically every --stats-interval-ms.
    #[arg(long, env = "LINEN_STATS_FILE")]
    pub stats_file: Option<PathBuf>,

    /// Interval of the stats file, in milliseconds.
    #[arg(long, env = "LINEN_STATS_INTERVAL_MS", default_value_t = 1000)]
    pub stats_interval_ms: u64,

    /// Microseconds a worker keeps busy-polling after the last packet before it blocks.
    #[arg(long, env = "LINEN_IDLE_SPELL_US", default_value_t = 200)]
    pub idle_spell_us: u64,

    /// How the TAP datapath sends VXLAN.
    #[arg(long, env = "LINEN_TAP_SEND", value_enum, default_value = "udp")]
    pub tap_send: TapSend,

    /// AF_XDP datapath: queues (one worker each): underlay RX queues and queues of linen.1.
    #[arg(long, env = "LINEN_QUEUES", default_value_t = 1)]
    pub queues: u32,

    /// Pin worker i to the i-th CPU of this list (e.g. `1` or `0,2-3`); default: not pinned.
    #[arg(long, env = "LINEN_CPUS")]
    pub cpus: Option<String>,

    /// Remove what linend leaves on this node while it is not running (linen.1, the masquerade
    /// table, direct routes into the network of --subnet-file), then exit. Run it after
    /// `systemctl stop linend` to take linen off a node.
    #[arg(long)]
    pub cleanup: bool,
}
