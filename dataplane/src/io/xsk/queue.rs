//! [`XskQueue`]: the AF_XDP backend of the worker loop — one AF_XDP socket on an underlay NIC
//! queue, on a UMEM of its own, and one queue of the overlay TAP device `linen.1`
//! ([`TunQueue`]).
//!
//! - Overlay → underlay: a packet is read from the TAP straight into a UMEM frame, behind the
//!   headroom the outer header needs; a super-packet too long for the frame goes on into the
//!   queue's overflow area ([`Packet::tail`]). The worker encapsulates a single packet in place
//!   (the frame read is the frame transmitted) and emits the segments of a super-packet into
//!   fresh frames ([`Emit`]), all staged on the underlay socket's TX ring.
//! - Underlay → overlay: decap strips the outer header in place; the inner frames a batch staged
//!   for the overlay are merged per TCP flow ([`Coalescer`]) and written to the TAP at
//!   [`PacketQueue::flush`], gathered straight from the UMEM frames, which then go back to the
//!   pool (the kernel copied them).
//!
//! Per batch the worker calls [`PacketQueue::rx_burst`] for each port and then
//! [`PacketQueue::flush`], which writes the overlay packets, publishes the TX ring (one kick when
//! the kernel asks), moves completed TX frames back into the queue's [`FramePool`] and tops the
//! fill ring up from it. Nothing here allocates, locks or logs per packet.
//!
//! [`Verdict::Kernel`] (the pipeline's `ToKernel`: the route's underlay next-hop MAC is not
//! resolved yet) is handled by sending the finished outer IPv4 datagram — bytes 14.. of the
//! encapsulated frame — on a raw `IPPROTO_RAW` socket. The kernel routes it, resolves the next
//! hop with ARP (which the control plane then picks up as the route's next-hop MAC) and sends
//! it; the outer UDP source port stays the pipeline's flow hash. Without a raw socket (no
//! `CAP_NET_RAW`) such frames are dropped and counted in [`IoCounters::kernel_unsupported`].

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Interest, Token};

use super::socket::{SocketConfig, XskSocket};
use super::umem::{Frame, FramePool, Umem};
use super::XskError;
use crate::io::tun::TunQueue;
use crate::io::{Emit, IoCounters, Meta, Packet, PacketQueue, Port, UnderlayFormat, Verdict};
use crate::pipeline::{Coalescer, MAX_COALESCE_PARTS, OUTER_IP_OFFSET, OUTER_V4_LEN, VNET_HDR_LEN};
use crate::worker::MAX_BATCH;

/// Readiness token of the underlay socket.
pub const UNDERLAY_TOKEN: Token = Token(0);
/// Readiness token of the overlay TAP queue.
pub const OVERLAY_TOKEN: Token = Token(1);

/// Completions reaped per flush (a TX ring's worth over a few batches).
const COMPLETE_MAX: usize = 256;
/// Fill-ring descriptors written per reservation (libxdp reserves all or nothing).
const FILL_STEP: usize = 64;
/// Times in a row the worker is kept from blocking because TX descriptors still wait; after
/// that it blocks anyway (a device that stopped transmitting, e.g. link down, must not pin a
/// core), and the next wake-up kicks again.
const TX_PENDING_SPINS: u32 = 10_000;
/// Frames a burst of overlay reads may stage for the underlay before it stops reading.
const EMIT_BUDGET: usize = 512;
/// Room for the part of a super-packet that does not fit its UMEM frame: the largest packet
/// a TAP hands over is 64 KiB plus an Ethernet header.
pub const OVERFLOW_LEN: usize = 65_536 + 64;

/// One worker's queue: underlay NIC queue `queue` on a UMEM, and one queue of the overlay TAP.
#[derive(Debug)]
pub struct XskQueue {
    umem: Umem,
    nic: XskSocket,
    tun: TunQueue,
    pool: FramePool,
    rx: Vec<Frame>,
    /// Frames staged for the overlay device, written at flush.
    to_tun: Vec<Frame>,
    overflow: Box<[u8]>,
    coalescer: Coalescer,
    kernel: Option<socket2::Socket>,
    counters: IoCounters,
    tx_pending_spins: u32,
}

