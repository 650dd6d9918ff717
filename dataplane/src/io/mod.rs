//! Packet I/O backends. The only module of the crate allowed to use `unsafe`; every unsafe block
//! carries a `// SAFETY:` comment.
//!
//! A backend moves packets between two *ports* — the overlay side (`linen.1`: plain inner
//! Ethernet frames) and the underlay side (VXLAN) — and implements [`PacketQueue`], the one
//! small trait the [worker](crate::worker) drives. The worker owns the loop (bursts, route
//! snapshot per batch, stats, adaptive polling); the backend owns buffers, system calls and
//! readiness. A backend never decides what happens to a packet: it hands each received packet to
//! the worker's closure and does what the returned [`Verdict`] says.
//!
//! Both backends put the overlay side on [`tun`]: `linen.1` is a multi-queue TAP device with
//! virtio-net headers and segmentation offload, so packets cross it as super-packets of up to
//! 64 KB ([`Packet::vnet`], [`Packet::tail`]); the worker segments them for the underlay
//! through [`Emit`], and a backend coalesces what it writes back
//! ([`crate::pipeline::Coalescer`]).
//!
//! - [`xsk`]: AF_XDP sockets on the underlay NIC, one per queue, each on a UMEM of its own.
//!   Underlay packets are whole Ethernet frames ([`UnderlayFormat::EthernetFrame`]).
//! - [`tap`]: the fallback datapath for hosts without AF_XDP — UDP sockets for the underlay side.
//!   Underlay packets are UDP payloads ([`UnderlayFormat::UdpPayload`]).
//!
//! Both backends can also be built from descriptors an earlier process handed over through the
//! service manager's file-descriptor store ([`fdstore`]): the TAP queues, sockets and UMEMs keep
//! their kernel state and their queued packets across a restart.

use std::io;
use std::net::Ipv4Addr;

use crate::pipeline::VNET_HDR_LEN;

#[allow(unsafe_code)]
pub mod fdstore;
#[allow(unsafe_code)]
pub mod sys;
pub mod tap;
#[allow(unsafe_code)]
pub mod tun;
#[allow(unsafe_code)]
pub mod xsk;

/// A side of the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// The overlay device (`linen.1` or its peer `linen.1x`): inner Ethernet frames.
    Overlay,
    /// The underlay: VXLAN, as whole frames or as UDP payloads (see [`UnderlayFormat`]).
    Underlay,
}

/// How a backend carries underlay packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderlayFormat {
    /// Whole Ethernet frames (outer Ethernet + IP + UDP + VXLAN + inner frame). AF_XDP.
    EthernetFrame,
    /// UDP payloads (VXLAN header + inner frame); the socket layer holds the outer addresses,
    /// carried in [`Meta`]. The TAP/UDP fallback.
    UdpPayload,
}

/// Per-packet metadata a socket backend needs besides the bytes. Frame backends ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Received underlay packet: the outer source address. Underlay packet to send: the
    /// destination VTEP.
    pub remote: Ipv4Addr,
    /// Received: the outer UDP source port. To send: the outer UDP source port to use
    /// (the flow hash), when the backend can choose it.
    pub src_port: u16,
}

impl Default for Meta {
    fn default() -> Self {
        Meta { remote: Ipv4Addr::UNSPECIFIED, src_port: 0 }
    }
}

/// One received packet, lent to the worker: the bytes are `buf[start..start + len]` and
/// `buf[..start]` is headroom the worker may grow the packet into (encapsulation). The worker
/// leaves `start`/`len` describing the bytes to send.
///
/// A super-packet from the overlay device may be longer than `buf`: its bytes then go on in
/// `tail`, and its virtio-net header `vnet` says how to cut it into segments. Such a packet is never sent as it is;
/// the worker emits its segments through [`Emit`] and drops it.
#[derive(Debug)]
pub struct Packet<'a> {
    /// The packet's buffer (a UMEM chunk or a slot of a backend region), headroom included.
    pub buf: &'a mut [u8],
    /// Offset of the first packet byte.
    pub start: usize,
    /// Length of the part of the packet in `buf`.
    pub len: usize,
    /// Socket metadata (see [`Meta`]).
    pub meta: Meta,
    /// The virtio-net header the overlay device put in front of the packet (segmentation,
    /// checksum to complete), as read: the worker interprets it
    /// ([`crate::pipeline::Offload::parse`]). All zero for every other packet.
    pub vnet: [u8; VNET_HDR_LEN],
    /// The rest of a super-packet that did not fit `buf` (empty otherwise).
    pub tail: &'a [u8],
}

