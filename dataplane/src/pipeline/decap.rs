//! Decapsulation: a VXLAN frame from the underlay (or a UDP payload from the fallback socket) →
//! the inner Ethernet frame for the overlay device `linen.1`, after every check listed in
//! docs/pipeline.md (Decap).

use std::net::IpAddr;

use super::nexthop::{outer, OUTER_V4_LEN, VXLAN_LEN};
use super::{Action, Config, DropReason, Egress, Frame, Routes};
use crate::wire::{
    ethernet, ipv4, ipv6, udp, vxlan, EtherType, EthernetFrame, IpProtocol, Ipv4Packet, UdpPacket,
    VxlanPacket,
};

/// The shortest inner frame decap passes on: Ethernet and an IPv4 header.
const MIN_INNER_V4: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
/// The shortest inner IPv6 frame decap passes on: Ethernet and the IPv6 fixed header.
const MIN_INNER_V6: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN;

/// The VXLAN checks shared by [`decap`] and [`decap_udp_payload`]: `payload` is exactly the UDP
/// payload (VXLAN header + inner frame) and `src` the outer source address. Returns the inner
/// frame's length.
///
/// Order: flags, VNI, source VTEP, then the inner frame (length, destination MAC, EtherType).
#[inline(always)]
fn check_vxlan(
    payload: &[u8],
    src: [u8; 4],
    cfg: &Config,
    routes: &Routes,
) -> Result<usize, DropReason> {
    let Ok(vxlan) = VxlanPacket::new_checked(payload) else {
        return Err(DropReason::Truncated);
    };
    // RFC 7348: flags are exactly the I bit, and the 24 reserved bits after the flags and the 8
    // after the VNI are zero. Linux rejects anything else too (unless configured for an extension
    // such as GBP, which linen is not).
    if vxlan.flags() != vxlan::FLAG_I || !vxlan.reserved_is_zero() {
        return Err(DropReason::BadVxlanFlags);
    }
    if vxlan.vni().get() != cfg.vni {
        return Err(DropReason::WrongVni);
    }
    if !routes.peers().contains_octets(src) {
        return Err(DropReason::UnknownVtep);
    }
    let inner = vxlan.payload();
    let Some(eth) = inner.first_chunk::<{ ethernet::HEADER_LEN }>() else {
        return Err(DropReason::InnerTruncated);
    };
    let eth = EthernetFrame::new_unchecked(eth);
    let dst = eth.dst_addr();
    if dst.octets() != cfg.vtep_mac {
        return Err(if dst.is_multicast() {
            DropReason::InnerMulticast
        } else {
            DropReason::InnerMacMismatch
        });
    }
    let min_len = match eth.ethertype() {
        EtherType::Ipv4 => MIN_INNER_V4,
        EtherType::Ipv6 => MIN_INNER_V6,
        _ => return Err(DropReason::InnerNotIpv4OrIpv6),
    };
    if inner.len() < min_len {
        return Err(DropReason::InnerTruncated);
    }
    Ok(inner.len())
}

/// Decapsulates the VXLAN frame in `frame` (a whole Ethernet frame from the underlay).
///
/// Checks, in order, each failure its own [`DropReason`]: Ethernet + IPv4 (`not_ipv4_or_ipv6`,
/// `vlan_tagged`, `bad_ip_header`; an IPv6 outer header is `not_local_vtep`, as linen has no IPv6
/// VTEP yet), outer destination is the local VTEP (`not_local_vtep`), protocol UDP (`not_udp`),
/// not a fragment (`outer_fragment`), lengths consistent (`truncated`), UDP destination port
/// (`wrong_port`), VXLAN flags and reserved bits (`bad_vxlan_flags`), VNI (`wrong_vni`), outer
/// source is a known peer (`unknown_vtep`), inner destination MAC is the local VtepMAC
/// (`inner_mac_mismatch`, or `inner_multicast` for broadcast/multicast), inner frame IPv4/IPv6
/// and long enough (`inner_not_ipv4_or_ipv6`, `inner_truncated`).
///
/// The outer UDP checksum is not verified (zero and non-zero both accepted: the inner packet
/// carries its own checksums, which are never verified here either), nor is the outer IPv4 header
/// checksum (the Ethernet FCS covers the wire).
///
/// On success the action is [`Action::Transmit`]`(`[`Egress::Overlay`]`)` and the frame is the
/// inner Ethernet frame (start moved forward past the outer headers, length from the UDP length,
/// so outer padding is dropped). On a drop the frame is unchanged.
#[inline(always)]
pub fn decap(frame: &mut Frame<'_>, cfg: &Config, routes: &Routes) -> Action {
    if let Some(inner_len) = decap_fast(frame.data(), cfg, routes) {
        let start = frame.start() + FAST_INNER_OFFSET;
        frame.set_valid_bounds(start, inner_len);
        return Action::Transmit(Egress::Overlay);
    }
    match decap_general(frame.data(), cfg, routes) {
        Ok((offset, len)) => {
            let start = frame.start() + offset;
            frame.set_valid_bounds(start, len);
            Action::Transmit(Egress::Overlay)
        }
        Err(reason) => Action::Drop(reason),
    }
}

