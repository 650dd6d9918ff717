//! linen's sans-IO VXLAN pipeline: bytes in, an [`Action`] out.
//!
//! [`encap`] turns an inner Ethernet frame from the overlay TAP `linen.1` into a VXLAN frame for
//! the underlay; [`decap`] validates a VXLAN frame from the underlay and strips it down to the
//! inner frame for `linen.1`. [`encap_udp_payload`] and [`decap_udp_payload`] are the same operations for the
//! TAP/UDP fallback datapath, where a UDP socket adds and removes the outer IP and UDP headers.
//! All four work in place on a [`Frame`] (a buffer with headroom) and read one [`Config`] and one
//! [`Routes`] snapshot.
//!
//! What this module must never do: open sockets, read a clock, take a lock, allocate, log, or
//! panic on anything a packet says. Every rejected packet is an [`Action::Drop`] with its own
//! [`DropReason`], counted by the worker in its [`WorkerStats`]. That is what makes the functions
//! testable against captured frames, fuzzable, and benchmarkable in isolation.
//!
//! ```
//! use std::net::Ipv4Addr;
//!
//! use linen_dataplane::pipeline::{decap, encap, Action, Config, Egress, Frame, NextHop, Peer, RoutesBuilder};
//!
//! // Node A (192.168.77.1, pods 10.244.1.0/24) and node B (192.168.77.2, pods 10.244.2.0/24).
//! let a = Config::new(Ipv4Addr::new(192, 168, 77, 1), [0x92, 0x14, 0x14, 0x17, 0xdb, 0xd3], [0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8]);
//! let b = Config::new(Ipv4Addr::new(192, 168, 77, 2), [0xe6, 0x37, 0x6c, 0xed, 0x27, 0x39], [0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c]);
//! let to_b = Peer { vtep: b.local_vtep, vtep_mac: b.vtep_mac, underlay_mac: Some(b.local_mac), ifindex: 2 };
//! let to_a = Peer { vtep: a.local_vtep, vtep_mac: a.vtep_mac, underlay_mac: Some(a.local_mac), ifindex: 2 };
//! let mut routes_a = RoutesBuilder::new();
//! routes_a.insert("10.244.2.0/24".parse().unwrap(), NextHop::new(&a, &to_b));
//! let mut routes_b = RoutesBuilder::new();
//! routes_b.insert("10.244.1.0/24".parse().unwrap(), NextHop::new(&b, &to_a));
//! let (routes_a, routes_b) = (routes_a.build(), routes_b.build());
//!
//! // An inner frame (linen.1 → B's VtepMAC, IPv4 10.244.1.2 → 10.244.2.2) behind 256 bytes of headroom.
//! let mut inner = vec![0u8; 14 + 20];
//! inner[..6].copy_from_slice(&b.vtep_mac);
//! inner[6..12].copy_from_slice(&a.vtep_mac);
//! inner[12..14].copy_from_slice(&[0x08, 0x00]);
//! inner[14..34].copy_from_slice(&[0x45, 0, 0, 20, 0, 0, 0x40, 0, 63, 17, 0, 0, 10, 244, 1, 2, 10, 244, 2, 2]);
//! let mut buf = vec![0u8; 256];
//! buf.extend_from_slice(&inner);
//! let len = buf.len() - 256;
//!
//! let mut frame = Frame::new(&mut buf, 256, len).unwrap();
//! assert_eq!(encap(&mut frame, &a, &routes_a), Action::Transmit(Egress::Underlay { ifindex: 2 }));
//! assert_eq!(frame.len(), 50 + inner.len());
//! assert_eq!(decap(&mut frame, &b, &routes_b), Action::Transmit(Egress::Overlay));
//! assert_eq!(frame.data(), &inner[..]);
//! ```

mod config;
mod decap;
mod encap;
mod flow;
mod frame;
mod icmp;
mod nexthop;
mod offload;
mod routes;
mod stats;

use std::net::SocketAddrV4;

pub use config::{
    Config, ConfigError, DEFAULT_OVERLAY_MTU, DEFAULT_PORT, DEFAULT_SOURCE_PORT_MAX,
    DEFAULT_SOURCE_PORT_MIN, DEFAULT_VNI, MAX_OVERLAY_MTU,
};
pub use decap::{decap, decap_udp_payload};
pub use encap::{encap, encap_udp_payload};
pub use frame::Frame;
pub use nexthop::{
    NextHop, Peer, OUTER_IP_OFFSET, OUTER_TTL, OUTER_UDP_PAYLOAD_OFFSET, OUTER_V4_LEN, VXLAN_LEN,
};
pub use offload::{
    complete_checksum, CoalesceStats, Coalescer, Gso, Offload, Part, Segmenter, Write,
    MAX_COALESCE_PARTS, VNET_HDR_LEN,
};
pub use routes::{PeerSet, Routes, RoutesBuilder};
pub use stats::{DropReason, StatsSnapshot, WorkerStats};

/// What the I/O layer does with a frame after a pipeline call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send the frame (now `frame.data()`) on, to where the [`Egress`] says: after encap to the
    /// underlay, after decap into the overlay (`linen.1`).
    Transmit(Egress),
    /// Hand the frame to the kernel's own path. Only [`encap`] returns it, when the route's
    /// underlay next-hop MAC is unresolved; see [`encap`] for exactly what the frame holds.
    ToKernel,
    /// Drop the frame and count the reason.
    Drop(DropReason),
    /// The frame now holds a generated ICMP or ICMPv6 error: send it back out of the device the
    /// original frame came from.
    Reply,
}

/// Where an [`Action::Transmit`] frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// Into the overlay: the inner frame after decap, written to the overlay TAP `linen.1`.
    Overlay,
    /// Out of the underlay device with this interface index, on the worker's own TX queue: the
    /// complete VXLAN frame after [`encap`].
    Underlay {
        /// The underlay interface index of the route's [`NextHop`].
        ifindex: u32,
    },
    /// To the remote VTEP through the fallback datapath's UDP socket: the VXLAN header and inner
    /// frame after [`encap_udp_payload`].
    Udp {
        /// Remote VTEP address and VXLAN port to `sendto`.
        remote: SocketAddrV4,
        /// The flow-hash outer source port [`encap`] would have used.
        source_port: u16,
    },
}
