//! ICMP "fragmentation needed" (IPv4) and ICMPv6 "packet too big" errors, written in place over
//! the frame that was too big, to be sent back where it came from (`linen.1`, so the host
//! stack learns the path MTU).
//!
//! The reply is an Ethernet frame with the original MACs swapped, from the original destination
//! address to the original source. Using the original destination as the source keeps the reply
//! routable back through `linen.1` (it passes strict reverse-path filtering, which a local
//! address would not) without per-route state; the host stack applies the MTU to the quoted
//! packet's destination whatever the source. The quote is as much of the original packet as fits
//! in 576 bytes (IPv4, RFC 1812 §4.3.2.3) or 1280 bytes (IPv6, RFC 4443 §2.4).
//!
//! No error is sent about an ICMP error, a non-initial IPv4 fragment, or a packet from or to an
//! address that cannot be answered (unspecified, broadcast, multicast): RFC 1122 §3.2.2 and
//! RFC 4443 §2.4(e). Those frames are dropped as [`DropReason::TooBigNoIcmp`].

use std::net::Ipv4Addr;

use super::{Action, DropReason, Frame};
use crate::wire::{
    ethernet, icmpv4, icmpv6, ipv4, ipv6, EtherType, EthernetFrame, EthernetRepr, Icmpv4Message,
    Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet,
    Ipv6Repr, Vlan,
};

/// IPv4 errors carry at most this many bytes of IP datagram (RFC 1812 §4.3.2.3).
const V4_MAX_IP_LEN: usize = 576;
/// IPv6 errors never exceed the minimum IPv6 MTU (RFC 4443 §2.4(c)).
const V6_MAX_IP_LEN: usize = 1280;
/// Ethernet + IPv4 + ICMP header in front of the quote.
const V4_HDRS: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + icmpv4::HEADER_LEN;
/// Ethernet + IPv6 + ICMPv6 header in front of the quote.
const V6_HDRS: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + icmpv6::HEADER_LEN;
/// DSCP of generated errors: CS6, internetwork control (TOS 0xc0), as Linux sends them.
const REPLY_DSCP: u8 = 0x30;
/// Hop limit / TTL of generated errors.
const REPLY_TTL: u8 = 64;

/// Finds room for `hdrs` bytes of headers in front of a quote of `quote_len` bytes of the
/// original IP packet (which sits at `start + 14`): borrow headroom when there is enough (then the
/// quote does not move), else shift the quote back. Returns the reply's start, or `None` if the
/// buffer is too small either way.
fn place(buf: &mut [u8], start: usize, hdrs: usize, quote_len: usize) -> Option<usize> {
    let grow = hdrs - 14;
    if let Some(new_start) = start.checked_sub(grow) {
        return Some(new_start);
    }
    let end = start.checked_add(hdrs)?.checked_add(quote_len)?;
    if end > buf.len() {
        return None;
    }
    buf.copy_within(start + 14..start + 14 + quote_len, start + hdrs);
    Some(start)
}