/// Offset of the inner frame behind an outer IPv4 header without options.
const FAST_INNER_OFFSET: usize = OUTER_V4_LEN;

/// [`decap`]'s common case in few instructions: an outer IPv4 header without options and a frame
/// that passes every check. Returns the inner frame's length, or `None` for anything else, which
/// [`decap_general`] then decides (it repeats every check, so this function only has to be right
/// about what it accepts).
///
/// The views are `new_unchecked` over constant ranges of one checked fixed-size chunk (the outer
/// headers and the inner Ethernet header), so every getter is a plain load; the lengths the
/// frame announces are checked against the frame before the inner frame is passed on.
#[inline(always)]
fn decap_fast(data: &[u8], cfg: &Config, routes: &Routes) -> Option<usize> {
    let h = data.first_chunk::<{ FAST_INNER_OFFSET + ethernet::HEADER_LEN }>()?;
    let eth = EthernetFrame::new_unchecked(&h[outer::ETH]);
    let ip = Ipv4Packet::new_unchecked(&h[outer::IP]);
    let udp = UdpPacket::new_unchecked(&h[outer::UDP]);
    let vxlan = VxlanPacket::new_unchecked(&h[outer::VXLAN]);
    let inner = EthernetFrame::new_unchecked(&h[FAST_INNER_OFFSET..]);
    if eth.ethertype() != EtherType::Ipv4
        || ip.version() != 4
        || ip.header_len() != ipv4::HEADER_LEN
        || ip.dst_addr() != cfg.local_vtep
        || ip.protocol_raw() != u8::from(IpProtocol::Udp)
        || ip.is_fragment()
    {
        return None;
    }
    if udp.dst_port() != cfg.port || !vxlan.matches(cfg.vni) {
        return None;
    }
    // Lengths: UDP within IP within the frame, and room for an inner IPv4 header at least.
    let ip_len = usize::from(ip.total_len());
    let udp_len = usize::from(udp.len());
    let outer_udp = udp::HEADER_LEN + VXLAN_LEN;
    if outer::IP.start + ip_len > data.len()
        || udp_len + ipv4::HEADER_LEN > ip_len
        || udp_len < outer_udp + MIN_INNER_V4
    {
        return None;
    }
    let inner_len = udp_len - outer_udp;
    if !routes.peers().contains_octets(ip.src_addr().octets())
        || inner.dst_addr().octets() != cfg.vtep_mac
    {
        return None;
    }
    match inner.ethertype() {
        EtherType::Ipv4 => Some(inner_len),
        EtherType::Ipv6 if inner_len >= MIN_INNER_V6 => Some(inner_len),
        _ => None,
    }
}

/// [`decap`] for every frame: all checks, exact drop reasons. Returns the inner frame's offset
/// and length.
#[cold]
#[inline(never)]
fn decap_general(data: &[u8], cfg: &Config, routes: &Routes) -> Result<(usize, usize), DropReason> {
    decap_inner(data, cfg, routes)
}

/// [`decap`] on the frame bytes: returns the inner frame's offset and length.
#[inline(always)]
fn decap_inner(data: &[u8], cfg: &Config, routes: &Routes) -> Result<(usize, usize), DropReason> {
    let Some(h) = data.first_chunk::<{ outer::IP.end }>() else {
        return Err(DropReason::Truncated);
    };
    match EthernetFrame::new_unchecked(&h[outer::ETH]).ethertype() {
        EtherType::Ipv4 => {}
        EtherType::Ipv6 => return Err(DropReason::NotLocalVtep),
        EtherType::Vlan | EtherType::QinQ => return Err(DropReason::VlanTagged),
        _ => return Err(DropReason::NotIpv4OrIpv6),
    }
    // The fixed header's fields first, then the lengths it announces.
    let fixed = Ipv4Packet::new_unchecked(&h[outer::IP]);
    if fixed.version() != 4 || fixed.header_len() < ipv4::HEADER_LEN {
        return Err(DropReason::BadIpHeader);
    }
    if fixed.dst_addr() != cfg.local_vtep {
        return Err(DropReason::NotLocalVtep);
    }
    if fixed.protocol() != IpProtocol::Udp {
        return Err(DropReason::NotUdp);
    }
    if fixed.is_fragment() {
        return Err(DropReason::OuterFragment);
    }
    let Ok(ip) = Ipv4Packet::new_checked(&data[outer::IP.start..]) else {
        return Err(DropReason::Truncated);
    };
    let datagram = ip.payload();
    let Some(udp_header) = datagram.first_chunk::<{ udp::HEADER_LEN }>() else {
        return Err(DropReason::Truncated);
    };
    if UdpPacket::new_unchecked(udp_header).dst_port() != cfg.port {
        return Err(DropReason::WrongPort);
    }
    let Ok(udp) = UdpPacket::new_checked(datagram) else {
        return Err(DropReason::Truncated);
    };
    let inner_len = check_vxlan(udp.payload(), ip.src_addr().octets(), cfg, routes)?;
    Ok((outer::IP.start + ip.header_len() + udp::HEADER_LEN + VXLAN_LEN, inner_len))
}

