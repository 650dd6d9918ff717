//! Encapsulation: an inner Ethernet frame read from the overlay TAP `linen.1` → a VXLAN frame
//! for the underlay.

use std::net::SocketAddrV4;

use super::nexthop::{outer, OUTER_V4_LEN, VXLAN_LEN};
use super::{flow, icmp, Action, Config, DropReason, Egress, Frame, NextHop, Routes};
use crate::wire::ip::PORTS_LEN;
use crate::wire::{
    checksum, ethernet, ipv4, ipv6, EtherType, EthernetFrame, Ipv4Packet, Ipv6Packet, Ports,
    UdpPacket,
};

/// What [`classify`] learned about an inner frame that is to be forwarded.
struct Inner<'r> {
    next_hop: &'r NextHop,
    /// Length of the inner Ethernet frame to encapsulate (trailing padding removed).
    len: usize,
    /// Flow hash (outer UDP source port).
    hash: u32,
    /// Outer IPv4 identification.
    id: u16,
}

/// Validates the inner frame, looks up its route, and answers oversize packets. `Err` is the final
/// action (a drop, or an ICMP error written in place).
#[inline(always)]
fn classify<'r>(
    frame: &mut Frame<'_>,
    cfg: &Config,
    routes: &'r Routes,
) -> Result<Inner<'r>, Action> {
    let Some(eth) = frame.data().first_chunk::<{ ethernet::HEADER_LEN }>() else {
        return Err(Action::Drop(DropReason::Truncated));
    };
    match EthernetFrame::new_unchecked(eth).ethertype() {
        EtherType::Ipv4 => classify_v4(frame, cfg, routes),
        EtherType::Ipv6 => classify_v6(frame, cfg, routes),
        EtherType::Vlan | EtherType::QinQ => Err(Action::Drop(DropReason::VlanTagged)),
        _ => Err(Action::Drop(DropReason::NotIpv4OrIpv6)),
    }
}

#[inline(always)]
fn classify_v4<'r>(
    frame: &mut Frame<'_>,
    cfg: &Config,
    routes: &'r Routes,
) -> Result<Inner<'r>, Action> {
    let l3 = frame.data().get(ethernet::HEADER_LEN..).unwrap_or_default();
    // The version first, then the lengths the header announces.
    let Some(fixed) = l3.first_chunk::<{ ipv4::HEADER_LEN }>() else {
        return Err(Action::Drop(DropReason::Truncated));
    };
    if Ipv4Packet::new_unchecked(fixed).version() != 4 {
        return Err(Action::Drop(DropReason::BadIpHeader));
    }
    let ip = match Ipv4Packet::new_checked(l3) {
        Ok(ip) => ip,
        Err(crate::wire::Error::BadHeaderLen) => return Err(Action::Drop(DropReason::BadIpHeader)),
        Err(_) => return Err(Action::Drop(DropReason::Truncated)),
    };
    if ip.ttl() == 0 {
        return Err(Action::Drop(DropReason::TtlExpired));
    }
    let dst = u32::from(ip.dst_addr());
    let Some(next_hop) = routes.lookup_v4(dst) else {
        return Err(Action::Drop(DropReason::NoRoute));
    };
    let ip_len = usize::from(ip.total_len());
    if ip_len > usize::from(cfg.overlay_mtu) {
        if !ip.dont_frag() {
            return Err(Action::Drop(DropReason::TooBigDfClear));
        }
        let ihl = ip.header_len();
        return Err(icmp::frag_needed_v4(frame, ihl, ip_len, cfg.overlay_mtu));
    }
    let proto = ip.protocol_raw();
    // Ports only when this is not a fragment: later fragments carry none, and all pieces of one
    // packet must take one path.
    let ports = match Ports::new_checked(ip.payload()) {
        Ok(ports) if !ip.is_fragment() && flow::has_ports(proto) => {
            u32::from_ne_bytes(ports.octets())
        }
        _ => 0,
    };
    let hash = flow::hash_v4(u32::from_ne_bytes(ip.src_addr().octets()), dst, proto, ports);
    let id = outer_id(ip.ident(), hash);
    Ok(Inner { next_hop, len: ethernet::HEADER_LEN + ip_len, hash, id })
}

