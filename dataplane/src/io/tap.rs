//! The TAP/UDP fallback backend, for hosts without AF_XDP.
//!
//! - Overlay side: `linen.1` as a TAP device with virtio-net headers and segmentation offload
//!   ([`TunQueue`]), like the AF_XDP datapath: super-packets of up to 64 KB come in whole, and the
//!   TCP segments a batch decapsulated go back merged per flow.
//! - Underlay receive: a UDP socket bound to the local VTEP IP and the VXLAN port with `UDP_GRO`,
//!   read with `recvmmsg`. Where the underlay device coalesces (GRO on), one message carries many
//!   VXLAN datagrams of one sender back to back; the backend lends each datagram to the worker.
//!   The kernel has already checked the outer IP and UDP headers (destination address, port, UDP
//!   checksum when present) and hands over the UDP payload (VXLAN header + inner frame) with the
//!   outer source address, which the pipeline checks against the known VTEPs.
//! - Underlay send, [`UnderlaySend::Udp`] (default): [`FLOW_SOCKETS`] UDP sockets on the local
//!   VTEP address, one chosen per inner flow by its flow hash, so each flow keeps one outer
//!   source port and receivers' RSS/ECMP spread flows. The segments of a super-packet are written
//!   back to back and sent as one message with `UDP_SEGMENT`: the kernel routes it once and cuts
//!   it into datagrams at the device. [`UnderlaySend::RawIp`]: an `IPPROTO_RAW` socket, one
//!   datagram per packet; the backend writes the outer IPv4 and UDP headers itself, so the outer
//!   source port is exactly the pipeline's flow hash (as the kernel's VXLAN device does) and the
//!   UDP checksum zero (RFC 7348). See docs/datapath.md.
//!
//! Buffers, all allocated once: a region of [`MAX_BATCH`] slots for TAP reads plus an overflow
//! area for the part of a super-packet beyond its slot, a region of [`MAX_BATCH`] 64 KiB slots
//! for UDP receives, and an emit area the segments of super-packets are written into; when it
//! fills up within a batch, what it holds is sent before the next segment.

use std::io::{self, ErrorKind, IoSlice};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::sys::{self, RxDatagram, TxDatagram, MAX_BATCH};
use super::tun::TunQueue;
use super::{Emit, IoCounters, Meta, Packet, PacketQueue, Port, UnderlayFormat, Verdict};
use crate::pipeline::{Coalescer, MAX_COALESCE_PARTS, VNET_HDR_LEN};

/// Headroom in front of every received packet: room for the outer headers the worker and this
/// backend prepend (VXLAN 8 + UDP 8 + IPv4 20), rounded up.
pub const HEADROOM: usize = 64;
/// Readiness token of the TAP device.
pub const TAP_TOKEN: Token = Token(0);
/// Readiness token of the UDP socket.
pub const UDP_TOKEN: Token = Token(1);
/// UDP sockets the default send mode spreads flows over.
pub const FLOW_SOCKETS: usize = 16;

const IPV4_UDP_HDR: usize = 28;
const VXLAN_LEN: usize = 8;
/// Socket buffer size asked for (receive and send): about 2,800 full-size datagrams.
const SOCKET_BUFFER: usize = 4 << 20;
/// Largest UDP receive message (with `UDP_GRO`): 64 KiB of datagrams.
const RX_SLOT: usize = 65_536;
/// Room for the part of a super-packet read from the TAP beyond its slot.
const OVERFLOW_LEN: usize = 65_536 + 64;
/// The emit area: about 170 full-size segments before an early send.
const EMIT_LEN: usize = 256 << 10;
/// Most datagrams in one `UDP_SEGMENT` message (the kernel's limit on older releases).
const MAX_SEGMENTS: u16 = 64;
/// Largest `UDP_SEGMENT` message: the UDP payload limit of an IPv4 datagram.
const MAX_GSO_BYTES: usize = 65_000;

/// How underlay packets are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderlaySend {
    /// Raw IPv4 socket, one datagram per packet: outer UDP source port = flow hash exactly.
    /// Needs `CAP_NET_RAW`; no segmentation offload.
    RawIp,
    /// [`FLOW_SOCKETS`] UDP sockets chosen by flow hash, with `UDP_SEGMENT` for the segments of
    /// a super-packet.
    Udp,
}

