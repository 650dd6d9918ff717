//! Super-packets across the kernel boundary: what a TAP device with virtio-net headers hands
//! linen, and what linen hands back.
//!
//! With checksum and segmentation offload switched on (`TUNSETOFFLOAD`), the kernel gives the
//! overlay device whole TCP bursts of up to 64 KB as one packet, its segment size (MSS) in the
//! 10-byte virtio-net header in front, and leaves transport checksums for linen to complete.
//! linen cuts such a super-packet into wire-sized segments itself before encapsulating each
//! ([`Segmenter`]), and, the other way, merges the in-order TCP segments of one flow that a batch
//! decapsulated into one super-packet for the kernel ([`Coalescer`]), so the host stack, the pod's
//! veth and the pod's TCP see one large packet instead of dozens of small ones.
//!
//! Both work on inner Ethernet frames only: segmentation happens before [`super::encap`] (each
//! segment is then encapsulated like any frame, so every segment gets its own route lookup, MTU
//! check and flow hash) and coalescing after [`super::decap`]. Nothing here allocates, locks or
//! reads a clock, and nothing a packet says can make it panic: malformed offload metadata is
//! [`DropReason::BadOffload`].
//!
//! What the segments look like is what the kernel's own TSO/GSO produces (`tcp_gso_segment`,
//! `__udp_gso_segment`): the headers of the super-packet on every segment; IPv4 total length,
//! checksum and identification (the first segment's plus its index); IPv6 payload length; TCP
//! sequence number advanced by the bytes before the segment, FIN and PSH on the last segment only,
//! CWR on the first only; full transport checksums. Coalescing follows Linux GRO's rules
//! (`tcp_gro_receive`): same flow, the next sequence number, identical ACK number, window, header
//! flags (PSH and FIN aside), TCP options, IPv4 TOS/TTL/DF (and consecutive IDs without DF), IPv6
//! class/flow label/hop limit; no segment larger than the first; a shorter segment, PSH or FIN
//! ends the merge; SYN, RST, URG and CWR segments are never merged. Every segment's TCP checksum is
//! verified before it is merged, so a merged packet's checksum stands for bytes that arrived
//! intact.

use super::DropReason;
use crate::wire::ip::IpProtocol;
use crate::wire::{
    checksum, ethernet, ipv4, ipv6, tcp, udp, EtherType, EthernetFrame, Ipv4Packet, Ipv6Packet,
    TcpPacket, UdpPacket,
};

/// Length of the virtio-net header (`struct virtio_net_hdr`) in front of every packet.
pub const VNET_HDR_LEN: usize = 10;

/// Most payload pieces one coalesced packet is written from (and the most segments merged).
pub const MAX_COALESCE_PARTS: usize = 64;

// struct virtio_net_hdr
const F_NEEDS_CSUM: u8 = 1;
const F_DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// Where the transport checksum sits in a TCP and a UDP header (virtio's `csum_offset`).
const TCP_CSUM_OFFSET: u16 = 16;
const UDP_CSUM_OFFSET: u16 = 6;

/// How a super-packet is to be segmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gso {
    /// A single packet: nothing to segment.
    None,
    /// TCP over IPv4 into segments of `mss` payload bytes.
    Tcp4 {
        /// Segment payload size.
        mss: u16,
    },
    /// TCP over IPv6 into segments of `mss` payload bytes.
    Tcp6 {
        /// Segment payload size.
        mss: u16,
    },
    /// UDP (IPv4 or IPv6) into datagrams of `size` payload bytes (USO).
    Udp {
        /// Datagram payload size.
        size: u16,
    },
}

/// The offload state of one packet crossing a TAP device with virtio-net headers: what the
/// 10-byte header in front of it says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offload {
    /// Segmentation to do (packet from the kernel) or that was done (packet to it).
    pub gso: Gso,
    /// The segments may carry ECN's CWR flag (TSO with ECN): only the first keeps it.
    pub ecn: bool,
    /// Header length hint: bytes of Ethernet, IP and transport headers.
    pub hdr_len: u16,
    /// A transport checksum left to complete: `(start, offset)`, the checksum covers the bytes
    /// from `start` to the end of the packet and lives at `start + offset`, which holds the
    /// pseudo-header sum until then.
    pub csum: Option<(u16, u16)>,
    /// The checksum was verified (packet to the kernel: it need not check it again).
    pub data_valid: bool,
}

impl Offload {
    /// A plain packet: no segmentation, checksums complete.
    pub const NONE: Offload =
        Offload { gso: Gso::None, ecn: false, hdr_len: 0, csum: None, data_valid: false };

    /// Reads a virtio-net header (little-endian fields).
    ///
    /// # Errors
    /// [`DropReason::BadOffload`] for a segmentation type linen does not handle (legacy UFO,
    /// unknown values), or segmentation without a segment size or without a checksum to
    /// complete.
    pub fn parse(h: &[u8; VNET_HDR_LEN]) -> Result<Offload, DropReason> {
        let le = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
        let (flags, gso_type, hdr_len, size) = (h[0], h[1], le(2), le(4));
        let csum = (flags & F_NEEDS_CSUM != 0).then(|| (le(6), le(8)));
        let gso = match gso_type & !GSO_ECN {
            GSO_NONE => Gso::None,
            GSO_TCPV4 => Gso::Tcp4 { mss: size },
            GSO_TCPV6 => Gso::Tcp6 { mss: size },
            GSO_UDP_L4 => Gso::Udp { size },
            _ => return Err(DropReason::BadOffload),
        };
        if gso != Gso::None && (size == 0 || csum.is_none()) {
            return Err(DropReason::BadOffload);
        }
        Ok(Offload {
            gso,
            ecn: gso_type & GSO_ECN != 0,
            hdr_len,
            csum,
            data_valid: flags & F_DATA_VALID != 0,
        })
    }