#[inline(always)]
fn classify_v6<'r>(
    frame: &mut Frame<'_>,
    cfg: &Config,
    routes: &'r Routes,
) -> Result<Inner<'r>, Action> {
    let l3 = frame.data().get(ethernet::HEADER_LEN..).unwrap_or_default();
    let Some(fixed) = l3.first_chunk::<{ ipv6::HEADER_LEN }>() else {
        return Err(Action::Drop(DropReason::Truncated));
    };
    if Ipv6Packet::new_unchecked(fixed).version() != 6 {
        return Err(Action::Drop(DropReason::BadIpHeader));
    }
    let Ok(ip) = Ipv6Packet::new_checked(l3) else {
        return Err(Action::Drop(DropReason::Truncated));
    };
    if ip.hop_limit() == 0 {
        return Err(Action::Drop(DropReason::TtlExpired));
    }
    let dst = u128::from(ip.dst_addr());
    let Some(next_hop) = routes.lookup_v6(dst) else {
        return Err(Action::Drop(DropReason::NoRoute));
    };
    let ip_len = ipv6::HEADER_LEN + usize::from(ip.payload_len());
    if ip_len > usize::from(cfg.overlay_mtu) {
        return Err(icmp::packet_too_big_v6(frame, ip_len, cfg.overlay_mtu));
    }
    let proto = ip.next_header_raw();
    // The port pair, and the four transport-header bytes after it (TCP sequence number, UDP
    // length and checksum) as a per-packet value, when the transport header follows directly;
    // extension headers are not walked.
    let (ports, more) = match ip.payload().first_chunk::<{ 2 * PORTS_LEN }>() {
        Some(l4) if flow::has_ports(proto) => {
            let (pair, next) = l4.split_at(PORTS_LEN);
            let next = Ports::new_unchecked(next).octets();
            (u32::from_ne_bytes(Ports::new_unchecked(pair).octets()), u32::from_ne_bytes(next))
        }
        _ => (0, 0),
    };
    let src = u128::from_ne_bytes(ip.src_addr().octets());
    let hash = flow::hash_v6(src, dst, proto, ports);
    // IPv6 has no ID to reuse; bytes that vary per packet stand in for it (see classify_v4).
    let id = ((hash >> 16) ^ more ^ (more >> 16)) as u16;
    Ok(Inner { next_hop, len: ethernet::HEADER_LEN + ip_len, hash, id })
}

/// Encapsulates the inner Ethernet frame in `frame` for the underlay.
///
/// Needs [`OUTER_V4_LEN`] (50) bytes of headroom. On success the frame has grown by the outer
/// header (its start moved back 50 bytes) and holds the complete VXLAN frame:
///
/// - [`Action::Transmit`]`(`[`Egress::Underlay`]`)`: send it on the underlay device.
/// - [`Action::ToKernel`]: the underlay next-hop MAC is not resolved yet. The frame is the complete
///   VXLAN frame except that the outer Ethernet destination is `00:00:00:00:00:00`: bytes from
///   offset 14 ([`super::OUTER_IP_OFFSET`]) are a finished IPv4 datagram (header checksum valid)
///   for a raw `IPPROTO_RAW` socket, and bytes from offset 42
///   ([`super::OUTER_UDP_PAYLOAD_OFFSET`]) are the UDP payload (VXLAN header + inner frame) for a
///   UDP socket's `sendto` to the remote VTEP (outer destination address, offset 30) on the VXLAN
///   port. Either way the kernel routes it and resolves the next hop with ARP, which the control
///   plane sees as a neighbour update and turns into a new next hop.
/// - [`Action::Reply`]: the inner packet was over the overlay MTU with DF set (or IPv6); the frame
///   now holds an ICMP fragmentation-needed / ICMPv6 packet-too-big error addressed to the inner
///   source, to be sent back out where the frame came from (`linen.1`).
/// - [`Action::Drop`]: the frame is unchanged.
///
/// The inner frame is carried unchanged (MACs, TTL, checksums); Ethernet padding after the IP
/// packet is removed.
#[inline(always)]
pub fn encap(frame: &mut Frame<'_>, cfg: &Config, routes: &Routes) -> Action {
    let (buf, start, len) = frame.raw_mut();
    // The frame is passed on as parts so that it never escapes and stays in registers.
    let (action, start, len) = match encap_fast_v4(buf, start, len, cfg, routes) {
        Some(done) => done,
        None => {
            let mut f = Frame::from_valid_parts(buf, start, len);
            let action = encap_general(&mut f, cfg, routes);
            (action, f.start(), f.len())
        }
    };
    frame.set_valid_bounds(start, len);
    action
}

