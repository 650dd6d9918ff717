//! ICMP "fragmentation needed" (IPv4) and ICMPv6 "packet too big" errors, written in place over
//! the frame that was too big, to be sent back where it came from (`linen.1x`, so the host
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

use super::{Action, DropReason, Frame};
use crate::wire::checksum::{self, add, sum};
use crate::wire::IpProtocol;

/// IPv4 errors carry at most this many bytes of IP datagram (RFC 1812 §4.3.2.3).
const V4_MAX_IP_LEN: usize = 576;
/// IPv6 errors never exceed the minimum IPv6 MTU (RFC 4443 §2.4(c)).
const V6_MAX_IP_LEN: usize = 1280;
/// Ethernet + IPv4 + ICMP header in front of the quote.
const V4_HDRS: usize = 14 + 20 + 8;
/// Ethernet + IPv6 + ICMPv6 header in front of the quote.
const V6_HDRS: usize = 14 + 40 + 8;
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
    let Some(h) = orig.first_chunk::<34>() else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let dst_mac: [u8; 6] = [h[6], h[7], h[8], h[9], h[10], h[11]];
    let src_mac: [u8; 6] = [h[0], h[1], h[2], h[3], h[4], h[5]];
    let orig_src: [u8; 4] = [h[26], h[27], h[28], h[29]];
    let orig_dst: [u8; 4] = [h[30], h[31], h[32], h[33]];
    let frag_offset = u16::from_be_bytes([h[20], h[21]]) & 0x1fff;
    let proto = h[23];
    let unanswerable = |a: [u8; 4]| a == [0; 4] || a == [255; 4] || a[0] >= 224 || a[0] == 127;
    if frag_offset != 0 || unanswerable(orig_src) || unanswerable(orig_dst) {
        return Action::Drop(DropReason::TooBigNoIcmp);
    }
    if proto == 1 {
        // Never an error about an error: only echo, timestamp and the like may be answered.
        match orig.get(14 + ihl) {
            Some(0 | 8 | 13 | 14 | 15 | 16 | 17 | 18) => {}
            _ => return Action::Drop(DropReason::TooBigNoIcmp),
        }
    }
    let quote_len = ip_len.min(V4_MAX_IP_LEN - 28);
    let Some(new_start) = place(buf, start, V4_HDRS, quote_len) else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let Some(out) = buf.get_mut(new_start..new_start + V4_HDRS + quote_len) else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let total = (28 + quote_len) as u16;
    let (hdr, quote) = out.split_at_mut(V4_HDRS);
    hdr[0..6].copy_from_slice(&dst_mac);
    hdr[6..12].copy_from_slice(&src_mac);
    hdr[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut hdr[14..34];
    ip.copy_from_slice(&[
        0x45, 0xc0, // internetwork-control precedence, as Linux sends ICMP errors
        0, 0, 0, 0, 0, 0, REPLY_TTL, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[12..16].copy_from_slice(&orig_dst);
    ip[16..20].copy_from_slice(&orig_src);
    let ip_csum = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    let icmp = &mut hdr[34..42];
    icmp.copy_from_slice(&[3, 4, 0, 0, 0, 0, 0, 0]);
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    let icmp_csum = checksum::finish(add(sum(icmp), sum(quote)));
    icmp[2..4].copy_from_slice(&icmp_csum.to_be_bytes());
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
    let Some(h) = orig.first_chunk::<54>() else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let dst_mac: [u8; 6] = [h[6], h[7], h[8], h[9], h[10], h[11]];
    let src_mac: [u8; 6] = [h[0], h[1], h[2], h[3], h[4], h[5]];
    let mut orig_src = [0u8; 16];
    orig_src.copy_from_slice(&h[22..38]);
    let mut orig_dst = [0u8; 16];
    orig_dst.copy_from_slice(&h[38..54]);
    // Unspecified or multicast source, or a multicast destination (which cannot be our source).
    if orig_src == [0; 16] || orig_src[0] == 0xff || orig_dst[0] == 0xff {
        return Action::Drop(DropReason::TooBigNoIcmp);
    }
    if h[20] == 58 && !matches!(orig.get(54), Some(t) if *t >= 128) {
        return Action::Drop(DropReason::TooBigNoIcmp);
    }
    let quote_len = ip_len.min(V6_MAX_IP_LEN - 48);
    let Some(new_start) = place(buf, start, V6_HDRS, quote_len) else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let Some(out) = buf.get_mut(new_start..new_start + V6_HDRS + quote_len) else {
        return Action::Drop(DropReason::TooBigNoIcmp);
    };
    let payload_len = (8 + quote_len) as u16;
    let (hdr, quote) = out.split_at_mut(V6_HDRS);
    hdr[0..6].copy_from_slice(&dst_mac);
    hdr[6..12].copy_from_slice(&src_mac);
    hdr[12..14].copy_from_slice(&[0x86, 0xdd]);
    let ip = &mut hdr[14..54];
    ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
    ip[6] = 58;
    ip[7] = REPLY_TTL;
    ip[8..24].copy_from_slice(&orig_dst);
    ip[24..40].copy_from_slice(&orig_src);
    let icmp = &mut hdr[54..62];
    icmp.copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
    icmp[4..8].copy_from_slice(&u32::from(mtu).to_be_bytes());
    let pseudo = checksum::pseudo_header_v6(
        orig_dst.into(),
        orig_src.into(),
        IpProtocol::Icmpv6,
        u32::from(payload_len),
    );
    let icmp_csum = checksum::finish(add(add(pseudo, sum(icmp)), sum(quote)));
    icmp[2..4].copy_from_slice(&icmp_csum.to_be_bytes());
    frame.set_bounds(new_start, V6_HDRS + quote_len);
    Action::Reply
}