impl<'a> Packet<'a> {
    /// A packet of `len` bytes at `start` in `buf`, with no offload state and no tail.
    pub fn new(buf: &'a mut [u8], start: usize, len: usize, meta: Meta) -> Packet<'a> {
        Packet { buf, start, len, meta, vnet: [0; VNET_HDR_LEN], tail: &[] }
    }
}

/// More packets out of one received packet: how the worker sends the segments of a
/// super-packet. A backend lends a fresh buffer per call, with headroom in front of `start`
/// and `buf.len() - start` bytes of room, to `fill`, which writes the packet there, sets `len`
/// (and `meta` for socket backends) and returns where it goes; the backend stages it like a
/// received packet with that verdict.
pub trait Emit {
    /// Lends one buffer to `fill`. Returns `false`, without calling `fill`, when the backend has
    /// no free buffer (it counts the loss in [`IoCounters::tx_failed`]).
    fn emit(&mut self, fill: &mut dyn FnMut(&mut Packet<'_>) -> Verdict) -> bool;
}

/// What the backend does with a packet after the worker looked at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send `buf[start..start + len]` out of this port (staged; sent at [`PacketQueue::flush`]).
    Send(Port),
    /// Give the packet to the host kernel's own path (AF_XDP: back to the stack; a backend
    /// that cannot do that drops it and counts it).
    Kernel,
    /// Forget the packet (the worker counted why); its buffer is recycled.
    Drop,
}

/// Counters a backend keeps about its own I/O (not about packets' contents: those are the
/// pipeline's drop reasons). Written by the worker thread only.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoCounters {
    /// Packets the backend could not send (full socket buffer, device error).
    pub tx_failed: u64,
    /// Received packets longer than a buffer slot, dropped.
    pub rx_oversize: u64,
    /// [`Verdict::Kernel`] packets a backend without a kernel path dropped.
    pub kernel_unsupported: u64,
    /// Super-packets read from the overlay device (packets with a segmentation type in their
    /// virtio-net header, each then cut into segments by the worker).
    pub super_rx: u64,
    /// Packets written to the overlay device that carried more than one segment.
    pub coalesced_tx: u64,
    /// Segments merged into those packets.
    pub coalesced_segments: u64,
}

/// One queue of a packet I/O backend: what a [worker](crate::worker::Worker) drives.
///
/// The contract:
/// - [`rx_burst`](PacketQueue::rx_burst) never blocks. It receives at most `max` packets from
///   `port`, calls `handle` once per packet (with an [`Emit`] for the segments of a
///   super-packet), and stages each packet as its verdict says. Buffers stay valid until the
///   next [`flush`](PacketQueue::flush).
/// - Packets staged for the overlay port are written to the overlay device at
///   [`flush`](PacketQueue::flush), the in-order TCP segments of one flow merged into one
///   super-packet where the device takes them.
/// - [`flush`](PacketQueue::flush) transmits everything staged (batched where the backend can)
///   and recycles buffers. The worker calls it once per batch.
/// - [`register`](PacketQueue::register) registers the backend's file descriptors for
///   readability with tokens below [`crate::worker::WAKER_TOKEN`]; the worker blocks on them
///   when idle. Registration is edge-triggered, so a backend must have drained its sources
///   (an `rx_burst` returned fewer than `max`) before the worker blocks.
/// - [`prepare_to_block`](PacketQueue::prepare_to_block) runs right before the worker blocks
///   (AF_XDP: set need-wakeup flags, kick pending TX); `false` means "work is pending, do not
///   block".
pub trait PacketQueue: Send {
    /// How this backend carries underlay packets.
    const UNDERLAY: UnderlayFormat;

    /// Receives up to `max` packets from `port` and hands each to `handle`. Returns how many
    /// packets were received.
    ///
    /// # Errors
    /// A failure of the underlying device or socket (not "nothing to read": that is `Ok(0)`).
    fn rx_burst<F>(&mut self, port: Port, max: usize, handle: F) -> io::Result<usize>
    where
        F: FnMut(&mut Packet<'_>, &mut dyn Emit) -> Verdict;

    /// Sends what [`rx_burst`](PacketQueue::rx_burst) staged.
    ///
    /// # Errors
    /// A failure of the underlying device or socket. Packets that could not be sent are counted
    /// in [`IoCounters::tx_failed`], not returned as errors.
    fn flush(&mut self) -> io::Result<()>;

    /// Registers the backend's readiness sources with `registry`.
    ///
    /// # Errors
    /// `epoll_ctl` failures.
    fn register(&mut self, registry: &mio::Registry) -> io::Result<()>;

    /// Called right before the worker blocks; returns `false` if it must not block.
    ///
    /// # Errors
    /// A failure of the underlying device or socket.
    fn prepare_to_block(&mut self) -> io::Result<bool> {
        Ok(true)
    }

    /// The backend's own I/O counters.
    fn io_counters(&self) -> IoCounters;
}