/// Settings of a [`TapQueue`].
#[derive(Debug, Clone)]
pub struct TapConfig {
    /// TAP device name (`linen.1`).
    pub device: String,
    /// Local VTEP IPv4 address the UDP socket binds to.
    pub local_ip: Ipv4Addr,
    /// VXLAN UDP port (8472).
    pub port: u16,
    /// Overlay MTU (the largest inner IP packet); sizes the buffers.
    pub mtu: u32,
    /// Preferred send method; [`UnderlaySend::RawIp`] falls back to [`UnderlaySend::Udp`] when the
    /// raw socket cannot be opened.
    pub send: UnderlaySend,
}

/// Why a [`TapQueue`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// Creating the TAP device failed.
    #[error("cannot create TAP device {device}: {source} (needs CAP_NET_ADMIN and /dev/net/tun; is another linend running?)")]
    Tap {
        /// Device name.
        device: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Binding the UDP socket failed.
    #[error("cannot bind the VXLAN socket to {addr}: {source} (is the address local, and the port free — no kernel VXLAN device or flanneld on it?)")]
    Bind {
        /// Address the socket was bound to.
        addr: SocketAddrV4,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Which buffer a staged packet lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    /// A slot of the TAP-read region.
    Overlay,
    /// A slot of the UDP-receive region.
    Underlay,
    /// The emit area (segments).
    Emit,
}

/// A packet staged for the overlay device: `len` bytes at `start` of `area`.
#[derive(Debug, Clone, Copy)]
struct ToTun {
    area: Area,
    start: usize,
    len: usize,
}

/// A message staged for the underlay: one datagram, or `count` datagrams of `seg` bytes (the
/// last may be shorter) back to back, sent with `UDP_SEGMENT`.
#[derive(Debug, Clone, Copy)]
struct ToNet {
    area: Area,
    start: usize,
    len: usize,
    to: SocketAddrV4,
    socket: usize,
    seg: usize,
    count: u16,
    closed: bool,
}

/// A region of equal slots.
#[derive(Debug)]
struct Region {
    bytes: Vec<u8>,
    stride: usize,
}

impl Region {
    fn new(stride: usize, slots: usize) -> Region {
        Region { bytes: vec![0u8; stride * slots], stride }
    }
    fn slot(&mut self, i: usize) -> &mut [u8] {
        &mut self.bytes[i * self.stride..(i + 1) * self.stride]
    }
}

/// The TAP/UDP backend's queue.
#[derive(Debug)]
pub struct TapQueue {
    tun: TunQueue,
    udp: Socket,
    senders: Vec<Socket>,
    raw: Option<Socket>,
    local_ip: Ipv4Addr,
    port: u16,
    ovl: Region,
    overflow: Box<[u8]>,
    und: Region,
    emit: Box<[u8]>,
    emit_used: usize,
    rx_meta: [RxDatagram; MAX_BATCH],
    to_tun: Vec<ToTun>,
    to_net: Vec<ToNet>,
    coalescer: Coalescer,
    counters: IoCounters,
}

fn bind_error(addr: SocketAddrV4) -> impl Fn(io::Error) -> TapError {
    move |source| TapError::Bind { addr, source }
}

/// A UDP socket for sending VXLAN: non-blocking, large buffers, DF clear (as the kernel's VXLAN
/// device sends), bound to `addr`.
fn udp_socket(addr: SocketAddrV4) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    // Best effort: bigger buffers absorb bursts.
    if let Err(e) = sys::grow_socket_buffers(s.as_raw_fd(), SOCKET_BUFFER) {
        tracing::warn!(error = %e, "cannot enlarge a VXLAN socket's buffers");
    }
    s.bind(&SocketAddr::V4(addr).into())?;
    Ok(s)
}

