//! [`XskQueue`]: the AF_XDP backend of the worker loop — one queue pair (a socket on the underlay
//! NIC and one on `linen.1x`, both bound to the same queue id) sharing one [`Umem`], so a frame
//! moves between the two devices by descriptor: encap grows it into its headroom, decap strips
//! its front, and the very UMEM frame that was received is the one transmitted.
//!
//! Per batch the worker calls [`PacketQueue::rx_burst`] for each port and then
//! [`PacketQueue::flush`], which publishes both TX rings (one kick each when the kernel asks),
//! moves completed TX frames back into the queue's [`FramePool`] and tops both fill rings up from
//! it. Nothing here allocates, locks or logs per packet.
//!
//! [`Verdict::Kernel`] (the pipeline's `ToKernel`: the route's underlay next-hop MAC is not
//! resolved yet) is handled by sending the finished outer IPv4 datagram — bytes 14.. of the
//! encapsulated frame — on a raw `IPPROTO_RAW` socket. The kernel routes it, resolves the next
//! hop with ARP (which the control plane then picks up as the route's next-hop MAC) and sends
//! it; the outer UDP source port stays the pipeline's flow hash. Without a raw socket (no
//! `CAP_NET_RAW`) such frames are dropped and counted in [`IoCounters::kernel_unsupported`].

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::socket::{SocketConfig, XskSocket};
use super::umem::{Frame, FramePool, Umem};
use super::XskError;
use crate::io::{IoCounters, Meta, Packet, PacketQueue, Port, UnderlayFormat, Verdict};
use crate::pipeline::{OUTER_IP_OFFSET, OUTER_V4_LEN};
use crate::worker::MAX_BATCH;

/// Readiness token of the underlay socket.
pub const UNDERLAY_TOKEN: Token = Token(0);
/// Readiness token of the `linen.1x` socket.
pub const OVERLAY_TOKEN: Token = Token(1);

/// Completions reaped per socket per flush (a TX ring's worth over a few batches).
const COMPLETE_MAX: usize = 256;
/// Fill-ring descriptors written per reservation (libxdp reserves all or nothing).
const FILL_STEP: usize = 64;
/// Times in a row the worker is kept from blocking because TX descriptors still wait; after
/// that it blocks anyway (a device that stopped transmitting, e.g. link down, must not pin a
/// core), and the next wake-up kicks again.
const TX_PENDING_SPINS: u32 = 10_000;

/// One AF_XDP queue pair driven by one worker: underlay NIC queue `queue` and `linen.1x` queue
/// `queue` on one UMEM.
#[derive(Debug)]
pub struct XskQueue {
    umem: Umem,
    nic: XskSocket,
    ovl: XskSocket,
    pool: FramePool,
    rx: Vec<Frame>,
    kernel: Option<socket2::Socket>,
    counters: IoCounters,
    tx_pending_spins: u32,
}

impl XskQueue {
    /// Binds the underlay socket (first, so it picks copy or zero-copy) and the overlay socket on
    /// `umem`, takes every free frame of `umem` into the queue's pool and fills both fill rings.
    /// Register the sockets in the devices' XSKMAPs ([`super::XdpAttachment::register`] with
    /// [`XskQueue::underlay_socket`] / [`XskQueue::overlay_socket`]) before frames can arrive.
    ///
    /// # Errors
    /// [`XskError`] from binding, or [`XskError::Config`] when `umem` has no free frames left.
    pub fn new(
        umem: &Umem,
        underlay: &str,
        overlay: &str,
        queue: u32,
        config: &SocketConfig,
    ) -> Result<XskQueue, XskError> {
        let nic = XskSocket::bind(umem, underlay, queue, config)?;
        let ovl = XskSocket::bind(umem, overlay, queue, config)?;
        let pool = umem.pool(umem.config().frame_count)?;
        let kernel = match raw_socket() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot open a raw IPv4 socket: frames whose underlay next hop is not \
                     resolved yet will be dropped (kernel_unsupported) instead of sent via the kernel"
                );
                None
            }
        };
        let mut q = XskQueue {
            umem: umem.clone(),
            nic,
            ovl,
            pool,
            rx: Vec::with_capacity(MAX_BATCH),
            kernel,
            counters: IoCounters::default(),
            tx_pending_spins: 0,
        };
        q.refill();
        Ok(q)
    }

    /// The underlay NIC's socket (to register it in the underlay program's XSKMAP).
    pub fn underlay_socket(&self) -> &XskSocket {
        &self.nic
    }

    /// The `linen.1x` socket (to register it in the overlay program's XSKMAP).
    pub fn overlay_socket(&self) -> &XskSocket {
        &self.ovl
    }

    /// Free frames in the queue's pool (neither on a fill ring nor in flight).
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    fn refill(&mut self) {
        while self.nic.fill(&mut self.pool, FILL_STEP) > 0 {}
        while self.ovl.fill(&mut self.pool, FILL_STEP) > 0 {}
    }

    fn recycle(&mut self) {
        self.nic.complete(&mut self.pool, COMPLETE_MAX);
        self.ovl.complete(&mut self.pool, COMPLETE_MAX);
        self.refill();
    }
}

