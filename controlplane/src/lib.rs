//! linen's control plane: configuration, flannel-compatible leases in etcd, route watch,
//! kernel programming, and the node daemon that runs them. The binaries `linend` and `linenctl`
//! are thin shells over this library.
//!
//! The folders follow the architecture:
//! - [`registry`]: what lives in etcd and beside it, in flannel's formats: the network config,
//!   leases, the lease manager, the peer watch, the subnet file;
//! - [`kernel`]: programming the node's kernel: `linen.1`, routes and neighbours, masquerading
//!   (`--ip-masq`), underlay detection (`--can-reach`), the VtepMAC;
//! - [`daemon`]: `linend` itself: its options, the etcd and static-peers modes, datapath set-up and
//!   the hand-over of a running datapath, the run loop;
//! - [`api`]: the node API (`/metrics`, probes, `/v1`) and `linenctl`'s client for it.
//!
//! Each module is also reachable at the crate root (`linen_controlplane::lease`, …).
#![deny(missing_docs)]

pub mod api;
pub mod cli;
pub mod daemon;
pub mod kernel;
pub mod registry;

pub use api::{ctl_node, metrics};
pub use daemon::{handover, node, static_peers, xdp_node};
pub use kernel::{can_reach, masq, vtep_mac};
pub use registry::{config, lease, manager, subnet_env, watch};

/// flannel's default etcd key prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
