//! linen's CNI plugin library; the `linen` binary is a thin shell over it.
//!
//! The plugin wires pods onto the node's bridge (veth pair, host end on `cni0`) or gives them a
//! TAP device, hands out addresses from the node's pod subnet through a store laid out like the
//! reference `host-local` plugin's, and answers every CNI operation (ADD, DEL, CHECK, VERSION,
//! GC, STATUS) in the spec version the runtime asked for. It talks to the kernel only through
//! rtnetlink ([`netlink`], on the `rtnetlink` crate) and never leaves the node namespace except
//! on a short-lived thread that opens a connection inside the pod's namespace. It must never shell out to `ip`, never touch
//! another network's reservations and never fail a DEL because the pod is already gone.
#![deny(missing_docs)]

pub mod config;
pub mod error;
pub mod ipam;
pub mod netlink;
pub mod plugin;
pub mod result;
pub mod tap;

pub use plugin::{run, Outcome};
