//! linen's packet path.
//!
//! - [`wire`]: zero-copy header views (Ethernet with 802.1Q, ARP, IPv4, IPv6, UDP, TCP, VXLAN,
//!   ICMPv4/v6 errors) and the Internet checksum; the pipeline reads and writes through them.
//! - [`pcap`]: a reader for classic pcap files (fixtures, fuzz seeds, benchmarks).
//! - [`pipeline`]: sans-IO VXLAN encap/decap — bytes in, an action out; no sockets, no clock, no locks.
//! - [`route`]: longest-prefix-match route table, built off the fast path and published RCU-style.
//! - [`io`]: packet I/O backends (AF_XDP, TAP + UDP socket) — the only module with `unsafe`.
//! - [`worker`]: the per-queue poll loop: batches, adaptive busy-poll, stats.
//!
//! Per-packet code here never allocates, never locks and never logs.
#![deny(missing_docs)]

pub mod io;
pub mod pcap;
pub mod pipeline;
pub mod route;
pub mod wire;
pub mod worker;
