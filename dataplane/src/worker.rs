//! The per-queue poll loop shared by every datapath.
//!
//! A [`Worker`] owns one [`PacketQueue`] and runs, on its own thread:
//!
//! 1. a batch: the [`Handler`] receives up to `batch` (≤ 64) packets per port from the queue and
//!    decides each one's fate — the VXLAN handler loads the route snapshot **once per batch**;
//! 2. [`PacketQueue::flush`]: batched transmit of everything the batch staged;
//! 3. **adaptive polling**: while packets flow the loop spins (busy-poll: no wake-up latency),
//!    yielding the CPU (`sched_yield`) after every empty poll so that it never keeps other
//!    runnable threads on its CPU waiting; after `idle_spell` without a packet it calls [`PacketQueue::prepare_to_block`] and blocks
//!    in `epoll` (mio) on the queue's descriptors, so an idle node uses no CPU. The first packet
//!    after an idle spell wakes the loop and is forwarded like any other.
//!
//! The loop never allocates, locks or logs per packet; I/O errors are counted and logged at most
//! once per second. [`WorkerControl::stop`] ends it promptly, also while it is blocked.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

use crate::io::{Emit, Meta, Packet, PacketQueue, Port, UnderlayFormat, Verdict};
use crate::pipeline::{
    complete_checksum, decap, decap_udp_payload, encap, encap_udp_payload, Action, Config,
    DropReason, Egress, Frame, Gso, Offload, Routes, Segmenter, WorkerStats,
};
use crate::route::Published;

/// Readiness token reserved for the worker's stop waker; backends use smaller tokens.
pub const WAKER_TOKEN: Token = Token(usize::MAX - 1);

/// Largest batch: packets received per port per loop iteration.
pub const MAX_BATCH: usize = 64;

/// Decides what happens to every packet of a batch. The VXLAN pipeline implements it; tests use
/// simpler ones.
pub trait Handler: Send {
    /// Receives and handles one batch from `queue` (at most `budget` packets per port), staging
    /// verdicts in the queue. Reports how many packets were received — also when one port
    /// failed, so that the loop never blocks with packets left on the other port.
    fn run_batch<Q: PacketQueue>(&mut self, queue: &mut Q, budget: usize) -> Batch;
}

/// The outcome of one [`Handler::run_batch`].
#[derive(Debug)]
pub struct Batch {
    /// Packets received (all ports).
    pub packets: usize,
    /// The first I/O error a port reported, if any.
    pub error: Option<io::Error>,
}

/// The VXLAN router: [`encap`] for packets from the overlay, [`decap`] for packets from the
/// underlay (their `_udp_payload` forms for socket backends), one route snapshot per batch, every
/// outcome counted in the worker's [`WorkerStats`].
pub struct VxlanHandler {
    config: Config,
    routes: Arc<Published<Routes>>,
    stats: Arc<WorkerStats>,
}

impl VxlanHandler {
    /// A handler over a validated `config` and the published route table.
    pub fn new(config: Config, routes: Arc<Published<Routes>>, stats: Arc<WorkerStats>) -> Self {
        VxlanHandler { config, routes, stats }
    }

    /// This worker's packet counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }
}

/// Maps a pipeline action to the backend's verdict; `from` is the port the packet came in on.
#[inline]
fn verdict(action: Action, from: Port, meta: &mut Meta) -> Verdict {
    match action {
        Action::Transmit(Egress::Overlay) => Verdict::Send(Port::Overlay),
        Action::Transmit(Egress::Underlay { .. }) => Verdict::Send(Port::Underlay),
        Action::Transmit(Egress::Udp { remote, source_port }) => {
            *meta = Meta { remote: *remote.ip(), src_port: source_port };
            Verdict::Send(Port::Underlay)
        }
        Action::Reply => Verdict::Send(from),
        Action::ToKernel => Verdict::Kernel,
        Action::Drop(_) => Verdict::Drop,
    }
}