    /// Writes the virtio-net header for this state.
    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let (gso_type, size) = match self.gso {
            Gso::None => (GSO_NONE, 0),
            Gso::Tcp4 { mss } => (GSO_TCPV4, mss),
            Gso::Tcp6 { mss } => (GSO_TCPV6, mss),
            Gso::Udp { size } => (GSO_UDP_L4, size),
        };
        let mut flags = 0;
        let (start, offset) = match self.csum {
            Some(span) => {
                flags |= F_NEEDS_CSUM;
                span
            }
            None => (0, 0),
        };
        if self.data_valid {
            flags |= F_DATA_VALID;
        }
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = flags;
        h[1] = gso_type | if self.ecn { GSO_ECN } else { 0 };
        h[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&size.to_le_bytes());
        h[6..8].copy_from_slice(&start.to_le_bytes());
        h[8..10].copy_from_slice(&offset.to_le_bytes());
        h
    }
}

/// Completes a transport checksum the kernel left partial: sums `frame[start..]` (the field at
/// `start + offset` holds the pseudo-header sum) and stores the complement in the field. A UDP
/// checksum that comes out as zero is sent as `0xffff` (zero means "none" in UDP).
///
/// # Errors
/// [`DropReason::BadOffload`] when the field lies outside the frame or at an odd offset from
/// `start` (where it would straddle two of the summed words).
pub fn complete_checksum(frame: &mut [u8], (start, offset): (u16, u16)) -> Result<(), DropReason> {
    let (start, field) = (usize::from(start), usize::from(start) + usize::from(offset));
    // The field must be a whole 16-bit word of the summed bytes (TCP's is at 16, UDP's at 6).
    if field + 2 > frame.len() || start < ethernet::HEADER_LEN || offset % 2 != 0 {
        return Err(DropReason::BadOffload);
    }
    let mut c = checksum::checksum(&frame[start..]);
    if offset == UDP_CSUM_OFFSET && c == 0 {
        c = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Copies `src[from..from + out.len()]` into `out`, where `src` is `head` followed by `tail`.
/// The caller has checked the range.
#[inline]
fn copy_out(head: &[u8], tail: &[u8], from: usize, out: &mut [u8]) {
    let n = out.len();
    if from + n <= head.len() {
        out.copy_from_slice(&head[from..from + n]);
    } else if from >= head.len() {
        let f = from - head.len();
        out.copy_from_slice(&tail[f..f + n]);
    } else {
        let k = head.len() - from;
        out[..k].copy_from_slice(&head[from..]);
        out[k..].copy_from_slice(&tail[..n - k]);
    }
}

/// The network-layer facts both [`Segmenter`] and [`Coalescer`] need about an inner frame.
#[derive(Clone, Copy, Debug)]
struct L3 {
    v6: bool,
    /// Offset of the transport header.
    l4: usize,
    /// Ethernet header + IP total length (trailing padding excluded).
    end: usize,
    /// Transport protocol (0 when extension headers hide it).
    proto: u8,
}

const L3_OFFSET: usize = ethernet::HEADER_LEN;

/// Reads the untagged Ethernet + IPv4/IPv6 headers of `head` (whose packet is `total` bytes
/// long). `l4_hint` is the transport offset the kernel gave (checksum start), which IPv6
/// extension headers make necessary; IPv4 must agree with its IHL.
fn parse_l3(head: &[u8], total: usize, l4_hint: Option<usize>) -> Option<L3> {
    let eth = EthernetFrame::new_unchecked(head.first_chunk::<{ ethernet::HEADER_LEN }>()?);
    let l3 = head.get(L3_OFFSET..)?;
    match eth.ethertype() {
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_unchecked(l3.first_chunk::<{ ipv4::HEADER_LEN }>()?);
            let l4 = L3_OFFSET + ip.header_len();
            if ip.version() != 4
                || ip.header_len() < ipv4::HEADER_LEN
                || l4_hint.is_some_and(|hint| hint != l4)
                // A fragment cannot be segmented or merged.
                || ip.is_fragment()
            {
                return None;
            }
            let end = L3_OFFSET + usize::from(ip.total_len());
            (end >= l4 && end <= total).then_some(L3 {
                v6: false,
                l4,
                end,
                proto: ip.protocol_raw(),
            })
        }
        EtherType::Ipv6 => {
            let ip = Ipv6Packet::new_unchecked(l3.first_chunk::<{ ipv6::HEADER_LEN }>()?);
            if ip.version() != 6 {
                return None;
            }
            let fixed_end = L3_OFFSET + ipv6::HEADER_LEN;
            let next = ip.next_header_raw();
            let l4 = match l4_hint {
                Some(l4) if l4 >= fixed_end => l4,
                Some(_) => return None,
                // Without the kernel's word, only a transport header right behind the fixed one.
                None if matches!(next, 6 | 17) => fixed_end,
                None => return None,
            };
            let end = fixed_end + usize::from(ip.payload_len());
            // Behind extension headers the transport protocol is the kernel's word (unknown: 0).
            let proto = if l4 == fixed_end { next } else { 0 };
            (end >= l4 && end <= total).then_some(L3 { v6: true, l4, end, proto })
        }
        _ => None,
    }
}

/// The pseudo-header sum of the transport segment `len` bytes long behind the IP header in `ip`
/// (the bytes from the Ethernet header's end to the transport header).
fn pseudo_header(ip: &[u8], v6: bool, proto: IpProtocol, len: usize) -> u16 {
    if v6 {
        let ip = Ipv6Packet::new_unchecked(ip);
        checksum::pseudo_header_v6(ip.src_addr(), ip.dst_addr(), proto, len as u32)
    } else {
        let ip = Ipv4Packet::new_unchecked(ip);
        checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), proto, len as u16)
    }
}

/// Cuts a super-packet from the overlay device into wire-sized segments (software TSO/USO).
///
/// The packet is `head` followed by `tail` (a backend reads the first part into a frame buffer
/// and the rest into an overflow area); all headers must lie in `head`.
///
/// ```
/// use linen_dataplane::pipeline::{Gso, Offload, Segmenter};
///
/// // A TCP/IPv4 super-packet of 3000 payload bytes with MSS 1400, as the kernel hands it over.
/// let mut pkt = vec![0u8; 14 + 20 + 20 + 3000];
/// pkt[12..14].copy_from_slice(&[0x08, 0x00]);
/// pkt[14] = 0x45;
/// pkt[16..18].copy_from_slice(&(20u16 + 20 + 3000).to_be_bytes());
/// pkt[23] = 6;
/// pkt[46] = 0x50; // data offset 5
/// pkt[47] = 0x18; // PSH|ACK
/// let offload = Offload { gso: Gso::Tcp4 { mss: 1400 }, csum: Some((34, 16)), ..Offload::NONE };
/// let mut seg = Segmenter::new(&pkt, &[], &offload).unwrap();
/// let mut lens = Vec::new();
/// while let Some(len) = seg.next_len() {
///     let mut out = vec![0u8; len];
///     seg.write_next(&mut out);
///     lens.push(len);
/// }
/// assert_eq!(lens, [54 + 1400, 54 + 1400, 54 + 200]);
/// ```
#[derive(Debug)]
pub struct Segmenter<'a> {
    head: &'a [u8],
    tail: &'a [u8],
    l3: L3,
    udp: bool,
    hdr_len: usize,
    mss: usize,
    /// Offset of the next segment's first payload byte.
    at: usize,
    index: u16,
}