impl TapQueue {
    /// Creates the TAP device and the sockets. The device exists as long as a descriptor of
    /// the queue does (it is not persistent): dropping the queue removes `linen.1` with its
    /// routes, unless a copy of [`TapQueue::handover_fds`] is kept elsewhere.
    ///
    /// # Errors
    /// [`TapError`] naming the device or address that failed.
    pub fn new(cfg: &TapConfig) -> Result<TapQueue, TapError> {
        let tun = TunQueue::open(&cfg.device)
            .map_err(|source| TapError::Tap { device: cfg.device.clone(), source })?;

        let addr = SocketAddrV4::new(cfg.local_ip, cfg.port);
        let udp = udp_socket(addr).map_err(bind_error(addr))?;
        if let Err(e) = sys::enable_udp_gro(udp.as_raw_fd()) {
            tracing::warn!(error = %e, "UDP_GRO unavailable: VXLAN datagrams are read one by one");
        }
        TapQueue::with_parts(cfg, tun, udp)
    }

    /// Takes over the queue an earlier process ran ([`TapQueue::handover_fds`]): `tun`, taken
    /// over with [`TunQueue::adopt`], and `udp`, the VXLAN socket, which must be a UDP socket
    /// bound to `cfg.local_ip` and `cfg.port`. Datagrams that arrived while no process read it
    /// are still queued in it. The send sockets are opened afresh (they hold no state).
    ///
    /// # Errors
    /// [`TapError::Bind`] when `udp` is not bound to that address.
    pub fn adopt(
        cfg: &TapConfig,
        tun: TunQueue,
        udp: std::os::fd::OwnedFd,
    ) -> Result<TapQueue, TapError> {
        let addr = SocketAddrV4::new(cfg.local_ip, cfg.port);
        let udp = Socket::from(udp);
        let bound = udp.local_addr().ok().and_then(|a| a.as_socket_ipv4());
        let is_udp = udp.r#type().ok() == Some(Type::DGRAM);
        if bound != Some(addr) || !is_udp {
            return Err(TapError::Bind {
                addr,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the handed-over VXLAN socket is bound to {bound:?}, not to {addr}"),
                ),
            });
        }
        udp.set_nonblocking(true).map_err(bind_error(addr))?;
        TapQueue::with_parts(cfg, tun, udp)
    }

    /// The descriptors that carry the queue's kernel state across a restart: the TAP queue and
    /// the bound VXLAN socket ([`TapQueue::adopt`] takes them back).
    pub fn handover_fds(&self) -> (std::os::fd::BorrowedFd<'_>, std::os::fd::BorrowedFd<'_>) {
        use std::os::fd::AsFd;
        (self.tun.as_fd(), self.udp.as_fd())
    }

    fn with_parts(cfg: &TapConfig, tun: TunQueue, udp: Socket) -> Result<TapQueue, TapError> {
        let addr = SocketAddrV4::new(cfg.local_ip, cfg.port);

        let raw = match cfg.send {
            UnderlaySend::Udp => None,
            UnderlaySend::RawIp => {
                match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
                {
                    Ok(s) => {
                        s.set_nonblocking(true).map_err(bind_error(addr))?;
                        let _ = sys::grow_socket_buffers(s.as_raw_fd(), SOCKET_BUFFER);
                        Some(s)
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "raw IPv4 socket unavailable (needs CAP_NET_RAW); sending VXLAN from \
                             UDP sockets chosen by flow hash instead"
                        );
                        None
                    }
                }
            }
        };
        let mut senders = Vec::new();
        if raw.is_none() {
            let any_port = SocketAddrV4::new(cfg.local_ip, 0);
            for _ in 0..FLOW_SOCKETS {
                let s = udp_socket(any_port).map_err(bind_error(any_port))?;
                sys::set_pmtudisc_dont(s.as_raw_fd()).map_err(bind_error(any_port))?;
                senders.push(s);
            }
        }

        // Ethernet header + the largest IP packet + slack for a VLAN tag a peer should not send.
        let frame_max = cfg.mtu as usize + 14 + 4;
        let stride = (HEADROOM + frame_max + VXLAN_LEN + 63) & !63;
        Ok(TapQueue {
            tun,
            udp,
            senders,
            raw,
            local_ip: cfg.local_ip,
            port: cfg.port,
            ovl: Region::new(stride, MAX_BATCH),
            overflow: vec![0u8; OVERFLOW_LEN].into_boxed_slice(),
            und: Region::new(HEADROOM + RX_SLOT, MAX_BATCH),
            emit: vec![0u8; EMIT_LEN].into_boxed_slice(),
            emit_used: 0,
            rx_meta: [RxDatagram::default(); MAX_BATCH],
            to_tun: Vec::with_capacity(4 * MAX_BATCH),
            to_net: Vec::with_capacity(4 * MAX_BATCH),
            coalescer: Coalescer::new(),
            counters: IoCounters::default(),
        })
    }

    /// The device name the kernel gave the TAP.
    pub fn device(&self) -> &str {
        self.tun.name()
    }

    /// How underlay packets are sent (raw IPv4 or the UDP sockets).
    pub fn send_mode(&self) -> UnderlaySend {
        if self.raw.is_some() {
            UnderlaySend::RawIp
        } else {
            UnderlaySend::Udp
        }
    }

    fn area_bytes(&self, area: Area) -> &[u8] {
        match area {
            Area::Overlay => &self.ovl.bytes,
            Area::Underlay => &self.und.bytes,
            Area::Emit => &self.emit,
        }
    }

    /// Writes the packets staged for the overlay device, merged per flow.
    fn write_overlay(&mut self) {
        if self.to_tun.is_empty() {
            return;
        }
        let mut coalescer = std::mem::take(&mut self.coalescer);
        let mut next = 0;
        while next < self.to_tun.len() {
            coalescer.clear();
            while next < self.to_tun.len() {
                let t = self.to_tun[next];
                let data = &self.area_bytes(t.area)[t.start..t.start + t.len];
                if !coalescer.push(next as u32, data) {
                    break;
                }
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
                    let t = self.to_tun[p.id as usize];
                    let data = &self.area_bytes(t.area)[t.start..t.start + t.len];
                    iov[k] = IoSlice::new(
                        data.get(p.start as usize..(p.start + p.len) as usize).unwrap_or_default(),
                    );
                    k += 1;
                }
                match self.tun.write(&w.vnet, &iov[..k]) {
                    Ok(_) if w.segments > 1 => {
                        self.counters.coalesced_tx += 1;
                        self.counters.coalesced_segments += w.segments as u64;
                    }
                    Ok(_) => {}
                    Err(_) => self.counters.tx_failed += w.segments as u64,
                }
            }
        }
        coalescer.clear();
        self.coalescer = coalescer;
        self.to_tun.clear();
    }
}