#[inline]
fn route_packet(
    p: &mut Packet<'_>,
    from: Port,
    format: UnderlayFormat,
    cfg: &Config,
    routes: &Routes,
    stats: &WorkerStats,
) -> Verdict {
    let Some(mut frame) = Frame::new(&mut *p.buf, p.start, p.len) else {
        // A backend bug, not a packet's fault; never panic over it.
        stats.add_drop(crate::pipeline::DropReason::Truncated);
        return Verdict::Drop;
    };
    let action = match (from, format) {
        (Port::Overlay, UnderlayFormat::EthernetFrame) => encap(&mut frame, cfg, routes),
        (Port::Overlay, UnderlayFormat::UdpPayload) => encap_udp_payload(&mut frame, cfg, routes),
        (Port::Underlay, UnderlayFormat::EthernetFrame) => decap(&mut frame, cfg, routes),
        (Port::Underlay, UnderlayFormat::UdpPayload) => decap_udp_payload(
            &mut frame,
            std::net::IpAddr::V4(p.meta.remote),
            std::net::IpAddr::V4(cfg.local_vtep),
            cfg,
            routes,
        ),
    };
    let (start, len) = (frame.start(), frame.len());
    p.start = start;
    p.len = len;
    stats.record(&action);
    verdict(action, from, &mut p.meta)
}

/// A packet from the overlay device: completes a checksum the kernel left partial, and cuts a
/// super-packet into segments, each encapsulated on its own and sent through `emit`.
#[inline]
fn route_overlay(
    p: &mut Packet<'_>,
    emit: &mut dyn Emit,
    format: UnderlayFormat,
    cfg: &Config,
    routes: &Routes,
    stats: &WorkerStats,
) -> Verdict {
    let offload = match Offload::parse(&p.vnet) {
        Ok(o) => o,
        Err(reason) => {
            stats.add_drop(reason);
            return Verdict::Drop;
        }
    };
    if offload.gso == Gso::None {
        if let Some(span) = offload.csum {
            let Some(data) = p.buf.get_mut(p.start..p.start + p.len) else {
                stats.add_drop(DropReason::Truncated);
                return Verdict::Drop;
            };
            if let Err(reason) = complete_checksum(data, span) {
                stats.add_drop(reason);
                return Verdict::Drop;
            }
        }
        return route_packet(p, Port::Overlay, format, cfg, routes, stats);
    }
    let Some(head) = p.buf.get(p.start..p.start + p.len) else {
        stats.add_drop(DropReason::Truncated);
        return Verdict::Drop;
    };
    let mut seg = match Segmenter::new(head, p.tail, &offload) {
        Ok(seg) => seg,
        Err(reason) => {
            stats.add_drop(reason);
            return Verdict::Drop;
        }
    };
    while seg.next_len().is_some() {
        let mut stop = false;
        let sent = emit.emit(&mut |q| {
            let Some(room) = q.buf.get_mut(q.start..) else { return Verdict::Drop };
            q.len = seg.write_next(room);
            let v = route_packet(q, Port::Overlay, format, cfg, routes, stats);
            // A segment over the MTU was answered with one ICMP error; do not send one per segment.
            stop = v == Verdict::Send(Port::Overlay);
            v
        });
        if !sent || stop {
            break;
        }
    }
    // The super-packet itself was consumed by its segments.
    Verdict::Drop
}

impl Handler for VxlanHandler {
    fn run_batch<Q: PacketQueue>(&mut self, queue: &mut Q, budget: usize) -> Batch {
        let snapshot = self.routes.load();
        let routes: &Routes = &snapshot;
        let (cfg, stats) = (&self.config, &*self.stats);
        // A failing port must not starve the other one: run both, then report the first error.
        let out = queue.rx_burst(Port::Overlay, budget, |p, emit| {
            route_overlay(p, emit, Q::UNDERLAY, cfg, routes, stats)
        });
        let inb = queue.rx_burst(Port::Underlay, budget, |p, _| {
            route_packet(p, Port::Underlay, Q::UNDERLAY, cfg, routes, stats)
        });
        let n = out.as_ref().map_or(0, |n| *n) + inb.as_ref().map_or(0, |n| *n);
        stats.add_rx(n as u64);
        Batch { packets: n, error: out.err().or(inb.err()) }
    }
}

/// How the loop polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollConfig {
    /// Packets per port per batch (clamped to 1..=[`MAX_BATCH`]).
    pub batch: usize,
    /// How long the loop keeps spinning after the last packet before it blocks.
    pub idle_spell: Duration,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig { batch: MAX_BATCH, idle_spell: Duration::from_micros(200) }
    }
}

