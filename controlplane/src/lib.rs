//! linen's control plane: configuration, flannel-compatible leases in etcd, route watch,
//! kernel programming. The binaries `linend` and `linenctl` are thin shells over this library.
#![deny(missing_docs)]

// the node daemon (linend) and what it runs: kernel programming, datapaths, hand-over
pub mod daemon;
pub mod handover;
pub mod kernel;
pub mod node;
pub mod static_peers;
pub mod xdp_node;

// config, leases, registry, watch
pub mod cli;
pub mod config;
pub mod lease;
pub mod manager;
pub mod registry;
pub mod subnet_env;
pub mod watch;

// node API: metrics, probes, JSON for linenctl
pub mod ctl_node;
pub mod metrics;

// linend options: --ip-masq (nftables source NAT), --can-reach (underlay autodetection)
pub mod can_reach;
pub mod masq;
pub mod vtep_mac;

/// flannel's default etcd key prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