impl<'a> Segmenter<'a> {
    /// Checks the super-packet against its offload state.
    ///
    /// # Errors
    /// [`DropReason::BadOffload`] when the packet is not what its offload state says (not TCP or
    /// UDP over untagged IPv4/IPv6, headers outside `head`, a checksum position that is not the
    /// transport checksum, an IPv4 fragment, lengths beyond the packet), or when `offload` asks
    /// for no segmentation at all.
    pub fn new(head: &'a [u8], tail: &'a [u8], offload: &Offload) -> Result<Self, DropReason> {
        let bad = DropReason::BadOffload;
        let (mss, want_v6, udp) = match offload.gso {
            Gso::None => return Err(bad),
            Gso::Tcp4 { mss } => (mss, Some(false), false),
            Gso::Tcp6 { mss } => (mss, Some(true), false),
            Gso::Udp { size } => (size, None, true),
        };
        let (start, offset) = offload.csum.ok_or(bad)?;
        let total = head.len() + tail.len();
        let l3 = parse_l3(head, total, Some(usize::from(start))).ok_or(bad)?;
        if want_v6.is_some_and(|v6| v6 != l3.v6) {
            return Err(bad);
        }
        let l4 = l3.l4;
        let proto = if udp { IpProtocol::Udp } else { IpProtocol::Tcp };
        if l3.proto != u8::from(proto) && l3.proto != 0 {
            return Err(bad);
        }
        let hdr_len = if udp {
            if offset != UDP_CSUM_OFFSET {
                return Err(bad);
            }
            l4 + udp::HEADER_LEN
        } else {
            if offset != TCP_CSUM_OFFSET {
                return Err(bad);
            }
            let tcp =
                head.get(l4..).and_then(|t| t.first_chunk::<{ tcp::HEADER_LEN }>()).ok_or(bad)?;
            let doff = TcpPacket::new_unchecked(tcp).header_len();
            if doff < tcp::HEADER_LEN {
                return Err(bad);
            }
            l4 + doff
        };
        if hdr_len > head.len() || hdr_len > l3.end || mss == 0 {
            return Err(bad);
        }
        Ok(Segmenter { head, tail, l3, udp, hdr_len, mss: usize::from(mss), at: hdr_len, index: 0 })
    }

    /// Segments in all (at least one, also for a packet without payload).
    pub fn count(&self) -> usize {
        (self.l3.end - self.hdr_len).div_ceil(self.mss).max(1)
    }

    /// Header bytes (Ethernet, IP, transport) every segment starts with.
    pub fn header_len(&self) -> usize {
        self.hdr_len
    }

    /// Length of the next segment (a whole inner Ethernet frame), or `None` when all were
    /// written.
    pub fn next_len(&self) -> Option<usize> {
        if self.at >= self.l3.end && (self.index > 0 || self.at > self.hdr_len) {
            return None;
        }
        Some(self.hdr_len + (self.l3.end - self.at).min(self.mss))
    }

    /// Writes the next segment into `out`, which must be [`next_len`](Segmenter::next_len)
    /// bytes or longer, and returns its length (0 when all were written).
    pub fn write_next(&mut self, out: &mut [u8]) -> usize {
        let Some(len) = self.next_len() else { return 0 };
        let Some(out) = out.get_mut(..len) else { return 0 };
        let (hl, l4) = (self.hdr_len, self.l3.l4);
        out[..hl].copy_from_slice(&self.head[..hl]);
        copy_out(self.head, self.tail, self.at, &mut out[hl..]);
        let index = self.index;
        let last = self.at + (len - hl) >= self.l3.end;
        let offset_in_stream = (self.at - hl) as u32;
        self.at += len - hl;
        self.index = self.index.wrapping_add(1);

        let (front, seg) = out.split_at_mut(l4);
        let ip = &mut front[L3_OFFSET..];
        let l4_len = seg.len();
        // Network layer: lengths, and IPv4's identification (the first segment's plus the
        // segment's index, as TSO does) and header checksum.
        if self.l3.v6 {
            Ipv6Packet::new_unchecked(&mut *ip)
                .set_payload_len((len - L3_OFFSET - ipv6::HEADER_LEN) as u16);
        } else {
            let mut v4 = Ipv4Packet::new_unchecked(&mut *ip);
            v4.set_total_len((len - L3_OFFSET) as u16);
            let id = v4.ident().wrapping_add(index);
            v4.set_ident(id);
            v4.fill_checksum();
        }
        let proto = if self.udp { IpProtocol::Udp } else { IpProtocol::Tcp };
        let pseudo = pseudo_header(ip, self.l3.v6, proto, l4_len);
        // Transport layer.
        if self.udp {
            let mut u = UdpPacket::new_unchecked(&mut *seg);
            u.set_len(l4_len as u16);
            u.set_checksum(0);
        } else {
            let mut t = TcpPacket::new_unchecked(&mut *seg);
            t.set_seq_number(t.seq_number().wrapping_add(offset_in_stream));
            let mut flags = t.flags();
            if !last {
                flags &= !(tcp::FLAG_FIN | tcp::FLAG_PSH);
            }
            if index > 0 {
                flags &= !tcp::FLAG_CWR;
            }
            t.set_flags(flags);
            t.set_checksum(0);
        }
        let mut c = checksum::finish(checksum::add(pseudo, checksum::sum(seg)));
        if self.udp {
            // Zero means "no checksum" in UDP.
            if c == 0 {
                c = 0xffff;
            }
            UdpPacket::new_unchecked(&mut *seg).set_checksum(c);
        } else {
            TcpPacket::new_unchecked(&mut *seg).set_checksum(c);
        }
        len
    }
}

