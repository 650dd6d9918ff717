//! linen's control plane: configuration, flannel-compatible leases in etcd, route watch,
//! kernel programming. The binaries `linend` and `linenctl` are thin shells over this library.
#![deny(missing_docs)]

// kernel programming and the static-peers node
pub mod kernel;
pub mod static_peers;
pub mod xdp_node;

// config, leases, registry, watch