/// Bytes of the inner frame [`encap_fast_v4`] reads through its views: Ethernet, an IPv4 header
/// without options, and the transport header's port pair.
const FAST_V4_INNER: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + PORTS_LEN;

/// [`encap`] for the common case, in as few instructions as we could: an untagged IPv4 frame
/// with a 20-byte header and at least 4 bytes of payload, TTL left, within the MTU, with 50 bytes
/// of headroom. Returns `None` for anything else without touching the buffer, and
/// [`encap_general`] then decides (it repeats every check, so this function only has to be right
/// about what it accepts). Only `no_route` is answered here, the one drop that needs the lookup.
/// On success returns the action and the frame's new start and length.
///
/// The views are `new_unchecked` over constant ranges of one checked fixed-size chunk, so every
/// getter is a plain load (see `wire`'s module docs).
#[inline(always)]
fn encap_fast_v4(
    buf: &mut [u8],
    start: usize,
    len: usize,
    cfg: &Config,
    routes: &Routes,
) -> Option<(Action, usize, usize)> {
    let new_start = start.checked_sub(OUTER_V4_LEN)?;
    let region = buf.get_mut(new_start..start + len)?;
    let (hdr, data) = region.split_first_chunk_mut::<OUTER_V4_LEN>()?;
    let h = data.first_chunk::<FAST_V4_INNER>()?;
    let eth = EthernetFrame::new_unchecked(&h[..ethernet::HEADER_LEN]);
    let ip = Ipv4Packet::new_unchecked(&h[ethernet::HEADER_LEN..FAST_V4_INNER - PORTS_LEN]);
    if eth.ethertype() != EtherType::Ipv4
        || ip.version() != 4
        || ip.header_len() != ipv4::HEADER_LEN
        || ip.ttl() == 0
    {
        return None;
    }
    let ip_len = usize::from(ip.total_len());
    // 24 <= ip_len <= len - 14 and ip_len <= MTU.
    let min = ipv4::HEADER_LEN + PORTS_LEN;
    if ip_len.wrapping_sub(min) > len - FAST_V4_INNER || ip_len > usize::from(cfg.overlay_mtu) {
        return None;
    }
    let dst = u32::from(ip.dst_addr());
    let Some(nh) = routes.lookup_v4(dst) else {
        return Some((Action::Drop(DropReason::NoRoute), start, len));
    };
    let proto = ip.protocol_raw();
    // Ports only for unfragmented TCP/UDP/SCTP/UDP-Lite (see `flow`), selected without a branch.
    let mask = flow::ports_mask(proto) & 0u32.wrapping_sub(u32::from(!ip.is_fragment()));
    let ports = Ports::new_unchecked(&h[FAST_V4_INNER - PORTS_LEN..]);
    let ports = u32::from_ne_bytes(ports.octets()) & mask;
    let hash = flow::hash_v4(u32::from_ne_bytes(ip.src_addr().octets()), dst, proto, ports);
    let id = outer_id(ip.ident(), hash);
    let inner_len = ethernet::HEADER_LEN + ip_len;
    write_outer(hdr, nh, cfg, inner_len, hash, id);
    if cfg.udp_checksum {
        fill_udp_checksum(region.get_mut(..OUTER_V4_LEN + inner_len)?, cfg, nh);
    }
    let action = if nh.resolved() {
        Action::Transmit(Egress::Underlay { ifindex: nh.ifindex() })
    } else {
        Action::ToKernel
    };
    Some((action, new_start, OUTER_V4_LEN + inner_len))
}