/// What staging needs, borrowed apart from the buffer a packet is lent from.
struct Stage<'q> {
    emit: &'q mut [u8],
    emit_used: &'q mut usize,
    to_tun: &'q mut Vec<ToTun>,
    to_net: &'q mut Vec<ToNet>,
    counters: &'q mut IoCounters,
    senders: &'q [Socket],
    raw: Option<&'q Socket>,
    local_ip: Ipv4Addr,
    port: u16,
}

impl Stage<'_> {
    /// Stages a packet the worker decided on: `buf` is the slot or emit space it was lent (so
    /// that a raw-mode header can be written in front), `base` where `buf` starts in `area`.
    fn packet(
        &mut self,
        area: Area,
        base: usize,
        buf: &mut [u8],
        (start, len, meta): (usize, usize, Meta),
        v: Verdict,
    ) {
        match v {
            Verdict::Drop => {}
            Verdict::Kernel => self.counters.kernel_unsupported += 1,
            Verdict::Send(Port::Overlay) => {
                self.to_tun.push(ToTun { area, start: base + start, len })
            }
            Verdict::Send(Port::Underlay) => {
                if self.raw.is_some() {
                    if start < IPV4_UDP_HDR || len + IPV4_UDP_HDR > usize::from(u16::MAX) {
                        self.counters.tx_failed += 1;
                        return;
                    }
                    let (s, l) = (start - IPV4_UDP_HDR, len + IPV4_UDP_HDR);
                    write_ipv4_udp(&mut buf[s..start], self.local_ip, meta, self.port, l);
                    self.to_net.push(ToNet {
                        area,
                        start: base + s,
                        len: l,
                        to: SocketAddrV4::new(meta.remote, 0),
                        socket: 0,
                        seg: l,
                        count: 1,
                        closed: true,
                    });
                    return;
                }
                let to = SocketAddrV4::new(meta.remote, self.port);
                let socket = usize::from(meta.src_port) % self.senders.len().max(1);
                let at = base + start;
                if let Some(last) = self.to_net.last_mut() {
                    let joins = area == Area::Emit
                        && last.area == Area::Emit
                        && !last.closed
                        && last.to == to
                        && last.socket == socket
                        && last.start + last.len == at
                        && len <= last.seg
                        && last.count < MAX_SEGMENTS
                        && last.len + len <= MAX_GSO_BYTES;
                    if joins {
                        last.len += len;
                        last.count += 1;
                        last.closed = len < last.seg;
                        return;
                    }
                }
                self.to_net.push(ToNet {
                    area,
                    start: at,
                    len,
                    to,
                    socket,
                    seg: len,
                    count: 1,
                    closed: area != Area::Emit,
                });
            }
        }
    }
}

