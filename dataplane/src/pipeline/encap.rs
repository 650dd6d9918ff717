//! Encapsulation: an inner Ethernet frame from `linen.1x` (or the TAP device) → a VXLAN frame
//! for the underlay.

use std::net::SocketAddrV4;

use super::nexthop::{v4, OUTER_V4_LEN, VXLAN_LEN};
use super::{csum, flow, icmp, Action, Config, DropReason, Egress, Frame, NextHop, Routes};

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

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Validates the inner frame, looks up its route, and answers oversize packets. `Err` is the final
/// action (a drop, or an ICMP error written in place).
#[inline(always)]
fn classify<'r>(
    frame: &mut Frame<'_>,
    cfg: &Config,
    routes: &'r Routes,
) -> Result<Inner<'r>, Action> {
    let data = frame.data();
    let Some(eth) = data.first_chunk::<14>() else {
        return Err(Action::Drop(DropReason::Truncated));
    };
    match [eth[12], eth[13]] {
        [0x08, 0x00] => classify_v4(frame, cfg, routes),
        [0x86, 0xdd] => classify_v6(frame, cfg, routes),
        [0x81, 0x00] | [0x88, 0xa8] => Err(Action::Drop(DropReason::VlanTagged)),
        _ => Err(Action::Drop(DropReason::NotIpv4OrIpv6)),
    }
}

#[inline(always)]
fn classify_v4<'r>(
    frame: &mut Frame<'_>,
    cfg: &Config,
    routes: &'r Routes,
) -> Result<Inner<'r>, Action> {
    let data = frame.data();
    let Some(h) = data.first_chunk::<34>() else {
        return Err(Action::Drop(DropReason::Truncated));
    };
    let ihl = usize::from(h[14] & 0x0f) * 4;
    if h[14] >> 4 != 4 || ihl < 20 {
        return Err(Action::Drop(DropReason::BadIpHeader));
    }
    let ip_len = usize::from(be16([h[16], h[17]]));
    if ip_len < ihl || ip_len > data.len() - 14 {
        return Err(Action::Drop(DropReason::Truncated));
    }
    if h[22] == 0 {
        return Err(Action::Drop(DropReason::TtlExpired));
    }
    let dst = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
    let Some(next_hop) = routes.lookup_v4(dst) else {
        return Err(Action::Drop(DropReason::NoRoute));
    };
    if ip_len > usize::from(cfg.overlay_mtu) {
        if h[20] & 0x40 == 0 {
            return Err(Action::Drop(DropReason::TooBigDfClear));
        }
        return Err(icmp::frag_needed_v4(frame, ihl, ip_len, cfg.overlay_mtu));
    }
    let proto = h[23];
    // Ports only when this is not a fragment: later fragments carry none, and all pieces of one
    // packet must take one path.
    let unfragmented = (h[20] & 0x3f) | h[21] == 0;
    let ports = match data.get(14 + ihl..18 + ihl) {
        Some(&[a, b, c, d]) if unfragmented && flow::has_ports(proto) => {
            u32::from_ne_bytes([a, b, c, d])
        }
        _ => 0,
    };
    let src = u32::from_ne_bytes([h[26], h[27], h[28], h[29]]);
    let hash = flow::hash_v4(src, dst, proto, ports);
    // The outer header has DF clear, so its ID should differ between packets of a flow: reuse the
    // inner ID (senders vary it), spread across flows by the hash. No per-worker counter needed.
    let id = be16([h[18], h[19]]) ^ (hash >> 16) as u16;
    Ok(Inner { next_hop, len: 14 + ip_len, hash, id })
}