/// A byte range of one of the packets offered to a [`Coalescer`]: packet `id`, bytes
/// `start..start + len` of the data it was offered with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Part {
    /// The id the packet was offered with.
    pub id: u32,
    /// First byte, relative to the offered data.
    pub start: u32,
    /// Length.
    pub len: u32,
}

/// Longest header a merged packet carries: Ethernet, IPv6, TCP with the most options.
const MAX_HDR: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + tcp::MAX_HEADER_LEN;

/// A flow's identity: source and destination addresses (IPv4 ones in the first 4 bytes of
/// each) and the port pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FlowKey {
    src: [u8; 16],
    dst: [u8; 16],
    ports: [u16; 2],
}

#[derive(Clone, Copy, Debug)]
struct Group {
    /// Whether more segments may join.
    open: bool,
    /// A verified TCP segment (merged or not): the kernel need not check its checksum again.
    verified: bool,
    /// Eligible for merging: the fields below are meaningful.
    tcp: bool,
    v6: bool,
    key: FlowKey,
    /// Ethernet + IP + TCP header of the first segment (patched at [`Coalescer::finish`]).
    header: [u8; MAX_HDR],
    hdr_len: u8,
    /// Offset of the TCP header.
    l4: u8,
    mss: u16,
    next_seq: u32,
    next_id: u16,
    df: bool,
    payload: u32,
    nparts: u8,
    parts: [Part; MAX_COALESCE_PARTS],
}

impl Group {
    const EMPTY: Group = Group {
        open: false,
        verified: false,
        tcp: false,
        v6: false,
        key: FlowKey { src: [0; 16], dst: [0; 16], ports: [0; 2] },
        header: [0; MAX_HDR],
        hdr_len: 0,
        l4: 0,
        mss: 0,
        next_seq: 0,
        next_id: 0,
        df: false,
        payload: 0,
        nparts: 0,
        parts: [Part { id: 0, start: 0, len: 0 }; MAX_COALESCE_PARTS],
    };

    fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.hdr_len)]
    }

    /// Whether the headers of `data` (a segment of this group's flow) let it join: the rules of
    /// Linux GRO for what must not change between the segments of one merged packet.
    fn same_headers(&self, data: &[u8], seg: &TcpSeg) -> bool {
        let (h, l4) = (self.header(), usize::from(self.l4));
        if h.len() != seg.hdr_len || seg.l4 != l4 || h[..L3_OFFSET] != data[..L3_OFFSET] {
            return false;
        }
        let (hip, dip) = (&h[L3_OFFSET..l4], &data[L3_OFFSET..l4]);
        let ip_same = if self.v6 {
            let (a, b) = (Ipv6Packet::new_unchecked(hip), Ipv6Packet::new_unchecked(dip));
            a.traffic_class() == b.traffic_class()
                && a.flow_label() == b.flow_label()
                && a.hop_limit() == b.hop_limit()
        } else {
            let (a, b) = (Ipv4Packet::new_unchecked(hip), Ipv4Packet::new_unchecked(dip));
            a.dscp() == b.dscp()
                && a.ecn() == b.ecn()
                && a.ttl() == b.ttl()
                && a.dont_frag() == b.dont_frag()
        };
        let (a, b) =
            (TcpPacket::new_unchecked(&h[l4..]), TcpPacket::new_unchecked(&data[l4..seg.hdr_len]));
        let mask = !(tcp::FLAG_PSH | tcp::FLAG_FIN);
        ip_same
            && a.ack_number() == b.ack_number()
            && a.flags() & mask == b.flags() & mask
            && a.window() == b.window()
            && a.options() == b.options()
    }
}

/// One packet to write to the overlay device, as [`Coalescer::writes`] yields them: the
/// virtio-net header, then `header` (empty for a packet written as it arrived), then the byte
/// ranges `parts` of the offered packets, in order.
#[derive(Debug)]
pub struct Write<'c> {
    /// The virtio-net header to put in front.
    pub vnet: [u8; VNET_HDR_LEN],
    /// Headers of a merged packet (rewritten) or of a lone TCP segment; empty for a packet
    /// written whole from `parts`.
    pub header: &'c [u8],
    /// The payload pieces (or the whole packet) from the offered packets.
    pub parts: &'c [Part],
    /// Segments this packet carries (1 for a packet written as it arrived).
    pub segments: usize,
}

/// What a [`Coalescer`] made of the packets offered since the last [`Coalescer::clear`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    /// Packets to write.
    pub writes: usize,
    /// Packets offered that were merged into another's write.
    pub merged: usize,
    /// TCP segments whose checksum did not verify (written as they came, for the kernel to drop).
    pub bad_checksum: usize,
}

/// Merges the in-order TCP segments of one flow, decapsulated in one batch, into one
/// super-packet for the overlay device (software GRO). Preallocated: holds up to
/// [`Coalescer::CAPACITY`] packets per batch and never allocates after [`Coalescer::new`].
///
/// Offer every inner frame of a batch in arrival order with [`Coalescer::push`] (a packet that
/// does not fit any more is refused: write the batch out and [`clear`](Coalescer::clear)), then
/// [`finish`](Coalescer::finish) and write what [`writes`](Coalescer::writes) yields, in that
/// order: packets of one flow keep their order.
#[derive(Debug)]
pub struct Coalescer {
    groups: Vec<Group>,
    len: usize,
    stats: CoalesceStats,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

impl Coalescer {
    /// Packets (groups) one batch can hold.
    pub const CAPACITY: usize = 128;

    /// An empty coalescer.
    pub fn new() -> Coalescer {
        Coalescer {
            groups: vec![Group::EMPTY; Coalescer::CAPACITY],
            len: 0,
            stats: CoalesceStats::default(),
        }
    }

    /// Forgets everything offered.
    pub fn clear(&mut self) {
        self.len = 0;
        self.stats = CoalesceStats::default();
    }

    /// Whether nothing was offered since the last [`clear`](Coalescer::clear).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether [`push`](Coalescer::push) can take another packet.
    pub fn has_room(&self) -> bool {
        self.len < self.groups.len()
    }

    /// What became of the packets offered so far.
    pub fn stats(&self) -> CoalesceStats {
        self.stats
    }

