//! The TAP/UDP fallback backend, for hosts without AF_XDP.
//!
//! - Overlay side: `linen.1` is a TAP device (the `tun-tap` crate, no packet-info header). Reads
//!   and writes are one system call per frame; the TAP has a single queue, so this backend has
//!   one [`PacketQueue`] and one worker.
//! - Underlay receive: a UDP socket bound to the local VTEP IP and the VXLAN port, read with
//!   `recvmmsg` (up to 64 datagrams per call). The kernel has already checked the outer IP and
//!   UDP headers (destination address, port, UDP checksum when present) and hands over the UDP
//!   payload (VXLAN header + inner frame) with the outer source address, which the pipeline
//!   checks against the known VTEPs.
//! - Underlay send: by default an `IPPROTO_RAW` socket (send-only, never receives) with
//!   `sendmmsg`. The backend writes the outer IPv4 and UDP headers itself into the headroom in
//!   front of the VXLAN header, so the outer UDP source port is the pipeline's flow hash (as the
//!   kernel's VXLAN device does) and the outer UDP checksum is zero (RFC 7348); the kernel fills
//!   in the IPv4 total length, ID and header checksum and routes and resolves the next hop.
//!   Without `CAP_NET_RAW`, or with [`UnderlaySend::Udp`], datagrams go out of the bound UDP
//!   socket instead — then every outer packet has source port 8472 (the bound port), so
//!   receivers' RSS/ECMP sees one flow per node pair. See docs/datapath.md.
//!
//! Buffers: two regions of [`sys::MAX_BATCH`] slots each (one per port), allocated once. A slot
//! holds [`HEADROOM`] bytes of headroom and room for the largest frame the MTU allows.

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::sys::{self, RxDatagram, TxDatagram, MAX_BATCH};
use super::{IoCounters, Meta, Packet, PacketQueue, Port, UnderlayFormat, Verdict};

/// Headroom in front of every received packet: room for the outer headers the worker and this
/// backend prepend (VXLAN 8 + UDP 8 + IPv4 20, or a whole 50-byte outer header), rounded up.
pub const HEADROOM: usize = 128;
/// Readiness token of the TAP device.
pub const TAP_TOKEN: Token = Token(0);
/// Readiness token of the UDP socket.
pub const UDP_TOKEN: Token = Token(1);

const IPV4_UDP_HDR: usize = 28;
/// Socket buffer size asked for (receive and send): about 2,800 full-size datagrams.
const SOCKET_BUFFER: usize = 4 << 20;

/// How underlay packets are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderlaySend {
    /// Raw IPv4 socket: outer UDP source port = flow hash. Needs `CAP_NET_RAW`.
    RawIp,
    /// The bound UDP socket: outer UDP source port = the VXLAN port.
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

#[derive(Debug, Clone, Copy)]
struct TapTx {
    region: Port,
    start: usize,
    len: usize,
}

/// A region of [`MAX_BATCH`] equal slots.
#[derive(Debug)]
struct Region {
    bytes: Vec<u8>,
    stride: usize,
}

impl Region {
    fn new(stride: usize) -> Region {
        Region { bytes: vec![0u8; stride * MAX_BATCH], stride }
    }
    fn slot(&mut self, i: usize) -> &mut [u8] {
        &mut self.bytes[i * self.stride..(i + 1) * self.stride]
    }
}

/// The TAP/UDP backend's single queue.
#[derive(Debug)]
pub struct TapQueue {
    tap: tun_tap::Iface,
    udp: Socket,
    raw: Option<Socket>,
    local_ip: Ipv4Addr,
    port: u16,
    regions: [Region; 2],
    rx_meta: [RxDatagram; MAX_BATCH],
    to_tap: Vec<TapTx>,
    to_net: [Vec<TxDatagram>; 2],
    counters: IoCounters,
}

fn region_index(p: Port) -> usize {
    match p {
        Port::Overlay => 0,
        Port::Underlay => 1,
    }
}

impl TapQueue {
    /// Creates the TAP device and the sockets. The device exists as long as the queue does
    /// (it is not persistent): dropping the queue removes `linen.1` with its routes.
    ///
    /// # Errors
    /// [`TapError`] naming the device or address that failed.
    pub fn new(cfg: &TapConfig) -> Result<TapQueue, TapError> {
        let tap = tun_tap::Iface::without_packet_info(&cfg.device, tun_tap::Mode::Tap)
            .map_err(|source| TapError::Tap { device: cfg.device.clone(), source })?;
        tap.set_non_blocking()
            .map_err(|source| TapError::Tap { device: cfg.device.clone(), source })?;

        let addr = SocketAddrV4::new(cfg.local_ip, cfg.port);
        let bind = |source| TapError::Bind { addr, source };
        let udp = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(bind)?;
        udp.set_nonblocking(true).map_err(bind)?;
        // Best effort: bigger buffers absorb bursts.
        if let Err(e) = sys::grow_socket_buffers(udp.as_raw_fd(), SOCKET_BUFFER) {
            tracing::warn!(error = %e, "cannot enlarge the VXLAN socket's buffers");
        }
        udp.bind(&SocketAddr::V4(addr).into()).map_err(bind)?;

        let raw = match cfg.send {
            UnderlaySend::Udp => None,
            UnderlaySend::RawIp => {
                match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
                {
                    Ok(s) => {
                        if let Err(e) = s.set_nonblocking(true) {
                            return Err(TapError::Bind { addr, source: e });
                        }
                        let _ = sys::grow_socket_buffers(s.as_raw_fd(), SOCKET_BUFFER);
                        Some(s)
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "raw IPv4 socket unavailable (needs CAP_NET_RAW); sending VXLAN from the \
                             bound UDP socket, so every outer packet has source port {}",
                            cfg.port
                        );
                        None
                    }
                }
            }
        };