/// Decapsulation for the TAP/UDP fallback datapath: `frame` holds a UDP payload received on the
/// VXLAN port, `src` and `dst` are the outer source and destination addresses (from `recvfrom`
/// and `IP_PKTINFO`; pass the local VTEP address as `dst` if the socket is bound to it).
///
/// Runs the same checks as [`decap`] from the outer destination on (`not_local_vtep`, then the
/// VXLAN header, source VTEP and inner frame; the port is the socket's). An IPv6 `src` is
/// `unknown_vtep`, an IPv6 `dst` `not_local_vtep`. On success the action is
/// [`Action::Transmit`]`(`[`Egress::Overlay`]`)` and the frame is the inner Ethernet frame.
#[inline]
pub fn decap_udp_payload(
    frame: &mut Frame<'_>,
    src: IpAddr,
    dst: IpAddr,
    cfg: &Config,
    routes: &Routes,
) -> Action {
    match dst {
        IpAddr::V4(d) if d == cfg.local_vtep => {}
        _ => return Action::Drop(DropReason::NotLocalVtep),
    }
    let IpAddr::V4(src) = src else {
        return Action::Drop(DropReason::UnknownVtep);
    };
    match check_vxlan(frame.data(), src.octets(), cfg, routes) {
        Ok(len) => {
            let start = frame.start() + VXLAN_LEN;
            frame.set_bounds(start, len);
            Action::Transmit(Egress::Overlay)
        }
        Err(reason) => Action::Drop(reason),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::pipeline::{encap, NextHop, Peer, RoutesBuilder};

    /// A valid VXLAN frame from 192.168.77.2 to 192.168.77.1 around an inner frame of `inner_len`
    /// bytes, with the receiver's config and routes.
    fn valid(inner_len: usize, v6: bool) -> (Vec<u8>, Config, &'static Routes) {
        let rx =
            Config::new(Ipv4Addr::new(192, 168, 77, 1), [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let tx =
            Config::new(Ipv4Addr::new(192, 168, 77, 2), [2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4]);
        // Both nodes' routes, built once (table builds are not cheap).
        static ROUTES: std::sync::OnceLock<(Routes, Routes)> = std::sync::OnceLock::new();
        let (tx_routes, rx_routes) = ROUTES.get_or_init(|| {
            let to_rx = Peer {
                vtep: rx.local_vtep,
                vtep_mac: rx.vtep_mac,
                underlay_mac: Some(rx.local_mac),
                ifindex: 1,
            };
            let mut b = RoutesBuilder::new();
            b.insert("0.0.0.0/0".parse().unwrap(), NextHop::new(&tx, &to_rx));
            b.insert("::/0".parse().unwrap(), NextHop::new(&tx, &to_rx));
            let mut rb = RoutesBuilder::new();
            rb.add_peer(tx.local_vtep);
            (b.build(), rb.build())
        });
        let mut inner = vec![0x11u8; inner_len];
        inner[..6].copy_from_slice(&rx.vtep_mac);
        if v6 {
            inner[12..16].copy_from_slice(&[0x86, 0xdd, 0x60, 0]);
            inner[18..20].copy_from_slice(&((inner_len - 54) as u16).to_be_bytes());
        } else {
            inner[12..16].copy_from_slice(&[0x08, 0x00, 0x45, 0]);
            inner[16..18].copy_from_slice(&((inner_len - 14) as u16).to_be_bytes());
            inner[20] = 0;
        }
        let mut buf = vec![0u8; 64];
        buf.extend_from_slice(&inner);
        let mut f = Frame::new(&mut buf, 64, inner_len).unwrap();
        assert!(matches!(encap(&mut f, &tx, tx_routes), Action::Transmit(_)));
        let outer = f.data().to_vec();
        (outer, rx, rx_routes)
    }

    proptest! {
        /// Whenever the fast path accepts, the general path accepts with the same inner frame.
        #[test]
        fn fast_path_agrees_with_the_general_path(
            inner_len in 54usize..300,
            v6 in any::<bool>(),
            flips in proptest::collection::vec((0usize..80, any::<u8>()), 0..3),
            cut in 0usize..8,
        ) {
            let (mut outer, cfg, routes) = valid(inner_len, v6);
            for (at, v) in flips {
                outer[at] = v;
            }
            outer.truncate(outer.len() - cut);
            if let Some(len) = decap_fast(&outer, &cfg, routes) {
                prop_assert_eq!(decap_inner(&outer, &cfg, routes), Ok((FAST_INNER_OFFSET, len)));
            }
        }

        #[test]
        fn unmodified_frames_take_the_fast_path(inner_len in 54usize..1400, v6 in any::<bool>()) {
            let (outer, cfg, routes) = valid(inner_len, v6);
            prop_assert_eq!(decap_fast(&outer, &cfg, routes), Some(inner_len));
        }
    }
}