/// The outer IPv4 ID for an inner IPv4 packet with ID `inner_id`. The outer header has DF clear,
/// so its ID should differ between packets of a flow: reuse the inner ID (senders vary it),
/// spread across flows by the hash. No per-worker counter needed.
///
/// The hash bits are xored into the ID as it is stored (big-endian), so that the byte swaps of
/// reading and writing it cancel and the fast path compiles to one xor.
#[inline(always)]
fn outer_id(inner_id: u16, hash: u32) -> u16 {
    u16::from_be(inner_id.to_be() ^ (hash >> 16) as u16)
}

/// Copies the next hop's template into `hdr` and patches lengths, ID, IPv4 checksum and source
/// port for an inner frame of `inner_len` bytes.
#[inline(always)]
fn write_outer(
    hdr: &mut [u8; OUTER_V4_LEN],
    nh: &NextHop,
    cfg: &Config,
    inner_len: usize,
    hash: u32,
    id: u16,
) {
    *hdr = *nh.outer_header();
    let ip_len = (OUTER_V4_LEN - outer::IP.start + inner_len) as u16;
    // The template's header sum plus the two words that change: no pass over the header. The
    // sum is taken over the words as stored (`to_be`), which gives the stored checksum: a
    // ones'-complement sum does not depend on byte order (RFC 1071 §2(B)), and this way every
    // byte swap cancels against the setters' in the compiled code.
    let sum = u32::from(nh.ip_sum_ne()) + u32::from(ip_len.to_be()) + u32::from(id.to_be());
    let mut ip = Ipv4Packet::new_unchecked(&mut hdr[outer::IP]);
    ip.set_total_len(ip_len);
    ip.set_ident(id);
    ip.set_checksum(u16::from_be(checksum::finish(checksum::fold32(sum))));
    let mut udp = UdpPacket::new_unchecked(&mut hdr[outer::UDP]);
    udp.set_src_port(flow::source_port(hash, cfg.source_port_min, cfg.source_port_max));
    udp.set_len(ip_len - ipv4::HEADER_LEN as u16);
}

/// Computes the outer UDP checksum of `frame` (the outer headers as [`write_outer`] left them,
/// then the inner frame): what the kernel's `udpcsum` does.
#[inline(never)]
fn fill_udp_checksum(frame: &mut [u8], cfg: &Config, nh: &NextHop) {
    let mut udp = UdpPacket::new_unchecked(&mut frame[outer::UDP.start..]);
    udp.fill_checksum_v4(cfg.local_vtep, nh.remote_vtep());
}

/// [`encap`] for every frame: all checks, exact drop reasons, ICMP errors.
#[cold]
#[inline(never)]
fn encap_general(frame: &mut Frame<'_>, cfg: &Config, routes: &Routes) -> Action {
    if frame.headroom() < OUTER_V4_LEN {
        return Action::Drop(DropReason::NoHeadroom);
    }
    let inner = match classify(frame, cfg, routes) {
        Ok(inner) => inner,
        Err(action) => return action,
    };
    let nh = inner.next_hop;
    let (buf, start, _) = frame.raw_mut();
    let new_start = start - OUTER_V4_LEN;
    let Some(region) = buf.get_mut(new_start..start + inner.len) else {
        return Action::Drop(DropReason::Truncated);
    };
    let Some((hdr, _)) = region.split_first_chunk_mut::<OUTER_V4_LEN>() else {
        return Action::Drop(DropReason::Truncated);
    };
    write_outer(hdr, nh, cfg, inner.len, inner.hash, inner.id);
    if cfg.udp_checksum {
        fill_udp_checksum(region, cfg, nh);
    }
    frame.set_bounds(new_start, OUTER_V4_LEN + inner.len);
    if nh.resolved() {
        Action::Transmit(Egress::Underlay { ifindex: nh.ifindex() })
    } else {
        Action::ToKernel
    }
}