/// A send-only raw IPv4 socket (`IPPROTO_RAW` implies `IP_HDRINCL`), non-blocking.
fn raw_socket() -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(libc::IPPROTO_RAW)),
    )?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Hands an encapsulated frame whose outer Ethernet header is unusable to the kernel: the outer
/// IPv4 datagram goes out through the raw socket to its destination (outer bytes 30..34).
#[inline]
fn to_kernel(sock: Option<&socket2::Socket>, frame: &[u8], counters: &mut IoCounters) {
    let (Some(sock), Some(ip)) = (sock, frame.get(OUTER_IP_OFFSET..)) else {
        counters.kernel_unsupported += 1;
        return;
    };
    if frame.len() < OUTER_V4_LEN {
        counters.kernel_unsupported += 1;
        return;
    }
    let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
    let to = socket2::SockAddr::from(SocketAddrV4::new(dst, 0));
    if sock.send_to(ip, &to).is_err() {
        counters.kernel_unsupported += 1;
    }
}

impl PacketQueue for XskQueue {
    const UNDERLAY: UnderlayFormat = UnderlayFormat::EthernetFrame;

    fn rx_burst<F>(&mut self, port: Port, max: usize, mut handle: F) -> io::Result<usize>
    where
        F: FnMut(&mut Packet<'_>) -> Verdict,
    {
        let XskQueue { umem, nic, ovl, pool, rx, kernel, counters, .. } = self;
        let max = max.min(rx.capacity());
        let n = match port {
            Port::Overlay => ovl.recv(rx, max),
            Port::Underlay => nic.recv(rx, max),
        };
        // The first touch of a received frame's headers is a cache miss (the kernel copied it in,
        // often on another CPU): start all of them now so they overlap.
        for f in rx.iter() {
            umem.prefetch(f);
        }
        for mut f in rx.drain(..) {
            let len = f.len();
            let (verdict, delta, new_len) = {
                let (buf, start) = umem.buffer_mut(&mut f);
                let mut p = Packet { buf, start, len, meta: Meta::default() };
                let v = handle(&mut p);
                (v, p.start as isize - start as isize, p.len)
            };
            if verdict == Verdict::Drop {
                pool.free(f);
                continue;
            }
            // The pipeline keeps start/len inside the buffer it was lent; a frame it could not
            // describe is a bug, never a packet's doing: count it and recycle the frame.
            if umem.adjust_head(&mut f, delta).is_err() || umem.set_len(&mut f, new_len).is_err() {
                counters.tx_failed += 1;
                pool.free(f);
                continue;
            }
            match verdict {
                Verdict::Send(to) => {
                    let sock = match to {
                        Port::Overlay => &mut *ovl,
                        Port::Underlay => &mut *nic,
                    };
                    if let Err(f) = sock.stage(f) {
                        counters.tx_failed += 1;
                        pool.free(f);
                    }
                }
                Verdict::Kernel => {
                    to_kernel(kernel.as_ref(), umem.data(&f), counters);
                    pool.free(f);
                }
                Verdict::Drop => pool.free(f),
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let a = self.ovl.flush();
        let b = self.nic.flush();
        self.recycle();
        a.and(b).map_err(io::Error::other)
    }

    fn register(&mut self, registry: &mio::Registry) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.nic.as_raw_fd()),
            UNDERLAY_TOKEN,
            Interest::READABLE,
        )?;
        registry.register(&mut SourceFd(&self.ovl.as_raw_fd()), OVERLAY_TOKEN, Interest::READABLE)
    }

    fn prepare_to_block(&mut self) -> io::Result<bool> {
        self.flush()?;
        // Copy-mode TX sends at most the skb budget per kick: keep going until the rings are
        // empty rather than sleep on unsent frames.
        if self.nic.tx_pending() || self.ovl.tx_pending() {
            self.tx_pending_spins += 1;
            if self.tx_pending_spins < TX_PENDING_SPINS {
                return Ok(false);
            }
        }
        self.tx_pending_spins = 0;
        for s in [&self.nic, &self.ovl] {
            if s.rx_needs_wakeup() {
                s.wake_rx().map_err(io::Error::other)?;
            }
        }
        // A frame that arrived after the last burst: handle it now instead of blocking.
        Ok(!(self.nic.rx_pending() || self.ovl.rx_pending()))
    }

    fn io_counters(&self) -> IoCounters {
        let mut c = self.counters;
        c.rx_oversize = self.nic.invalid_rx() + self.ovl.invalid_rx();
        c
    }
}