impl XskQueue {
    /// Binds the underlay socket on `umem` (it picks copy or zero-copy), takes every free frame
    /// of `umem` into the queue's pool and fills the fill ring; `tun` is this worker's queue of
    /// the overlay device. Register the socket in the underlay program's XSKMAP
    /// ([`super::XdpAttachment::register`] with [`XskQueue::underlay_socket`]) before frames
    /// can arrive.
    ///
    /// # Errors
    /// [`XskError`] from binding, or [`XskError::Config`] when `umem` has no free frames left.
    pub fn new(
        umem: &Umem,
        underlay: &str,
        tun: TunQueue,
        queue: u32,
        config: &SocketConfig,
    ) -> Result<XskQueue, XskError> {
        let nic = XskSocket::bind(umem, underlay, queue, config)?;
        let pool = umem.pool(umem.config().frame_count)?;
        Ok(XskQueue::with_parts(umem, nic, tun, pool))
    }

    /// Takes over a queue an earlier process ran: `umem` and `nic` taken over with
    /// [`Umem::adopt`] and [`XskSocket::adopt`], `tun` with [`TunQueue::adopt`]. The queue's pool
    /// gets every frame none of the rings holds (the frames the earlier process had in hand,
    /// whose packets are gone with it); frames received meanwhile wait on the RX ring and are
    /// forwarded by the first bursts, and the fill ring is topped up as usual.
    ///
    /// # Errors
    /// [`XskError`] when `nic` was not taken over or a ring's indices are out of range.
    pub fn adopt(umem: &Umem, nic: XskSocket, tun: TunQueue) -> Result<XskQueue, XskError> {
        let held = nic.held_frames()?;
        let pool = umem.pool_except(&held)?;
        tracing::info!(
            queue = nic.queue(),
            on_rings = held.len(),
            free = pool.len(),
            "AF_XDP frames accounted after the take-over"
        );
        Ok(XskQueue::with_parts(umem, nic, tun, pool))
    }

    fn with_parts(umem: &Umem, nic: XskSocket, tun: TunQueue, pool: FramePool) -> XskQueue {
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
            tun,
            pool,
            rx: Vec::with_capacity(MAX_BATCH),
            to_tun: Vec::with_capacity(2 * MAX_BATCH),
            overflow: vec![0u8; OVERFLOW_LEN].into_boxed_slice(),
            coalescer: Coalescer::new(),
            kernel,
            counters: IoCounters::default(),
            tx_pending_spins: 0,
        };
        q.refill();
        q
    }

    /// The underlay NIC's socket (to register it in the underlay program's XSKMAP).
    pub fn underlay_socket(&self) -> &XskSocket {
        &self.nic
    }

    /// This worker's queue of the overlay device.
    pub fn overlay_queue(&self) -> &TunQueue {
        &self.tun
    }

    /// Free frames in the queue's pool (neither on a ring nor in flight).
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// The UMEM's memory file (with the underlay socket and the overlay queue, what a later
    /// process takes the queue over from).
    pub fn umem_memfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.umem.memfd()
    }

    /// Before a hand-over: kicks the TX ring and reaps completions until every frame handed to
    /// the kernel for transmission has completed, or `timeout` passes. Returns whether none is
    /// left in flight. A frame still in flight when the next process takes over could be
    /// counted free there while the kernel still reads it; this closes that window.
    pub fn drain_tx(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let _ = self.nic.flush();
            self.nic.complete(&mut self.pool, COMPLETE_MAX);
            if self.nic.in_flight() == 0 {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
    fn refill(&mut self) {
        while self.nic.fill(&mut self.pool, FILL_STEP) > 0 {}
    }

    fn recycle(&mut self) {
        self.nic.complete(&mut self.pool, COMPLETE_MAX);
        self.refill();
    }

    /// Writes the frames staged for the overlay device, merged per flow, and frees them.
    fn write_overlay(&mut self) {
        let XskQueue { umem, tun, pool, to_tun, coalescer, counters, .. } = self;
        if to_tun.is_empty() {
            return;
        }
        coalescer.clear();
        let mut next = 0;
        while next < to_tun.len() {
            while next < to_tun.len() && coalescer.push(next as u32, umem.data(&to_tun[next])) {
                next += 1;
            }
            coalescer.finish();
            for w in coalescer.writes() {
                let mut iov = [IoSlice::new(&[]); 1 + MAX_COALESCE_PARTS];
                let mut k = 0;
                if !w.header.is_empty() {
                    iov[0] = IoSlice::new(w.header);
                    k = 1;
                }
                for p in w.parts {
                    let data = umem.data(&to_tun[p.id as usize]);
                    let (a, b) = (p.start as usize, (p.start + p.len) as usize);
                    iov[k] = IoSlice::new(data.get(a..b).unwrap_or_default());
                    k += 1;
                }
                if tun.write(&w.vnet, &iov[..k]).is_err() {
                    counters.tx_failed += w.segments as u64;
                } else if w.segments > 1 {
                    counters.coalesced_tx += 1;
                    counters.coalesced_segments += w.segments as u64;
                }
            }
            coalescer.clear();
        }
        for f in to_tun.drain(..) {
            pool.free(f);
        }
    }
}

/// Where a frame goes once the worker decided: the underlay TX ring, the overlay write list,
/// the kernel, or back to the pool. Shared by received frames and emitted segments.
struct Stage<'q> {
    umem: &'q Umem,
    nic: &'q mut XskSocket,
    to_tun: &'q mut Vec<Frame>,
    pool: &'q mut FramePool,
    kernel: Option<&'q socket2::Socket>,
    counters: &'q mut IoCounters,
    /// Frames staged for the underlay in this burst.
    emitted: usize,
}