/// Encapsulation for the TAP/UDP fallback datapath: prepends only the VXLAN header, for an
/// ordinary UDP socket on the VXLAN port to `sendto`.
///
/// Needs [`VXLAN_LEN`] (8) bytes of headroom. Same validation, route lookup, MTU handling and
/// flow hash as [`encap`]. On success the frame holds the VXLAN header and the inner frame and the
/// action is [`Action::Transmit`]`(`[`Egress::Udp`]` { remote, source_port })`: send the frame to
/// `remote` (the remote VTEP on the configured port). `source_port` is the flow-hash port
/// [`encap`] would have used; a socket bound to the VXLAN port cannot use it per packet, so it is
/// informational unless the I/O layer keeps sockets per source port. [`Action::Reply`] and
/// [`Action::Drop`] are as for [`encap`]; [`Action::ToKernel`] never occurs (the kernel resolves
/// underlay neighbours for sockets itself).
#[inline]
pub fn encap_udp_payload(frame: &mut Frame<'_>, cfg: &Config, routes: &Routes) -> Action {
    if frame.headroom() < VXLAN_LEN {
        return Action::Drop(DropReason::NoHeadroom);
    }
    let inner = match classify(frame, cfg, routes) {
        Ok(inner) => inner,
        Err(action) => return action,
    };
    let nh = inner.next_hop;
    let (buf, start, _) = frame.raw_mut();
    let new_start = start - VXLAN_LEN;
    let Some(hdr) = buf.get_mut(new_start..start).and_then(|b| b.first_chunk_mut::<VXLAN_LEN>())
    else {
        return Action::Drop(DropReason::Truncated);
    };
    hdr.copy_from_slice(&nh.outer_header()[outer::VXLAN]);
    frame.set_bounds(new_start, VXLAN_LEN + inner.len);
    Action::Transmit(Egress::Udp {
        remote: SocketAddrV4::new(nh.remote_vtep(), cfg.port),
        source_port: flow::source_port(inner.hash, cfg.source_port_min, cfg.source_port_max),
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::pipeline::{Peer, RoutesBuilder};

    fn setup(udp_checksum: bool, resolved: bool) -> (Config, Routes) {
        let mut cfg =
            Config::new(Ipv4Addr::new(192, 168, 77, 1), [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        cfg.udp_checksum = udp_checksum;
        let peer = Peer {
            vtep: Ipv4Addr::new(192, 168, 77, 2),
            vtep_mac: [2, 0, 0, 0, 0, 3],
            underlay_mac: resolved.then_some([2, 0, 0, 0, 0, 4]),
            ifindex: 9,
        };
        let mut b = RoutesBuilder::new();
        b.insert("10.244.0.0/16".parse().unwrap(), NextHop::new(&cfg, &peer));
        (cfg, b.build())
    }

    proptest! {
        /// Whenever the fast path answers, the general path gives the same answer and bytes.
        #[test]
        fn fast_path_agrees_with_the_general_path(
            mut ip in proptest::collection::vec(any::<u8>(), 20..200),
            pad in 0usize..8,
            flags in any::<u8>(),
            proto in prop_oneof![Just(6u8), Just(17u8), Just(1u8), any::<u8>()],
            udp_checksum in any::<bool>(),
            resolved in any::<bool>(),
            dst_in_route in any::<bool>(),
        ) {
            let (cfg, routes) = setup(udp_checksum, resolved);
            let ip_len = ip.len() as u16;
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
            ip[6] = flags;
            ip[9] = proto;
            if dst_in_route {
                ip[16..18].copy_from_slice(&[10, 244]);
            }
            let mut packet = vec![2, 0, 0, 0, 0, 3, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
            packet.extend_from_slice(&ip);
            packet.extend(std::iter::repeat_n(0xee, pad));
            let mut fast_buf = vec![0u8; 64];
            fast_buf.extend_from_slice(&packet);
            let mut general_buf = fast_buf.clone();
            let fast = encap_fast_v4(&mut fast_buf, 64, packet.len(), &cfg, &routes);
            if let Some((action, start, len)) = fast {
                let mut general = Frame::new(&mut general_buf, 64, packet.len()).unwrap();
                prop_assert_eq!(encap_general(&mut general, &cfg, &routes), action);
                prop_assert_eq!((start, len), (general.start(), general.len()));
                prop_assert_eq!(&fast_buf[..], general.buffer());
            }
        }
    }
}