/// Lends emit space to the worker for the segments of a super-packet.
struct Emitter<'s, 'q> {
    stage: &'s mut Stage<'q>,
    /// Room one segment needs (headroom included).
    room: usize,
    /// Headroom in front of a segment: the VXLAN header, and the outer IPv4 + UDP headers in raw
    /// mode. In UDP mode segments then lie back to back, ready for `UDP_SEGMENT`.
    headroom: usize,
    /// The emit area may be reused for new segments: nothing staged for the overlay lives
    /// there, and what is staged for the underlay is sent first.
    flush_net: &'s mut dyn FnMut(&mut Stage<'q>),
}

impl Emit for Emitter<'_, '_> {
    fn emit(&mut self, fill: &mut dyn FnMut(&mut Packet<'_>) -> Verdict) -> bool {
        if *self.stage.emit_used + self.room > self.stage.emit.len() {
            // Full: send what the area holds, then start over, unless an ICMP error for the
            // overlay still waits in it.
            if self.stage.to_tun.iter().any(|t| t.area == Area::Emit) {
                self.stage.counters.tx_failed += 1;
                return false;
            }
            (self.flush_net)(self.stage);
            *self.stage.emit_used = 0;
        }
        let base = *self.stage.emit_used;
        let (v, start, len, meta) = {
            let buf = &mut self.stage.emit[base..base + self.room];
            let mut p = Packet::new(buf, self.headroom, 0, Meta::default());
            let v = fill(&mut p);
            (v, p.start, p.len, p.meta)
        };
        match v {
            Verdict::Send(_) if start + len <= self.room => {
                *self.stage.emit_used = base + start + len;
                // Split the borrow: the stage writes a raw-mode header into its own emit area.
                let emit = std::mem::take(&mut self.stage.emit);
                let buf = &mut emit[base..base + self.room];
                self.stage.packet(Area::Emit, base, buf, (start, len, meta), v);
                self.stage.emit = emit;
            }
            Verdict::Send(_) => self.stage.counters.tx_failed += 1,
            other => self.stage.packet(Area::Emit, base, &mut [], (start, len, meta), other),
        }
        true
    }
}

/// Sends the staged underlay messages that live in `area` from `bytes`, grouped by socket.
fn send_staged(
    to_net: &mut Vec<ToNet>,
    area: Area,
    bytes: &[u8],
    senders: &[Socket],
    raw: Option<&Socket>,
    counters: &mut IoCounters,
) {
    let sockets = if raw.is_some() { 1 } else { senders.len() };
    let mut batch: [TxDatagram; MAX_BATCH] = [TxDatagram {
        start: 0,
        len: 0,
        to: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        segment: 0,
    }; MAX_BATCH];
    for s in 0..sockets {
        let fd: RawFd = match (raw, senders.get(s)) {
            (Some(r), _) => r.as_raw_fd(),
            (None, Some(sock)) => sock.as_raw_fd(),
            (None, None) => break,
        };
        let mut n = 0;
        let mut datagrams = [0u16; MAX_BATCH];
        let mut i = 0;
        while i <= to_net.len() {
            let take = i < to_net.len()
                && to_net[i].area == area
                && (raw.is_some() || to_net[i].socket == s);
            if take {
                let m = to_net[i];
                batch[n] = TxDatagram {
                    start: m.start,
                    len: m.len,
                    to: m.to,
                    segment: if m.count > 1 { m.seg as u16 } else { 0 },
                };
                datagrams[n] = m.count;
                n += 1;
            }
            if n == MAX_BATCH || (i == to_net.len() && n > 0) {
                let lost = send_all(fd, bytes, &batch[..n], &datagrams[..n]);
                counters.tx_failed += lost;
                n = 0;
            }
            i += 1;
        }
    }
    to_net.retain(|m| m.area != area);
}

/// Sends `msgs` with `sendmmsg`, retrying a full socket buffer a bounded number of times;
/// returns the datagrams lost.
fn send_all(fd: RawFd, bytes: &[u8], msgs: &[TxDatagram], datagrams: &[u16]) -> u64 {
    let mut done = 0;
    let mut stalls = 0;
    let mut lost = 0u64;
    while done < msgs.len() {
        match sys::send_batch(fd, bytes, &msgs[done..]) {
            Ok(0) => {
                // Socket buffer full: give the NIC queue a moment, a bounded number of times.
                stalls += 1;
                if stalls > 64 {
                    break;
                }
                std::thread::yield_now();
            }
            Ok(n) => done += n,
            Err(_) => {
                // One bad message (e.g. no route to that VTEP) must not hold back the rest.
                lost += u64::from(datagrams[done]);
                done += 1;
            }
        }
    }
    lost + datagrams[done..].iter().map(|&d| u64::from(d)).sum::<u64>()
}

/// Writes an outer IPv4 header (no options, DF clear, TTL 64; total length, ID and checksum left
/// zero for the kernel to fill in, as `IP_HDRINCL` sockets do) and a UDP header with checksum 0.
fn write_ipv4_udp(h: &mut [u8], src: Ipv4Addr, meta: Meta, dst_port: u16, total: usize) {
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[4..8].fill(0); // ID (kernel fills it), flags/fragment offset: DF clear
    h[8] = 64;
    h[9] = 17;
    h[10..12].fill(0);
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&meta.remote.octets());
    h[20..22].copy_from_slice(&meta.src_port.to_be_bytes());
    h[22..24].copy_from_slice(&dst_port.to_be_bytes());
    h[24..26].copy_from_slice(&((total - 20) as u16).to_be_bytes());
    h[26..28].fill(0);
}