impl Stage<'_> {
    #[inline]
    fn frame(&mut self, mut f: Frame, verdict: Verdict, delta: isize, new_len: usize) {
        if verdict == Verdict::Drop {
            self.pool.free(f);
            return;
        }
        // The pipeline keeps start/len inside the buffer it was lent; a frame it could not
        // describe is a bug, never a packet's doing: count it and recycle the frame.
        if self.umem.adjust_head(&mut f, delta).is_err()
            || self.umem.set_len(&mut f, new_len).is_err()
        {
            self.counters.tx_failed += 1;
            self.pool.free(f);
            return;
        }
        match verdict {
            Verdict::Send(Port::Underlay) => {
                self.emitted += 1;
                let f = match self.nic.stage(f) {
                    Ok(()) => return,
                    Err(f) => f,
                };
                // A full TX ring (the segments of super-packets): hand the kernel what is
                // staged (copy mode transmits up to its skb budget in the kick), take the
                // completions back, and try once more.
                if self.nic.flush().is_ok() {
                    self.nic.complete(self.pool, COMPLETE_MAX);
                }
                if let Err(f) = self.nic.stage(f) {
                    self.counters.tx_failed += 1;
                    self.pool.free(f);
                }
            }
            Verdict::Send(Port::Overlay) => self.to_tun.push(f),
            Verdict::Kernel => {
                to_kernel(self.kernel, self.umem.data(&f), self.counters);
                self.pool.free(f);
            }
            Verdict::Drop => self.pool.free(f),
        }
    }
}

