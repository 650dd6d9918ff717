//! Encapsulation: an inner Ethernet frame from `linen.1x` (or the TAP device) → a VXLAN frame
//! for the underlay.

use std::net::SocketAddrV4;

use super::nexthop::{v4, OUTER_V4_LEN, VXLAN_LEN};
use super::{flow, icmp, Action, Config, DropReason, Egress, Frame, NextHop, Routes};
use crate::wire::checksum;

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
    let id = u16::from_ne_bytes([h[18], h[19]]) ^ (hash >> 16) as u16;
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

/// [`encap`] for the common case, in as few instructions as we could: an untagged IPv4 frame
/// with a 20-byte header and at least 4 bytes of payload, TTL left, within the MTU, with 50 bytes
/// of headroom. Returns `None` for anything else without touching the buffer, and
/// [`encap_general`] then decides (it repeats every check, so this function only has to be right
/// about what it accepts). Only `no_route` is answered here, the one drop that needs the lookup.
/// On success returns the action and the frame's new start and length.
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
    let h = data.first_chunk::<38>()?;
    // EtherType IPv4, version 4 with a 20-byte header, TTL left.
    if [h[12], h[13]] != [0x08, 0x00] || h[14] != 0x45 || h[22] == 0 {
        return None;
    }
    let ip_len = usize::from(be16([h[16], h[17]]));
    // 24 <= ip_len <= len - 14 and ip_len <= MTU.
    if ip_len.wrapping_sub(24) > len - 38 || ip_len > usize::from(cfg.overlay_mtu) {
        return None;
    }
    let dst = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
    let Some(nh) = routes.lookup_v4(dst) else {
        return Some((Action::Drop(DropReason::NoRoute), start, len));
    };
    let proto = h[23];
    // Ports only for unfragmented TCP/UDP/SCTP/UDP-Lite (see `flow`), selected without a branch.
    let unfragmented = (h[20] & 0x3f) | h[21] == 0;
    let mask = flow::ports_mask(proto) & 0u32.wrapping_sub(u32::from(unfragmented));
    let ports = u32::from_ne_bytes([h[34], h[35], h[36], h[37]]) & mask;
    let src = u32::from_ne_bytes([h[26], h[27], h[28], h[29]]);
    let hash = flow::hash_v4(src, dst, proto, ports);
    let id = u16::from_ne_bytes([h[18], h[19]]) ^ (hash >> 16) as u16;
    let inner_len = 14 + ip_len;
    write_outer(hdr, nh, cfg, inner_len, hash, id);
    if cfg.udp_checksum {
        let payload = data.get(..inner_len)?;
        fill_udp_checksum(hdr, payload, nh);
    }
    let action = if nh.resolved() {
        Action::Transmit(Egress::Underlay { ifindex: nh.ifindex() })
    } else {
        Action::ToKernel
    };
    Some((action, new_start, OUTER_V4_LEN + inner_len))
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
    *hdr = *nh.template();
    let ip_len = (OUTER_V4_LEN - 14 + inner_len) as u16;
    let udp_len = (OUTER_V4_LEN - 34 + inner_len) as u16;
    let sport = flow::source_port(hash, cfg.source_port_min, cfg.source_port_max);
    // The checksum is summed in native byte order (RFC 1071 §2(B)): the template's sum was taken
    // that way, the length is added as the bytes it is stored as, and the ID needs no swap at all
    // since any value will do.
    let ip_len_ne = u16::from_ne_bytes(ip_len.to_be_bytes());
    let ip_csum = !checksum::fold32(nh.ip_sum_ne() + u32::from(ip_len_ne) + u32::from(id));
    let [l0, l1] = ip_len.to_be_bytes();
    let [i0, i1] = id.to_ne_bytes();
    hdr[v4::IP_TOTAL_LEN..v4::IP_TOTAL_LEN + 4].copy_from_slice(&[l0, l1, i0, i1]);
    hdr[v4::IP_CHECKSUM..v4::IP_CHECKSUM + 2].copy_from_slice(&ip_csum.to_ne_bytes());
    hdr[v4::UDP_SRC_PORT..v4::UDP_SRC_PORT + 2].copy_from_slice(&sport.to_be_bytes());
    hdr[v4::UDP_LEN..v4::UDP_LEN + 2].copy_from_slice(&udp_len.to_be_bytes());
}

/// Computes the outer UDP checksum over the pseudo-header, the header in `hdr` (source port and
/// length already written) and `payload` (the inner frame): what the kernel's `udpcsum` does.
#[inline(never)]
fn fill_udp_checksum(hdr: &mut [u8; OUTER_V4_LEN], payload: &[u8], nh: &NextHop) {
    let sport = be16([hdr[v4::UDP_SRC_PORT], hdr[v4::UDP_SRC_PORT + 1]]);
    let udp_len = be16([hdr[v4::UDP_LEN], hdr[v4::UDP_LEN + 1]]);
    // Pseudo-header length and UDP length are the same number, counted twice.
    let s = nh.udp_sum()
        + 2 * u32::from(udp_len)
        + u32::from(sport)
        + u32::from(checksum::sum(payload));
    let c = match checksum::finish(checksum::fold32(s)) {
        0 => 0xffff, // zero means "no checksum" in UDP
        c => c,
    };
    hdr[v4::UDP_CHECKSUM..v4::UDP_CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
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
    let Some((hdr, payload)) = buf
        .get_mut(new_start..start + inner.len)
        .and_then(|b| b.split_first_chunk_mut::<OUTER_V4_LEN>())
    else {
        return Action::Drop(DropReason::Truncated);
    };
    write_outer(hdr, nh, cfg, inner.len, inner.hash, inner.id);
    if cfg.udp_checksum {
        fill_udp_checksum(hdr, payload, nh);
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