    /// Offers inner Ethernet frame `data` under `id` (the caller's handle for its buffer, given
    /// back in [`Part::id`]). Returns `false`, taking nothing, when the coalescer is full.
    pub fn push(&mut self, id: u32, data: &[u8]) -> bool {
        let seg = tcp_segment(data);
        if self.len == self.groups.len() {
            // Still room to merge into an open group?
            return matches!(seg, Some(seg) if seg.verified && seg.mergeable && self.try_merge(id, data, &seg));
        }
        match seg {
            Some(seg) => {
                if !seg.verified {
                    self.stats.bad_checksum += 1;
                    self.close_flow(&seg.key);
                    self.single(id, data, false);
                } else if seg.mergeable {
                    if !self.try_merge(id, data, &seg) {
                        self.start(id, data, &seg);
                    }
                } else {
                    // A segment of the flow that cannot merge (pure ACK, SYN, CWR…) ends any
                    // merge in progress, so that it is not overtaken by later segments.
                    self.close_flow(&seg.key);
                    self.single(id, data, true);
                }
            }
            None => self.single(id, data, false),
        }
        true
    }

    fn single(&mut self, id: u32, data: &[u8], verified: bool) {
        let g = &mut self.groups[self.len];
        self.len += 1;
        g.open = false;
        g.tcp = false;
        g.verified = verified;
        g.hdr_len = 0;
        g.nparts = 1;
        g.payload = data.len() as u32;
        g.parts[0] = Part { id, start: 0, len: data.len() as u32 };
    }

    fn close_flow(&mut self, key: &FlowKey) {
        if let Some(g) = self.groups[..self.len].iter_mut().rev().find(|g| g.open && g.key == *key)
        {
            g.open = false;
        }
    }

    fn start(&mut self, id: u32, data: &[u8], seg: &TcpSeg) {
        let g = &mut self.groups[self.len];
        self.len += 1;
        let hl = seg.hdr_len;
        g.header[..hl].copy_from_slice(&data[..hl]);
        g.hdr_len = hl as u8;
        g.l4 = seg.l4 as u8;
        g.key = seg.key;
        g.v6 = seg.v6;
        g.tcp = true;
        g.verified = true;
        g.mss = seg.payload as u16;
        g.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        g.next_id = seg.id.wrapping_add(1);
        g.df = seg.df;
        g.payload = seg.payload as u32;
        g.nparts = 1;
        g.parts[0] = Part { id, start: hl as u32, len: seg.payload as u32 };
        g.open = !seg.ends;
    }

    fn try_merge(&mut self, id: u32, data: &[u8], seg: &TcpSeg) -> bool {
        let Some(g) = self.groups[..self.len].iter_mut().rev().find(|g| g.open && g.key == seg.key)
        else {
            return false;
        };
        let fits = seg.seq == g.next_seq
            && seg.payload <= usize::from(g.mss)
            && (g.df || seg.id == g.next_id)
            && usize::from(g.nparts) < MAX_COALESCE_PARTS
            // The merged IP packet must stay within 64 KiB.
            && usize::from(g.hdr_len) - L3_OFFSET + g.payload as usize + seg.payload
                <= usize::from(u16::MAX);
        if !(fits && g.same_headers(data, seg)) {
            g.open = false;
            return false;
        }
        g.parts[usize::from(g.nparts)] =
            Part { id, start: seg.hdr_len as u32, len: seg.payload as u32 };
        g.nparts += 1;
        g.payload += seg.payload as u32;
        g.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        g.next_id = seg.id.wrapping_add(1);
        // PSH and FIN of the last segment go on the merged packet.
        let l4 = usize::from(g.l4);
        let mut tcp = TcpPacket::new_unchecked(&mut g.header[l4..usize::from(g.hdr_len)]);
        tcp.set_flags(tcp.flags() | seg.flags & (tcp::FLAG_PSH | tcp::FLAG_FIN));
        if seg.ends || seg.payload < usize::from(g.mss) {
            g.open = false;
        }
        self.stats.merged += 1;
        true
    }

    /// Rewrites the headers of every merged packet (lengths, IPv4 checksum, the TCP checksum
    /// field as the pseudo-header sum the kernel completes). Call once, after the last
    /// [`push`](Coalescer::push) and before [`writes`](Coalescer::writes).
    pub fn finish(&mut self) {
        self.stats.writes = self.len;
        for g in &mut self.groups[..self.len] {
            if !g.tcp || g.nparts < 2 {
                continue;
            }
            let (hl, l4) = (usize::from(g.hdr_len), usize::from(g.l4));
            let tcp_len = hl - l4 + g.payload as usize;
            let (front, tcp) = g.header[..hl].split_at_mut(l4);
            let ip = &mut front[L3_OFFSET..];
            if g.v6 {
                Ipv6Packet::new_unchecked(&mut *ip).set_payload_len(tcp_len as u16);
            } else {
                let mut v4 = Ipv4Packet::new_unchecked(&mut *ip);
                v4.set_total_len((l4 - L3_OFFSET + tcp_len) as u16);
                v4.fill_checksum();
            }
            let pseudo = pseudo_header(ip, g.v6, IpProtocol::Tcp, tcp_len);
            TcpPacket::new_unchecked(tcp).set_checksum(pseudo);
        }
    }

    /// The packets to write, in order (after [`finish`](Coalescer::finish)).
    pub fn writes(&self) -> impl Iterator<Item = Write<'_>> {
        self.groups[..self.len].iter().map(|g| {
            let parts = &g.parts[..usize::from(g.nparts)];
            if !g.tcp {
                let offload = Offload { data_valid: g.verified, ..Offload::NONE };
                return Write { vnet: offload.emit(), header: &[], parts, segments: 1 };
            }
            if g.nparts > 1 {
                let hl = usize::from(g.hdr_len);
                let offload = Offload {
                    gso: if g.v6 { Gso::Tcp6 { mss: g.mss } } else { Gso::Tcp4 { mss: g.mss } },
                    ecn: false,
                    hdr_len: hl as u16,
                    csum: Some((u16::from(g.l4), TCP_CSUM_OFFSET)),
                    data_valid: false,
                };
                Write { vnet: offload.emit(), header: g.header(), parts, segments: parts.len() }
            } else {
                // One segment after all: its own headers, unchanged, and its payload.
                let offload = Offload { data_valid: true, ..Offload::NONE };
                Write { vnet: offload.emit(), header: g.header(), parts, segments: 1 }
            }
        })
    }
}