        // Ethernet header + the largest IP packet + slack for a VLAN tag a peer should not send.
        let frame_max = cfg.mtu as usize + 14 + 4;
        // Underlay datagrams carry VXLAN (8) + an inner frame.
        let stride = (HEADROOM + frame_max + 8 + 63) & !63;
        Ok(TapQueue {
            tap,
            udp,
            raw,
            local_ip: cfg.local_ip,
            port: cfg.port,
            regions: [Region::new(stride), Region::new(stride)],
            rx_meta: [RxDatagram::default(); MAX_BATCH],
            to_tap: Vec::with_capacity(2 * MAX_BATCH),
            to_net: [Vec::with_capacity(MAX_BATCH), Vec::with_capacity(MAX_BATCH)],
            counters: IoCounters::default(),
        })
    }

    /// The device name the kernel gave the TAP.
    pub fn device(&self) -> &str {
        self.tap.name()
    }

    /// How underlay packets are sent (raw IPv4 or the UDP socket).
    pub fn send_mode(&self) -> UnderlaySend {
        if self.raw.is_some() {
            UnderlaySend::RawIp
        } else {
            UnderlaySend::Udp
        }
    }

    /// Stages the packet in `slot` of the `region` for its verdict.
    fn stage(
        &mut self,
        region: Port,
        slot: usize,
        pkt_start: usize,
        pkt_len: usize,
        meta: Meta,
        v: Verdict,
    ) {
        let stride = self.regions[region_index(region)].stride;
        let base = slot * stride;
        match v {
            Verdict::Drop => {}
            Verdict::Kernel => self.counters.kernel_unsupported += 1,
            Verdict::Send(Port::Overlay) => {
                self.to_tap.push(TapTx { region, start: base + pkt_start, len: pkt_len })
            }
            Verdict::Send(Port::Underlay) => {
                let (start, len, to) = if self.raw.is_some() {
                    if pkt_start < IPV4_UDP_HDR || pkt_len + IPV4_UDP_HDR > usize::from(u16::MAX) {
                        self.counters.tx_failed += 1;
                        return;
                    }
                    let start = pkt_start - IPV4_UDP_HDR;
                    let len = pkt_len + IPV4_UDP_HDR;
                    let buf = self.regions[region_index(region)].slot(slot);
                    write_ipv4_udp(
                        &mut buf[start..start + IPV4_UDP_HDR],
                        self.local_ip,
                        meta,
                        self.port,
                        len,
                    );
                    (start, len, SocketAddrV4::new(meta.remote, 0))
                } else {
                    (pkt_start, pkt_len, SocketAddrV4::new(meta.remote, self.port))
                };
                self.to_net[region_index(region)].push(TxDatagram { start: base + start, len, to });
            }
        }
    }
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
        F: FnMut(&mut Packet<'_>) -> Verdict,
    {
        let max = max.min(MAX_BATCH);
        let ri = region_index(port);
        match port {
            Port::Overlay => {
                let mut n = 0;
                while n < max {
                    let buf = self.regions[ri].slot(n);
                    let got = match self.tap.recv(&mut buf[HEADROOM..]) {
                        Ok(len) => len,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    };
                    let mut pkt = Packet { buf, start: HEADROOM, len: got, meta: Meta::default() };
                    let v = handle(&mut pkt);
                    let (start, len, meta) = (pkt.start, pkt.len, pkt.meta);
                    self.stage(port, n, start, len, meta, v);
                    n += 1;
                }
                Ok(n)
            }
            Port::Underlay => {
                let region = &mut self.regions[ri];
                let stride = region.stride;
                let got = sys::recv_batch(
                    self.udp.as_raw_fd(),
                    &mut region.bytes,
                    stride,
                    HEADROOM,
                    stride - HEADROOM,
                    &mut self.rx_meta[..max],
                )?;
                for i in 0..got {
                    let d = self.rx_meta[i];
                    if d.truncated {
                        self.counters.rx_oversize += 1;
                        continue;
                    }
                    let meta = Meta { remote: *d.from.ip(), src_port: d.from.port() };
                    let buf = self.regions[ri].slot(i);
                    let mut pkt = Packet { buf, start: HEADROOM, len: d.len, meta };
                    let v = handle(&mut pkt);
                    let (start, len, meta) = (pkt.start, pkt.len, pkt.meta);
                    self.stage(port, i, start, len, meta, v);
                }
                Ok(got)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        for t in self.to_tap.drain(..) {
            let bytes = &self.regions[region_index(t.region)].bytes[t.start..t.start + t.len];
            if self.tap.send(bytes).is_err() {
                self.counters.tx_failed += 1;
            }
        }
        let fd: RawFd = match &self.raw {
            Some(raw) => raw.as_raw_fd(),
            None => self.udp.as_raw_fd(),
        };
        for ri in 0..2 {
            let msgs = &self.to_net[ri];
            let mut done = 0;
            let mut stalls = 0;
            while done < msgs.len() {
                match sys::send_batch(fd, &self.regions[ri].bytes, &msgs[done..]) {
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
                        // One bad datagram (e.g. no route to that VTEP) must not hold back the rest.
                        self.counters.tx_failed += 1;
                        done += 1;
                    }
                }
            }
            self.counters.tx_failed += (msgs.len() - done) as u64;
            self.to_net[ri].clear();
        }
        Ok(())
    }

    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut SourceFd(&self.tap.as_raw_fd()), TAP_TOKEN, Interest::READABLE)?;
        registry.register(&mut SourceFd(&self.udp.as_raw_fd()), UDP_TOKEN, Interest::READABLE)?;
        Ok(())
    }

    fn io_counters(&self) -> IoCounters {
        self.counters
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