/// Replaces the IPv4 frame in `frame` (Ethernet header and a complete IPv4 header already
/// checked, IP total length `ip_len` within the frame) by an ICMP fragmentation-needed error
/// announcing `mtu`.
pub(crate) fn frag_needed_v4(frame: &mut Frame<'_>, ihl: usize, ip_len: usize, mtu: u16) -> Action {
    let (buf, start, len) = frame.raw_mut();
    let Some(orig) = buf.get(start..start + len) else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let Some(h) = orig.first_chunk::<{ ethernet::HEADER_LEN + ipv4::HEADER_LEN }>() else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let eth = EthernetFrame::new_unchecked(&h[..ethernet::HEADER_LEN]);
    let ip = Ipv4Packet::new_unchecked(&h[ethernet::HEADER_LEN..]);
    let unanswerable = |a: Ipv4Addr| a.is_unspecified() || a.is_loopback() || a.octets()[0] >= 224;
    let (orig_src, orig_dst) = (ip.src_addr(), ip.dst_addr());
    if ip.frag_offset() != 0 || unanswerable(orig_src) || unanswerable(orig_dst) {
        return Action::Drop(DropReason::TooBigNoIcmp);
    }
    if ip.protocol() == IpProtocol::Icmp {
        // Never an error about an error: only echo, timestamp, information and address-mask
        // messages (types 0, 8, 13-18) may be answered.
        let msg_type = orig.get(ethernet::HEADER_LEN + ihl);
        let answerable = msg_type.map(|&t| matches!(t, 0 | 8 | 13..=18));
        if answerable != Some(true) {
            return Action::Drop(DropReason::TooBigNoIcmp);
        }
    }
    let eth = EthernetRepr {
        src_addr: eth.dst_addr(),
        dst_addr: eth.src_addr(),
        vlan: Vlan::None,
        ethertype: EtherType::Ipv4,
    };
    let quote_len = ip_len.min(V4_MAX_IP_LEN - ipv4::HEADER_LEN - icmpv4::HEADER_LEN);
    let Some(new_start) = place(buf, start, V4_HDRS, quote_len) else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let Some(out) = buf.get_mut(new_start..new_start + V4_HDRS + quote_len) else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let (l2, rest) = out.split_at_mut(ethernet::HEADER_LEN);
    let (l3, icmp) = rest.split_at_mut(ipv4::HEADER_LEN);
    eth.emit(&mut EthernetFrame::new_unchecked(l2));
    Ipv4Repr {
        src_addr: orig_dst,
        dst_addr: orig_src,
        protocol: IpProtocol::Icmp,
        payload_len: icmp.len(),
        ttl: REPLY_TTL,
        ident: 0,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
        dscp: REPLY_DSCP,
        ecn: 0,
    }
    .emit(&mut Ipv4Packet::new_unchecked(l3));
    let mut icmp = Icmpv4Packet::new_unchecked(icmp);
    icmp.set_msg_type(Icmpv4Message::DstUnreachable);
    icmp.set_msg_code(icmpv4::CODE_FRAG_NEEDED);
    icmp.set_next_hop_mtu(mtu);
    icmp.fill_checksum();
    frame.set_bounds(new_start, V4_HDRS + quote_len);
    Action::Reply
}

/// Replaces the IPv6 frame in `frame` (Ethernet header and IPv6 header already checked, packet
/// length `ip_len` within the frame) by an ICMPv6 packet-too-big error announcing `mtu`.
pub(crate) fn packet_too_big_v6(frame: &mut Frame<'_>, ip_len: usize, mtu: u16) -> Action {
    let (buf, start, len) = frame.raw_mut();
    let Some(orig) = buf.get(start..start + len) else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let Some(h) = orig.first_chunk::<{ ethernet::HEADER_LEN + ipv6::HEADER_LEN }>() else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let eth = EthernetFrame::new_unchecked(&h[..ethernet::HEADER_LEN]);
    let ip = Ipv6Packet::new_unchecked(&h[ethernet::HEADER_LEN..]);
    let (orig_src, orig_dst) = (ip.src_addr(), ip.dst_addr());
    // Unspecified or multicast source, or a multicast destination (which cannot be our source).
    if orig_src.is_unspecified() || orig_src.is_multicast() || orig_dst.is_multicast() {
        return Action::Drop(DropReason::TooBigNoIcmp);
    }
    if ip.next_header() == IpProtocol::Icmpv6 {
        // Informational messages (types 128 and up) only: never an error about an error.
        let informational = orig.get(h.len()).map(|&msg_type| msg_type >= 128);
        if informational != Some(true) {
            return Action::Drop(DropReason::TooBigNoIcmp);
        }
    }
    let eth = EthernetRepr {
        src_addr: eth.dst_addr(),
        dst_addr: eth.src_addr(),
        vlan: Vlan::None,
        ethertype: EtherType::Ipv6,
    };
    let quote_len = ip_len.min(V6_MAX_IP_LEN - ipv6::HEADER_LEN - icmpv6::HEADER_LEN);
    let Some(new_start) = place(buf, start, V6_HDRS, quote_len) else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let Some(out) = buf.get_mut(new_start..new_start + V6_HDRS + quote_len) else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let (l2, rest) = out.split_at_mut(ethernet::HEADER_LEN);
    let (l3, icmp) = rest.split_at_mut(ipv6::HEADER_LEN);
    eth.emit(&mut EthernetFrame::new_unchecked(l2));
    Ipv6Repr {
        src_addr: orig_dst,
        dst_addr: orig_src,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.len(),
        hop_limit: REPLY_TTL,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut Ipv6Packet::new_unchecked(l3));
    let mut icmp = Icmpv6Packet::new_unchecked(icmp);
    icmp.set_msg_type(Icmpv6Message::PacketTooBig);
    icmp.set_msg_code(0);
    icmp.set_mtu(u32::from(mtu));
    icmp.fill_checksum(orig_dst, orig_src);
    frame.set_bounds(new_start, V6_HDRS + quote_len);
    Action::Reply
}