/// Counters about the loop itself (not about packets). Written by the worker thread only.
#[derive(Debug, Default)]
pub struct LoopStats {
    /// Batches that received at least one packet.
    pub busy_batches: AtomicU64,
    /// Times the loop blocked in poll after an idle spell.
    pub blocks: AtomicU64,
    /// Backend I/O errors (device or socket failures, not per-packet drops).
    pub io_errors: AtomicU64,
    /// Packets the backend failed to transmit (mirrors the backend's counter).
    pub tx_failed: AtomicU64,
    /// Received packets too large for a buffer slot (mirrors the backend's counter).
    pub rx_oversize: AtomicU64,
    /// Packets for the kernel path that the backend could not hand over (mirrors the backend).
    pub kernel_unsupported: AtomicU64,
    /// Super-packets read from the overlay device (mirrors the backend).
    pub super_rx: AtomicU64,
    /// Packets written to the overlay device that merged several segments (mirrors the backend).
    pub coalesced_tx: AtomicU64,
    /// Segments merged into them (mirrors the backend).
    pub coalesced_segments: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// Stops a running worker; cloneable, usable from any thread.
#[derive(Debug, Clone)]
pub struct WorkerControl {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl WorkerControl {
    /// Asks the worker to finish its current batch and return; wakes it if it is blocked.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "cannot wake a worker to stop it");
        }
    }
}

/// One poll-loop worker over one queue.
pub struct Worker<Q: PacketQueue, H: Handler> {
    queue: Q,
    handler: H,
    poll: Poll,
    events: Events,
    cfg: PollConfig,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    stats: Arc<LoopStats>,
    name: String,
}

impl<Q: PacketQueue, H: Handler> Worker<Q, H> {
    /// A worker named `name` (for logs) over `queue`, registering the queue's descriptors.
    ///
    /// # Errors
    /// epoll setup or registration failures.
    pub fn new(
        name: impl Into<String>,
        mut queue: Q,
        handler: H,
        cfg: PollConfig,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        queue.register(poll.registry())?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
        let cfg = PollConfig { batch: cfg.batch.clamp(1, MAX_BATCH), ..cfg };
        Ok(Worker {
            queue,
            handler,
            poll,
            events: Events::with_capacity(16),
            cfg,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            stats: Arc::new(LoopStats::default()),
            name: name.into(),
        })
    }

    /// A handle that stops this worker.
    pub fn control(&self) -> WorkerControl {
        WorkerControl { stop: self.stop.clone(), waker: self.waker.clone() }
    }

    /// The loop's own counters.
    pub fn loop_stats(&self) -> Arc<LoopStats> {
        self.stats.clone()
    }