impl PacketQueue for TapQueue {
    const UNDERLAY: UnderlayFormat = UnderlayFormat::UdpPayload;

    fn rx_burst<F>(&mut self, port: Port, max: usize, mut handle: F) -> io::Result<usize>
    where
        F: FnMut(&mut Packet<'_>, &mut dyn Emit) -> Verdict,
    {
        let max = max.min(MAX_BATCH);
        let TapQueue {
            tun,
            udp,
            senders,
            raw,
            local_ip,
            port: vx_port,
            ovl,
            overflow,
            und,
            emit,
            emit_used,
            rx_meta,
            to_tun,
            to_net,
            counters,
            ..
        } = self;
        let mut stage = Stage {
            emit,
            emit_used,
            to_tun,
            to_net,
            counters,
            senders,
            raw: raw.as_ref(),
            local_ip: *local_ip,
            port: *vx_port,
        };
        match port {
            Port::Overlay => {
                let headroom =
                    if stage.raw.is_some() { VXLAN_LEN + IPV4_UDP_HDR } else { VXLAN_LEN };
                let room = headroom + ovl.stride - HEADROOM;
                let mut n = 0;
                while n < max {
                    let stride = ovl.stride;
                    let slot = ovl.slot(n);
                    let mut vnet = [0u8; VNET_HDR_LEN];
                    let len = match tun.read(&mut vnet, &mut slot[HEADROOM..], overflow) {
                        Ok(Some(len)) => len,
                        Ok(None) => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return if n > 0 { Ok(n) } else { Err(e) },
                    };
                    let head = len.min(stride - HEADROOM);
                    // A segmentation type in the virtio-net header: a super-packet.
                    if vnet[1] != 0 {
                        stage.counters.super_rx += 1;
                    }
                    let (v, start, plen, meta) = {
                        let mut p = Packet {
                            buf: &mut *slot,
                            start: HEADROOM,
                            len: head,
                            meta: Meta::default(),
                            vnet,
                            tail: &overflow[..len - head],
                        };
                        let mut flush_net = |s: &mut Stage<'_>| {
                            let bytes: &[u8] = s.emit;
                            send_staged(s.to_net, Area::Emit, bytes, s.senders, s.raw, s.counters);
                        };
                        let mut emitter = Emitter {
                            stage: &mut stage,
                            room,
                            headroom,
                            flush_net: &mut flush_net,
                        };
                        let v = handle(&mut p, &mut emitter);
                        (v, p.start, p.len, p.meta)
                    };
                    stage.packet(Area::Overlay, n * stride, slot, (start, plen, meta), v);
                    n += 1;
                }
                Ok(n)
            }
            Port::Underlay => {
                let stride = und.stride;
                let got = sys::recv_batch(
                    udp.as_raw_fd(),
                    &mut und.bytes,
                    stride,
                    HEADROOM,
                    RX_SLOT,
                    &mut rx_meta[..max],
                )?;
                let mut n = 0;
                for (i, d) in rx_meta[..got].iter().enumerate() {
                    if d.truncated {
                        stage.counters.rx_oversize += 1;
                        continue;
                    }
                    let meta = Meta { remote: *d.from.ip(), src_port: d.from.port() };
                    let seg = if d.segment == 0 { d.len } else { usize::from(d.segment) };
                    let mut at = 0;
                    // An empty datagram is a packet too (the pipeline counts it as truncated).
                    while at < d.len || (at == 0 && d.len == 0) {
                        let dlen = seg.min(d.len - at);
                        let slot = und.slot(i);
                        let (v, start, plen, meta) = {
                            let mut p = Packet::new(&mut *slot, HEADROOM + at, dlen, meta);
                            let v = handle(&mut p, &mut NoEmit);
                            (v, p.start, p.len, p.meta)
                        };
                        stage.packet(Area::Underlay, i * stride, slot, (start, plen, meta), v);
                        at += dlen.max(1);
                        n += 1;
                    }
                }
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_overlay();
        let TapQueue { to_net, ovl, und, emit, senders, raw, counters, .. } = self;
        let raw = raw.as_ref();
        send_staged(to_net, Area::Overlay, &ovl.bytes, senders, raw, counters);
        send_staged(to_net, Area::Underlay, &und.bytes, senders, raw, counters);
        send_staged(to_net, Area::Emit, emit, senders, raw, counters);
        self.emit_used = 0;
        Ok(())
    }

    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut SourceFd(&self.tun.as_raw_fd()), TAP_TOKEN, Interest::READABLE)?;
        registry.register(&mut SourceFd(&self.udp.as_raw_fd()), UDP_TOKEN, Interest::READABLE)?;
        Ok(())
    }