#[inline(always)]
fn classify_v6<'r>(
    frame: &mut Frame<'_>,
    cfg: &Config,
    routes: &'r Routes,
) -> Result<Inner<'r>, Action> {
    let data = frame.data();
    let Some(h) = data.first_chunk::<54>() else {
        return Err(Action::Drop(DropReason::Truncated));
    };
    if h[14] >> 4 != 6 {
        return Err(Action::Drop(DropReason::BadIpHeader));
    }
    let ip_len = 40 + usize::from(be16([h[18], h[19]]));
    if ip_len > data.len() - 14 {
        return Err(Action::Drop(DropReason::Truncated));
    }
    if h[21] == 0 {
        return Err(Action::Drop(DropReason::TtlExpired));
    }
    let mut dst_b = [0u8; 16];
    dst_b.copy_from_slice(&h[38..54]);
    let dst = u128::from_be_bytes(dst_b);
    let Some(next_hop) = routes.lookup_v6(dst) else {
        return Err(Action::Drop(DropReason::NoRoute));
    };
    if ip_len > usize::from(cfg.overlay_mtu) {
        return Err(icmp::packet_too_big_v6(frame, ip_len, cfg.overlay_mtu));
    }
    let mut src_b = [0u8; 16];
    src_b.copy_from_slice(&h[22..38]);
    let proto = h[20];
    // Ports and the next four L4 bytes (TCP sequence number, UDP length and checksum) when the
    // transport header follows directly; extension headers are not walked.
    let (ports, more) = match data.get(54..62) {
        Some(&[a, b, c, d, e, f, g, i]) if flow::has_ports(proto) => {
            (u32::from_ne_bytes([a, b, c, d]), u32::from_ne_bytes([e, f, g, i]))
        }
        _ => (0, 0),
    };
    let hash = flow::hash_v6(u128::from_ne_bytes(src_b), dst, proto, ports);
    // IPv6 has no ID to reuse; bytes that vary per packet stand in for it (see classify_v4).
    let id = ((hash >> 16) ^ more ^ (more >> 16)) as u16;
    Ok(Inner { next_hop, len: 14 + ip_len, hash, id })
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
///   source, to be sent back out where the frame came from (`linen.1x`).
/// - [`Action::Drop`]: the frame is unchanged.
///
/// The inner frame is carried unchanged (MACs, TTL, checksums); Ethernet padding after the IP
/// packet is removed.
#[inline]
pub fn encap(frame: &mut Frame<'_>, cfg: &Config, routes: &Routes) -> Action {
    if frame.headroom() < OUTER_V4_LEN {
        return Action::Drop(DropReason::NoHeadroom);
    }
    let inner = match classify(frame, cfg, routes) {
        Ok(inner) => inner,
        Err(action) => return action,
    };
    let nh = inner.next_hop;
    let sport = flow::source_port(inner.hash, cfg.source_port_min, cfg.source_port_max);
    let (buf, start, _) = frame.raw_mut();
    let new_start = start - OUTER_V4_LEN;
    let Some((hdr, payload)) = buf
        .get_mut(new_start..start + inner.len)
        .and_then(|b| b.split_first_chunk_mut::<OUTER_V4_LEN>())
    else {
        return Action::Drop(DropReason::Truncated);
    };
    *hdr = *nh.template();
    let ip_len = (OUTER_V4_LEN - 14 + inner.len) as u16;
    let udp_len = (OUTER_V4_LEN - 34 + inner.len) as u16;
    hdr[v4::IP_TOTAL_LEN..v4::IP_TOTAL_LEN + 2].copy_from_slice(&ip_len.to_be_bytes());
    hdr[v4::IP_ID..v4::IP_ID + 2].copy_from_slice(&inner.id.to_be_bytes());
    let ip_csum = csum::finish(nh.ip_sum() + u32::from(ip_len) + u32::from(inner.id));
    hdr[v4::IP_CHECKSUM..v4::IP_CHECKSUM + 2].copy_from_slice(&ip_csum.to_be_bytes());
    hdr[v4::UDP_SRC_PORT..v4::UDP_SRC_PORT + 2].copy_from_slice(&sport.to_be_bytes());
    hdr[v4::UDP_LEN..v4::UDP_LEN + 2].copy_from_slice(&udp_len.to_be_bytes());
    if cfg.udp_checksum {
        // Pseudo-header length and UDP length are the same number, counted twice.
        let s = nh.udp_sum() + 2 * u32::from(udp_len) + u32::from(sport) + csum::sum(payload);
        let c = match csum::finish(s) {
            0 => 0xffff, // zero means "no checksum" in UDP
            c => c,
        };
        hdr[v4::UDP_CHECKSUM..v4::UDP_CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
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
    hdr.copy_from_slice(&nh.template()[v4::VXLAN..OUTER_V4_LEN]);
    frame.set_bounds(new_start, VXLAN_LEN + inner.len);
    Action::Transmit(Egress::Udp {
        remote: SocketAddrV4::new(nh.remote_vtep(), cfg.port),
        source_port: flow::source_port(inner.hash, cfg.source_port_min, cfg.source_port_max),
    })
}