    /// Runs until [`WorkerControl::stop`]; returns the queue and handler (their counters, and
    /// the queue's devices, which close when it is dropped).
    ///
    /// # Errors
    /// Only failures of the readiness machinery itself (epoll); I/O errors of the queue are
    /// counted, logged (rate-limited) and the loop goes on.
    pub fn run(mut self) -> io::Result<(Q, H)> {
        let mut idle_since: Option<Instant> = None;
        let mut last_error_log: Option<Instant> = None;
        let mut errors_since_log = 0u64;
        let mut busy = 0u64;
        while !self.stop.load(Ordering::Acquire) {
            let Batch { packets: got, error } =
                self.handler.run_batch(&mut self.queue, self.cfg.batch);
            if let Some(e) = error {
                bump(&self.stats.io_errors, 1);
                errors_since_log += 1;
                if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(worker = %self.name, error = %e, errors = errors_since_log, "packet I/O error");
                    last_error_log = Some(Instant::now());
                    errors_since_log = 0;
                }
            }
            if let Err(e) = self.queue.flush() {
                bump(&self.stats.io_errors, 1);
                if last_error_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(worker = %self.name, error = %e, "packet transmit error");
                    last_error_log = Some(Instant::now());
                }
            }
            if got > 0 {
                bump(&self.stats.busy_batches, 1);
                busy += 1;
                if busy.is_multiple_of(1024) {
                    self.publish_io_counters();
                }
                idle_since = None;
                continue;
            }
            let now = Instant::now();
            let since = *idle_since.get_or_insert(now);
            if now.duration_since(since) < self.cfg.idle_spell {
                // Poll again, but let any other runnable thread on this CPU go first: a worker
                // that spins with nothing to do must not hold the CPU from the threads that
                // produce its next packets (the kernel's softirqs, another node's worker, the
                // application). When nothing else is runnable this returns at once.
                std::thread::yield_now();
                continue;
            }
            self.publish_io_counters();
            if !self.queue.prepare_to_block()? {
                continue;
            }
            bump(&self.stats.blocks, 1);
            match self.poll.poll(&mut self.events, None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            idle_since = None;
        }
        self.publish_io_counters();
        Ok((self.queue, self.handler))
    }

    fn publish_io_counters(&self) {
        let c = self.queue.io_counters();
        self.stats.tx_failed.store(c.tx_failed, Ordering::Relaxed);
        self.stats.rx_oversize.store(c.rx_oversize, Ordering::Relaxed);
        self.stats.kernel_unsupported.store(c.kernel_unsupported, Ordering::Relaxed);
        self.stats.super_rx.store(c.super_rx, Ordering::Relaxed);
        self.stats.coalesced_tx.store(c.coalesced_tx, Ordering::Relaxed);
        self.stats.coalesced_segments.store(c.coalesced_segments, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    //! The loop driven over an in-memory backend: Unix datagram sockets stand in for both ports,
    //! so batching, staging, blocking and stopping are exercised without root.
    use super::*;
    use crate::io::{Emit, IoCounters, Meta, Packet, Port, UnderlayFormat, Verdict};
    use mio::unix::SourceFd;
    use mio::Interest;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;

    struct LoopQueue {
        overlay: UnixDatagram,
        underlay: UnixDatagram,
        bufs: Vec<Vec<u8>>,
        staged: Vec<(Port, usize, usize, usize)>,
        counters: IoCounters,
    }

    impl LoopQueue {
        fn sock(&self, p: Port) -> &UnixDatagram {
            match p {
                Port::Overlay => &self.overlay,
                Port::Underlay => &self.underlay,
            }
        }
    }

    impl PacketQueue for LoopQueue {
        const UNDERLAY: UnderlayFormat = UnderlayFormat::UdpPayload;

        fn rx_burst<F>(&mut self, port: Port, max: usize, mut handle: F) -> io::Result<usize>
        where
            F: FnMut(&mut Packet<'_>, &mut dyn Emit) -> Verdict,
        {
            /// This backend never has spare buffers for segments.
            struct NoEmit;
            impl Emit for NoEmit {
                fn emit(&mut self, _: &mut dyn FnMut(&mut Packet<'_>) -> Verdict) -> bool {
                    false
                }
            }
            let mut n = 0;
            while n < max {
                let slot = self.staged.len();
                let mut buf = std::mem::take(&mut self.bufs[slot]);
                let got = match self.sock(port).recv(&mut buf[16..]) {
                    Ok(g) => g,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.bufs[slot] = buf;
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let mut p = Packet::new(&mut buf, 16, got, Meta::default());
                let v = handle(&mut p, &mut NoEmit);
                let (start, len) = (p.start, p.len);
                self.bufs[slot] = buf;
                match v {
                    Verdict::Send(to) => self.staged.push((to, slot, start, len)),
                    Verdict::Kernel => self.counters.kernel_unsupported += 1,
                    Verdict::Drop => {}
                }
                n += 1;
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            for (to, slot, start, len) in self.staged.drain(..) {
                let bytes = &self.bufs[slot][start..start + len];
                let s = match to {
                    Port::Overlay => &self.overlay,
                    Port::Underlay => &self.underlay,
                };
                if s.send(bytes).is_err() {
                    self.counters.tx_failed += 1;
                }
            }
            Ok(())
        }

        fn register(&mut self, registry: &mio::Registry) -> io::Result<()> {
            registry.register(
                &mut SourceFd(&self.overlay.as_raw_fd()),
                Token(0),
                Interest::READABLE,
            )?;
            registry.register(
                &mut SourceFd(&self.underlay.as_raw_fd()),
                Token(1),
                Interest::READABLE,
            )
        }

        fn io_counters(&self) -> IoCounters {
            self.counters
        }
    }

    /// Overlay → underlay with a one-byte "header" prepended in the headroom; underlay → overlay
    /// with it stripped; packets starting with 0xff are dropped. Counts batches and their sizes.
    #[derive(Default)]
    struct Prepend {
        batches: usize,
        largest: usize,
    }

    impl Handler for Prepend {
        fn run_batch<Q: PacketQueue>(&mut self, q: &mut Q, budget: usize) -> Batch {
            let verdict = |p: &mut Packet<'_>, to: Port| {
                if p.buf[p.start] == 0xff {
                    return Verdict::Drop;
                }
                match to {
                    Port::Underlay => {
                        p.start -= 1;
                        p.len += 1;
                        p.buf[p.start] = 0xAA;
                    }
                    Port::Overlay => {
                        p.start += 1;
                        p.len -= 1;
                    }
                }
                Verdict::Send(to)
            };
            let a = q.rx_burst(Port::Overlay, budget, |p, _| verdict(p, Port::Underlay)).unwrap();
            let b = q.rx_burst(Port::Underlay, budget, |p, _| verdict(p, Port::Overlay)).unwrap();
            if a + b > 0 {
                self.batches += 1;
                self.largest = self.largest.max(a.max(b));
            }
            Batch { packets: a + b, error: None }
        }
    }

    fn setup() -> (UnixDatagram, UnixDatagram, LoopQueue) {
        let (o_ext, o_int) = UnixDatagram::pair().unwrap();
        let (u_ext, u_int) = UnixDatagram::pair().unwrap();
        o_int.set_nonblocking(true).unwrap();
        u_int.set_nonblocking(true).unwrap();
        let q = LoopQueue {
            overlay: o_int,
            underlay: u_int,
            bufs: vec![vec![0u8; 256]; 2 * MAX_BATCH],
            staged: Vec::new(),
            counters: IoCounters::default(),
        };
        (o_ext, u_ext, q)
    }

    #[test]
    fn forwards_both_ways_blocks_when_idle_and_wakes_for_the_first_packet() {
        let (overlay, underlay, q) = setup();
        overlay.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        underlay.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let cfg = PollConfig { batch: 8, idle_spell: Duration::from_millis(1) };
        let w = Worker::new("test", q, Prepend::default(), cfg).unwrap();
        let ctl = w.control();
        let stats = w.loop_stats();
        let t = std::thread::spawn(move || w.run());

        // 100 packets queued before the worker looks: batches of at most 8.
        for i in 0..100u8 {
            overlay.send(&[i, 1, 2]).unwrap();
        }
        overlay.send(&[0xff, 0]).unwrap(); // dropped
        let mut buf = [0u8; 64];
        for i in 0..100u8 {
            let n = underlay.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[0xAA, i, 1, 2]);
        }

        // Idle: the worker blocks (and keeps blocking: no busy loop while nothing arrives).
        let blocked = |min: u64| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while stats.blocks.load(Ordering::Relaxed) < min {
                assert!(Instant::now() < deadline, "worker never blocked");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        blocked(1);
        // Readiness edges left from the burst may cause one wake-up; let it pass.
        std::thread::sleep(Duration::from_millis(30));
        let before = stats.blocks.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(stats.blocks.load(Ordering::Relaxed), before, "woke up with nothing to do");

        // First packet after idle is forwarded, the other way too.
        underlay.send(&[0xAA, 7, 7]).unwrap();
        let n = overlay.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[7, 7]);

        ctl.stop();
        let (_q, h) = t.join().unwrap().unwrap();
        assert!(h.largest <= 8, "batch exceeded its budget: {}", h.largest);
        assert!(h.batches >= 100 / 8);
    }

    #[test]
    fn stop_ends_a_blocked_worker() {
        let (_o, _u, q) = setup();
        let w = Worker::new("test", q, Prepend::default(), PollConfig::default()).unwrap();
        let ctl = w.control();
        let t = std::thread::spawn(move || w.run());
        std::thread::sleep(Duration::from_millis(20));
        ctl.stop();
        t.join().unwrap().unwrap();
    }
}