impl Emit for Stage<'_> {
    fn emit(&mut self, fill: &mut dyn FnMut(&mut Packet<'_>) -> Verdict) -> bool {
        let Some(mut f) = self.pool.alloc() else {
            self.counters.tx_failed += 1;
            return false;
        };
        let (verdict, delta, len) = {
            let (buf, start) = self.umem.buffer_mut(&mut f);
            let mut p = Packet::new(buf, start, 0, Meta::default());
            let v = fill(&mut p);
            (v, p.start as isize - start as isize, p.len)
        };
        self.frame(f, verdict, delta, len);
        true
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
        F: FnMut(&mut Packet<'_>, &mut dyn Emit) -> Verdict,
    {
        let XskQueue { umem, nic, tun, pool, rx, to_tun, overflow, kernel, counters, .. } = self;
        let max = max.min(rx.capacity());
        let mut stage =
            Stage { umem, nic, to_tun, pool, kernel: kernel.as_ref(), counters, emitted: 0 };
        match port {
            Port::Overlay => {
                let mut n = 0;
                // Super-packets make many frames each: stop reading once a burst staged a TX
                // ring's quarter, so that the underlay side gets its turn.
                while n < max && stage.emitted < EMIT_BUDGET {
                    let Some(mut f) = stage.pool.alloc() else { break };
                    let mut vnet = [0u8; VNET_HDR_LEN];
                    let (verdict, delta, new_len) = {
                        let (buf, start) = stage.umem.buffer_mut(&mut f);
                        let len = match tun.read(&mut vnet, &mut buf[start..], overflow) {
                            Ok(Some(len)) => len,
                            Ok(None) => {
                                stage.pool.free(f);
                                break;
                            }
                            Err(e) => {
                                stage.pool.free(f);
                                return if n > 0 { Ok(n) } else { Err(e) };
                            }
                        };
                        let head = len.min(buf.len() - start);
                        // A segmentation type in the virtio-net header: a super-packet.
                        if vnet[1] != 0 {
                            stage.counters.super_rx += 1;
                        }
                        let mut p = Packet {
                            buf,
                            start,
                            len: head,
                            meta: Meta::default(),
                            vnet,
                            tail: &overflow[..len - head],
                        };
                        let mut emit = Stage {
                            umem: stage.umem,
                            nic: &mut *stage.nic,
                            to_tun: &mut *stage.to_tun,
                            pool: &mut *stage.pool,
                            kernel: stage.kernel,
                            counters: &mut *stage.counters,
                            emitted: 0,
                        };
                        let v = handle(&mut p, &mut emit);
                        stage.emitted += emit.emitted;
                        (v, p.start as isize - start as isize, p.len)
                    };
                    stage.frame(f, verdict, delta, new_len);
                    n += 1;
                }
                Ok(n)
            }
            Port::Underlay => {
                let n = stage.nic.recv(rx, max);
                // The first touch of a received frame's headers is a cache miss (the kernel copied
                // it in, often on another CPU): start all of them now so they overlap.
                for f in rx.iter() {
                    stage.umem.prefetch(f);
                }
                for mut f in rx.drain(..) {
                    let len = f.len();
                    let (verdict, delta, new_len) = {
                        let (buf, start) = stage.umem.buffer_mut(&mut f);
                        let mut p = Packet::new(buf, start, len, Meta::default());
                        let v = handle(&mut p, &mut NoEmit);
                        (v, p.start as isize - start as isize, p.len)
                    };
                    stage.frame(f, verdict, delta, new_len);
                }
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_overlay();
        let r = self.nic.flush();
        self.recycle();
        r.map_err(io::Error::other)
    }

    fn register(&mut self, registry: &mio::Registry) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.nic.as_raw_fd()),
            UNDERLAY_TOKEN,
            Interest::READABLE,
        )?;
        registry.register(&mut SourceFd(&self.tun.as_raw_fd()), OVERLAY_TOKEN, Interest::READABLE)
    }

    fn prepare_to_block(&mut self) -> io::Result<bool> {
        self.flush()?;
        // Copy-mode TX sends at most the skb budget per kick: keep going until the ring is
        // empty rather than sleep on unsent frames.
        if self.nic.tx_pending() {
            self.tx_pending_spins += 1;
            if self.tx_pending_spins < TX_PENDING_SPINS {
                return Ok(false);
            }
        }
        self.tx_pending_spins = 0;
        if self.nic.rx_needs_wakeup() {
            self.nic.wake_rx().map_err(io::Error::other)?;
        }
        // A frame that arrived after the last burst: handle it now instead of blocking.
        Ok(!self.nic.rx_pending())
    }

    fn io_counters(&self) -> IoCounters {
        let mut c = self.counters;
        c.rx_oversize = self.nic.invalid_rx();
        c
    }
}

/// Underlay packets make no segments.
struct NoEmit;

impl Emit for NoEmit {
    fn emit(&mut self, _: &mut dyn FnMut(&mut Packet<'_>) -> Verdict) -> bool {
        false
    }
}
