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
//! - [`tap`]: the fallback datapath — a TAP device for the overlay side and UDP/raw-IP sockets for
//!   the underlay side. Underlay packets are UDP payloads ([`UnderlayFormat::UdpPayload`]).
//! - [`xsk`]: AF_XDP sockets on `linen.1x` and the underlay NIC sharing one UMEM. Underlay packets
//!   are whole Ethernet frames ([`UnderlayFormat::EthernetFrame`]).

use std::io;
use std::net::Ipv4Addr;

#[allow(unsafe_code)]
pub mod sys;
pub mod tap;
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
#[derive(Debug)]
pub struct Packet<'a> {
    /// The packet's buffer (a UMEM chunk or a slot of a backend region), headroom included.
    pub buf: &'a mut [u8],
    /// Offset of the first packet byte.
    pub start: usize,
    /// Packet length.
    pub len: usize,
    /// Socket metadata (see [`Meta`]).
    pub meta: Meta,
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
}

/// One queue of a packet I/O backend: what a [worker](crate::worker::Worker) drives.
///
/// The contract:
/// - [`rx_burst`](PacketQueue::rx_burst) never blocks. It receives at most `max` packets from
///   `port`, calls `handle` once per packet, and stages each packet as its verdict says.
///   Buffers stay valid until the next [`flush`](PacketQueue::flush).
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
        F: FnMut(&mut Packet<'_>) -> Verdict;

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