/// What [`Coalescer::push`] learned about a TCP segment.
#[derive(Debug)]
struct TcpSeg {
    v6: bool,
    l4: usize,
    hdr_len: usize,
    key: FlowKey,
    payload: usize,
    seq: u32,
    flags: u8,
    id: u16,
    df: bool,
    /// Its checksum verifies.
    verified: bool,
    /// Only ACK (and PSH or FIN, and ECE) set, with payload: it may merge.
    mergeable: bool,
    /// PSH or FIN: the merge ends with it.
    ends: bool,
}

/// Reads an inner frame as a TCP segment over untagged IPv4 (no options) or IPv6 (no extension
/// headers), and verifies its checksum. `None` for anything else.
fn tcp_segment(data: &[u8]) -> Option<TcpSeg> {
    let l3 = parse_l3(data, data.len(), None)?;
    if l3.proto != u8::from(IpProtocol::Tcp) {
        return None;
    }
    let (l4, end) = (l3.l4, l3.end);
    if !l3.v6 && l4 != L3_OFFSET + ipv4::HEADER_LEN {
        return None;
    }
    let tcp = TcpPacket::new_unchecked(data.get(l4..end)?.first_chunk::<{ tcp::HEADER_LEN }>()?);
    let hdr_len = l4 + tcp.header_len();
    if tcp.header_len() < tcp::HEADER_LEN || hdr_len > end || hdr_len > MAX_HDR {
        return None;
    }
    let ip = &data[L3_OFFSET..l4];
    let pseudo = pseudo_header(ip, l3.v6, IpProtocol::Tcp, end - l4);
    let verified = checksum::verifies(checksum::add(pseudo, checksum::sum(&data[l4..end])));
    let mut key = FlowKey { ports: [tcp.src_port(), tcp.dst_port()], ..FlowKey::default() };
    let (id, df) = if l3.v6 {
        let ip = Ipv6Packet::new_unchecked(ip);
        key.src = ip.src_addr().octets();
        key.dst = ip.dst_addr().octets();
        (0, true)
    } else {
        let ip = Ipv4Packet::new_unchecked(ip);
        key.src[..4].copy_from_slice(&ip.src_addr().octets());
        key.dst[..4].copy_from_slice(&ip.dst_addr().octets());
        (ip.ident(), ip.dont_frag())
    };
    let flags = tcp.flags();
    let payload = end - hdr_len;
    let never = tcp::FLAG_SYN | tcp::FLAG_RST | tcp::FLAG_URG | tcp::FLAG_CWR;
    Some(TcpSeg {
        v6: l3.v6,
        l4,
        hdr_len,
        key,
        payload,
        seq: tcp.seq_number(),
        flags,
        id,
        df,
        verified,
        mergeable: payload > 0 && flags & never == 0 && flags & tcp::FLAG_ACK != 0,
        ends: flags & (tcp::FLAG_PSH | tcp::FLAG_FIN) != 0,
    })
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    // Test packets are built byte by byte at their offsets, independently of the views.
    const TCP_SEQ: usize = 4;
    const TCP_ACK: usize = 8;
    const TCP_FLAGS: usize = 13;
    const TCP_CSUM: usize = 16;
    const PSH: u8 = tcp::FLAG_PSH;
    const ACK: u8 = tcp::FLAG_ACK;
    const CWR: u8 = tcp::FLAG_CWR;

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    fn put16(b: &mut [u8], at: usize, v: u16) {
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// A TCP super-packet as the kernel hands one over with TSO: full headers for the whole
    /// payload, the TCP checksum field holding the pseudo-header sum.
    fn super_packet(v6: bool, payload: &[u8], flags: u8, options: usize) -> Vec<u8> {
        let tcp_hl = 20 + options;
        let l4 = if v6 { 54 } else { 34 };
        let mut p = vec![0u8; l4 + tcp_hl + payload.len()];
        p[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        p[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        let tcp_len = tcp_hl + payload.len();
        if v6 {
            p[12..14].copy_from_slice(&[0x86, 0xdd]);
            p[14] = 0x60;
            put16(&mut p, 18, tcp_len as u16);
            p[20] = 6;
            p[21] = 63;
            p[22..38].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            p[38..54].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
        } else {
            p[12..14].copy_from_slice(&[0x08, 0x00]);
            p[14] = 0x45;
            put16(&mut p, 16, (20 + tcp_len) as u16);
            put16(&mut p, 18, 0x1234);
            p[20] = 0x40;
            p[22] = 63;
            p[23] = 6;
            p[26..30].copy_from_slice(&[10, 244, 1, 2]);
            p[30..34].copy_from_slice(&[10, 244, 2, 2]);
            let c = checksum::checksum(&p[14..34]);
            put16(&mut p, 24, c);
        }
        put16(&mut p, l4, 40000);
        put16(&mut p, l4 + 2, 5201);
        p[l4 + 4..l4 + 8].copy_from_slice(&0xfffff000u32.to_be_bytes()); // wraps
        p[l4 + 8..l4 + 12].copy_from_slice(&77u32.to_be_bytes());
        p[l4 + 12] = ((tcp_hl / 4) as u8) << 4;
        p[l4 + 13] = flags;
        put16(&mut p, l4 + 14, 502);
        for (i, b) in p[l4 + 20..l4 + tcp_hl].iter_mut().enumerate() {
            *b = if i % 4 == 0 { 1 } else { 8 + i as u8 }; // NOPs and bytes
        }
        p[l4 + tcp_hl..].copy_from_slice(payload);
        let pseudo = pseudo_of(&p, v6, tcp_len);
        put16(&mut p, l4 + TCP_CSUM, pseudo);
        p
    }

    fn pseudo_of(p: &[u8], v6: bool, tcp_len: usize) -> u16 {
        if v6 {
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&p[22..38]).unwrap());
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&p[38..54]).unwrap());
            checksum::pseudo_header_v6(src, dst, IpProtocol::Tcp, tcp_len as u32)
        } else {
            let src = Ipv4Addr::new(p[26], p[27], p[28], p[29]);
            let dst = Ipv4Addr::new(p[30], p[31], p[32], p[33]);
            checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, tcp_len as u16)
        }
    }

    fn offload_of(v6: bool, mss: u16) -> Offload {
        let l4 = if v6 { 54 } else { 34 };
        Offload {
            gso: if v6 { Gso::Tcp6 { mss } } else { Gso::Tcp4 { mss } },
            csum: Some((l4, 16)),
            ..Offload::NONE
        }
    }

    fn segments(pkt: &[u8], split: usize, offload: &Offload) -> Vec<Vec<u8>> {
        let (head, tail) = pkt.split_at(split.min(pkt.len()));
        let mut s = Segmenter::new(head, tail, offload).unwrap();
        let mut out = Vec::new();
        while let Some(len) = s.next_len() {
            let mut b = vec![0xeeu8; len + 7];
            assert_eq!(s.write_next(&mut b), len);
            b.truncate(len);
            out.push(b);
        }
        assert_eq!(out.len(), s.count());
        out
    }

    /// Writes what the coalescer made of `segs` as the bytes the kernel would read.
    fn coalesce(segs: &[Vec<u8>]) -> Vec<(Offload, Vec<u8>)> {
        let mut c = Coalescer::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(c.push(i as u32, s));
        }
        c.finish();
        c.writes()
            .map(|w| {
                let mut bytes = w.header.to_vec();
                for p in w.parts {
                    let s = &segs[p.id as usize];
                    bytes.extend_from_slice(&s[p.start as usize..(p.start + p.len) as usize]);
                }
                (Offload::parse(&w.vnet).unwrap(), bytes)
            })
            .collect()
    }

    fn tcp_verifies(seg: &[u8]) -> bool {
        let v6 = seg[12] == 0x86;
        let l4 = if v6 { 54 } else { 34 };
        let pseudo = pseudo_of(seg, v6, seg.len() - l4);
        checksum::verifies(checksum::add(pseudo, checksum::sum(&seg[l4..])))
    }

    #[test]
    fn virtio_header_round_trip_and_rejects() {
        let o = Offload {
            gso: Gso::Tcp4 { mss: 1398 },
            ecn: true,
            hdr_len: 66,
            csum: Some((34, 16)),
            data_valid: false,
        };
        assert_eq!(o.emit(), [1, 0x81, 66, 0, 0x76, 0x05, 34, 0, 16, 0]);
        assert_eq!(Offload::parse(&o.emit()), Ok(o));
        assert_eq!(Offload::parse(&[0; VNET_HDR_LEN]), Ok(Offload::NONE));
        // Legacy UFO, unknown types, GSO without a size or without a checksum to complete.
        assert!(Offload::parse(&[1, 3, 0, 0, 100, 0, 34, 0, 6, 0]).is_err());
        assert!(Offload::parse(&[1, 9, 0, 0, 100, 0, 34, 0, 6, 0]).is_err());
        assert!(Offload::parse(&[1, 1, 0, 0, 0, 0, 34, 0, 16, 0]).is_err());
        assert!(Offload::parse(&[0, 1, 0, 0, 100, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn segments_are_what_tso_makes() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let pkt = super_packet(false, &payload, ACK | PSH | CWR, 12);
        let segs = segments(&pkt, 1500, &offload_of(false, 1388));
        assert_eq!(segs.len(), 3);
        let mut seq = 0xfffff000u32;
        for (i, s) in segs.iter().enumerate() {
            let pay = if i < 2 { 1388 } else { 3000 - 2 * 1388 };
            assert_eq!(s.len(), 66 + pay);
            assert_eq!(usize::from(be16(s, 16)), s.len() - 14, "IPv4 total length");
            assert_eq!(be16(s, 18), 0x1234 + i as u16, "IPv4 ID advances per segment");
            assert!(checksum::verifies(checksum::sum(&s[14..34])), "IPv4 checksum");
            assert_eq!(be32(s, 34 + TCP_SEQ), seq);
            seq = seq.wrapping_add(pay as u32);
            let flags = s[34 + TCP_FLAGS];
            assert_eq!(flags & PSH != 0, i == 2, "PSH on the last segment only");
            assert_eq!(flags & CWR != 0, i == 0, "CWR on the first segment only");
            assert!(tcp_verifies(s), "TCP checksum of segment {i}");
            assert_eq!(&s[66..], &payload[i * 1388..i * 1388 + pay]);
        }
    }

    #[test]
    fn udp_segmentation_makes_whole_datagrams() {
        let payload: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let mut p = super_packet(false, &[], 0, 0);
        p.truncate(34);
        p[23] = 17;
        p.extend_from_slice(&[0x9c, 0x40, 0x23, 0x28, 0, 0, 0, 0]);
        p.extend_from_slice(&payload);
        let ip_len = (p.len() - 14) as u16;
        put16(&mut p, 16, ip_len);
        put16(&mut p, 24, 0);
        let c = checksum::checksum(&p[14..34]);
        put16(&mut p, 24, c);
        let o = Offload { gso: Gso::Udp { size: 1000 }, csum: Some((34, 6)), ..Offload::NONE };
        let segs = segments(&p, 800, &o);
        assert_eq!(segs.iter().map(Vec::len).collect::<Vec<_>>(), [1042, 1042, 542]);
        for s in &segs {
            assert_eq!(usize::from(be16(s, 38)), s.len() - 34, "UDP length");
            let src = Ipv4Addr::new(s[26], s[27], s[28], s[29]);
            let dst = Ipv4Addr::new(s[30], s[31], s[32], s[33]);
            let pseudo =
                checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, (s.len() - 34) as u16);
            assert!(checksum::verifies(checksum::add(pseudo, checksum::sum(&s[34..]))));
        }
    }

    #[test]
    fn bad_offload_metadata_is_refused() {
        let pkt = super_packet(false, &[0; 100], ACK, 0);
        // Wrong family, wrong checksum position, headers beyond the head, UDP over TCP.
        assert!(Segmenter::new(&pkt, &[], &offload_of(true, 50)).is_err());
        let o = Offload { csum: Some((30, 16)), ..offload_of(false, 50) };
        assert!(Segmenter::new(&pkt, &[], &o).is_err());
        assert!(Segmenter::new(&pkt[..40], &pkt[40..], &offload_of(false, 50)).is_err());
        let o = Offload { gso: Gso::Udp { size: 50 }, csum: Some((34, 6)), ..Offload::NONE };
        assert!(Segmenter::new(&pkt, &[], &o).is_err());
        assert!(Segmenter::new(&pkt, &[], &Offload::NONE).is_err());
        let mut short = pkt.clone();
        short.truncate(60);
        assert!(
            Segmenter::new(&short, &[], &offload_of(false, 50)).is_err(),
            "IP length past the end"
        );
    }

    #[test]
    fn complete_checksum_fills_the_field() {
        let mut pkt = super_packet(false, b"hello world", ACK | PSH, 0);
        complete_checksum(&mut pkt, (34, 16)).unwrap();
        assert!(tcp_verifies(&pkt));
        assert!(complete_checksum(&mut pkt, (60, 16)).is_err());
        // A field at an odd offset from the start would straddle two summed words (fuzzing
        // found that the kernel's word was taken for it).
        assert_eq!(complete_checksum(&mut pkt, (35, 1)), Err(DropReason::BadOffload));
    }

    #[test]
    fn a_gap_a_changed_ack_or_a_bad_checksum_ends_the_merge() {
        let payload = vec![7u8; 4000];
        let pkt = super_packet(false, &payload, ACK, 0);
        let mut segs = segments(&pkt, 9000, &offload_of(false, 1000));
        assert_eq!(coalesce(&segs).len(), 1);
        // A lost segment: two merged packets, the second starting after the gap.
        let lost = segs.remove(1);
        let out = coalesce(&segs);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0.gso, Gso::None, "a lone segment is written as it came");
        assert!(out[0].0.data_valid);
        assert_eq!(out[1].0.gso, Gso::Tcp4 { mss: 1000 });
        segs.insert(1, lost);
        // A different ACK number.
        segs[2][34 + TCP_ACK + 3] ^= 1;
        assert!(coalesce(&segs).len() >= 2);
        // A corrupted segment is not merged and not marked valid.
        let mut segs = segments(&pkt, 9000, &offload_of(false, 1000));
        segs[1][100] ^= 0xff;
        let out = coalesce(&segs);
        assert_eq!(out.len(), 3);
        assert!(!out[1].0.data_valid);
        assert_eq!(out[1].1, segs[1]);
    }

    #[test]
    fn flows_keep_their_order_and_a_pure_ack_closes_its_flow() {
        let a = super_packet(false, &[1u8; 3000], ACK, 0);
        let mut b = super_packet(false, &[2u8; 3000], ACK, 0);
        b[34..36].copy_from_slice(&41000u16.to_be_bytes());
        let l4 = 34;
        let pseudo = pseudo_of(&b, false, b.len() - l4);
        put16(&mut b, l4 + TCP_CSUM, pseudo);
        let sa = segments(&a, 9000, &offload_of(false, 1000));
        let sb = segments(&b, 9000, &offload_of(false, 1000));
        // Interleaved flows, then a pure ACK of flow a, then a's last segment again (new group).
        let mut ack = super_packet(false, &[], ACK, 0);
        complete_checksum(&mut ack, (34, 16)).unwrap();
        let all = vec![
            sa[0].clone(),
            sb[0].clone(),
            sa[1].clone(),
            sb[1].clone(),
            ack,
            sa[2].clone(),
            sb[2].clone(),
        ];
        let out = coalesce(&all);
        let lens: Vec<usize> = out.iter().map(|(_, b)| b.len()).collect();
        assert_eq!(lens, [54 + 2000, 54 + 3000, 54, 54 + 1000]);
    }

    fn build_and_check(
        v6: bool,
        payload: &[u8],
        mss: u16,
        options: usize,
        split: usize,
        psh: bool,
    ) {
        let flags = ACK | if psh { PSH } else { 0 };
        let pkt = super_packet(v6, payload, flags, options);
        let segs = segments(&pkt, split, &offload_of(v6, mss));
        for s in &segs {
            assert!(tcp_verifies(s));
            assert!(s.len() <= usize::from(mss) + pkt.len() - payload.len());
        }
        let out = coalesce(&segs);
        if segs.len() == 1 {
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].0.gso, Gso::None);
            let mut expect = pkt.clone();
            complete_checksum(&mut expect, (if v6 { 54 } else { 34 }, 16)).unwrap();
            assert_eq!(out[0].1, expect);
            return;
        }
        // Segment, then coalesce: the super-packet again, byte for byte.
        assert_eq!(out.len(), 1, "{} segments came back as {}", segs.len(), out.len());
        assert_eq!(out[0].0, offload_of(v6, mss).with_hdr_len(pkt.len() - payload.len()));
        assert_eq!(out[0].1, pkt);
    }

    impl Offload {
        fn with_hdr_len(self, n: usize) -> Offload {
            Offload { hdr_len: n as u16, ..self }
        }
    }

    proptest! {
        #[test]
        fn segment_then_coalesce_is_identity(
            v6 in any::<bool>(),
            len in 1usize..20_000,
            mss in 100u16..1500,
            options in prop_oneof![Just(0usize), Just(12), Just(40)],
            split in 60usize..3000,
            psh in any::<bool>(),
            seed in any::<u8>(),
        ) {
            // At most MAX_COALESCE_PARTS segments: more are written as more than one packet.
            let len = len.min(usize::from(mss) * MAX_COALESCE_PARTS);
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(seed | 1)).collect();
            build_and_check(v6, &payload, mss, options, split.max(120), psh);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            hdr in any::<[u8; VNET_HDR_LEN]>(),
        ) {
            if let Ok(o) = Offload::parse(&hdr) {
                if let Ok(mut s) = Segmenter::new(&data, &[], &o) {
                    let mut out = vec![0u8; 70_000];
                    let mut n = 0;
                    while s.next_len().is_some() && n < 1000 {
                        s.write_next(&mut out);
                        n += 1;
                    }
                }
                if let Some(span) = o.csum {
                    let mut d = data.clone();
                    let _ = complete_checksum(&mut d, span);
                }
            }
            let mut c = Coalescer::new();
            c.push(0, &data);
            c.push(1, &data);
            c.finish();
            for w in c.writes() {
                for p in w.parts {
                    prop_assert!((p.start + p.len) as usize <= data.len());
                }
            }
        }
    }
}