    fn io_counters(&self) -> IoCounters {
        self.counters
    }
}

/// Underlay packets make no segments.
struct NoEmit;

impl Emit for NoEmit {
    fn emit(&mut self, _: &mut dyn FnMut(&mut Packet<'_>) -> Verdict) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outer_header_layout() {
        let mut h = [0xffu8; 28];
        let meta = Meta { remote: Ipv4Addr::new(192, 168, 77, 2), src_port: 40000 };
        write_ipv4_udp(&mut h, Ipv4Addr::new(192, 168, 77, 1), meta, 8472, 28 + 58);
        assert_eq!(h[0], 0x45);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 86);
        assert_eq!(&h[4..8], &[0, 0, 0, 0], "ID for the kernel, DF clear");
        assert_eq!((h[8], h[9]), (64, 17));
        assert_eq!(&h[12..16], &[192, 168, 77, 1]);
        assert_eq!(&h[16..20], &[192, 168, 77, 2]);
        assert_eq!(u16::from_be_bytes([h[20], h[21]]), 40000);
        assert_eq!(u16::from_be_bytes([h[22], h[23]]), 8472);
        assert_eq!(u16::from_be_bytes([h[24], h[25]]), 66);
        assert_eq!(&h[26..28], &[0, 0]);
    }
}
