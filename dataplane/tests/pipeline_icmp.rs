//! ICMP fragmentation-needed and ICMPv6 packet-too-big errors that encap writes in place for
//! inner packets over the overlay MTU: checked byte by byte and parsed back with smoltcp.

use std::net::{Ipv4Addr, Ipv6Addr};

use linen_dataplane::pipeline::{
    encap, encap_udp_payload, Action, Config, DropReason, Frame, NextHop, Peer, Routes,
    RoutesBuilder,
};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv4DstUnreachable, Icmpv4Message, Icmpv4Packet, Icmpv4Repr,
    Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv6Packet,
};

const LINEN1_MAC: [u8; 6] = [0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8];
const REMOTE_VTEP_MAC: [u8; 6] = [0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c];
const SRC4: [u8; 4] = [10, 244, 1, 2];
const DST4: [u8; 4] = [10, 244, 2, 2];
const SRC6: &str = "fd00:1::2";
const DST6: &str = "fd00:2::2";

fn setup(mtu: u16) -> (Config, Routes) {
    let mut cfg = Config::new(
        Ipv4Addr::new(192, 168, 77, 1),
        [0x92, 0x14, 0x14, 0x17, 0xdb, 0xd3],
        LINEN1_MAC,
    );
    cfg.overlay_mtu = mtu;
    let peer = Peer {
        vtep: Ipv4Addr::new(192, 168, 77, 2),
        vtep_mac: REMOTE_VTEP_MAC,
        underlay_mac: Some([0xe6, 0x37, 0x6c, 0xed, 0x27, 0x39]),
        ifindex: 3,
    };
    let mut b = RoutesBuilder::new();
    b.insert("10.244.2.0/24".parse().unwrap(), NextHop::new(&cfg, &peer));
    b.insert("fd00:2::/64".parse().unwrap(), NextHop::new(&cfg, &peer));
    (cfg, b.build())
}

fn ethernet(ethertype: [u8; 2], ip: &[u8]) -> Vec<u8> {
    let mut f = REMOTE_VTEP_MAC.to_vec();
    f.extend_from_slice(&LINEN1_MAC);
    f.extend_from_slice(&ethertype);
    f.extend_from_slice(ip);
    f
}

/// An IPv4 packet of `total` bytes: protocol `proto`, flags/offset word `frag`, a patterned
/// payload whose first byte is `first` (the ICMP type for ICMP).
fn ipv4(total: usize, proto: u8, frag: u16, first: u8) -> Vec<u8> {
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    p[8] = 63;
    p[9] = proto;
    p[12..16].copy_from_slice(&SRC4);
    p[16..20].copy_from_slice(&DST4);
    let c = !ones_sum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    for (i, b) in p[20..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p[20] = first;
    p
}

/// An IPv6 packet with `payload` bytes after the header, next header `nh`, first payload byte
/// `first`.
fn ipv6(payload: usize, nh: u8, first: u8, src: &str) -> Vec<u8> {
    let mut p = vec![0u8; 40 + payload];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload as u16).to_be_bytes());
    p[6] = nh;
    p[7] = 63;
    p[8..24].copy_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
    p[24..40].copy_from_slice(&DST6.parse::<Ipv6Addr>().unwrap().octets());
    for (i, b) in p[40..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    p[40] = first;
    p
}

/// Ones'-complement sum of big-endian words (the textbook definition).
fn ones_sum(b: &[u8]) -> u16 {
    let mut s: u32 =
        b.chunks(2).map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Runs `encap` (or the UDP variant) on `frame` with `headroom` bytes in front and 2 KiB behind.
fn run(
    frame: &[u8],
    headroom: usize,
    cfg: &Config,
    routes: &Routes,
    udp: bool,
) -> (Action, Vec<u8>) {
    let mut buf = vec![0xee; headroom];
    buf.extend_from_slice(frame);
    buf.resize(buf.len() + 2048, 0xee);
    let mut f = Frame::new(&mut buf, headroom, frame.len()).unwrap();
    let action =
        if udp { encap_udp_payload(&mut f, cfg, routes) } else { encap(&mut f, cfg, routes) };
    (action, f.data().to_vec())
}

/// Checks an ICMP fragmentation-needed reply to `orig` (an Ethernet frame) announcing `mtu`.
fn check_frag_needed(reply: &[u8], orig: &[u8], mtu: u16) {
    let eth = EthernetFrame::new_checked(reply).unwrap();
    assert_eq!(eth.dst_addr().as_bytes(), &orig[6..12], "back to the sender's MAC");
    assert_eq!(eth.src_addr().as_bytes(), &orig[..6]);
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum(), "IPv4 header checksum");
    assert_eq!(ip.src_addr().octets(), DST4);
    assert_eq!(ip.dst_addr().octets(), SRC4);
    assert_eq!(ip.next_header(), IpProtocol::Icmp);
    assert_eq!(ip.hop_limit(), 64);
    let orig_ip = &orig[14..];
    let quote_len = orig_ip.len().min(576 - 28);
    assert_eq!(usize::from(ip.total_len()), 28 + quote_len);
    assert_eq!(reply.len(), 14 + 28 + quote_len);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(), "ICMP checksum");
    assert_eq!(icmp.msg_type(), Icmpv4Message::DstUnreachable);
    assert_eq!(icmp.msg_code(), 4);
    assert_eq!(&ip.payload()[4..6], &[0, 0], "unused");
    assert_eq!(u16::from_be_bytes([ip.payload()[6], ip.payload()[7]]), mtu, "next-hop MTU");
    assert_eq!(&ip.payload()[8..], &orig_ip[..quote_len], "quote");
}

#[test]
fn ipv4_df_over_mtu_gets_frag_needed() {
    let (cfg, routes) = setup(1450);
    let orig = ethernet([0x08, 0x00], &ipv4(1500, 6, 0x4000, 0));
    for headroom in [50, 256] {
        let (action, reply) = run(&orig, headroom, &cfg, &routes, false);
        assert_eq!(action, Action::Reply, "headroom {headroom}");
        check_frag_needed(&reply, &orig, 1450);
    }
    // One byte less fits.
    let fits = ethernet([0x08, 0x00], &ipv4(1450, 6, 0x4000, 0));
    assert!(matches!(run(&fits, 256, &cfg, &routes, false).0, Action::Transmit(_)));
}

#[test]
fn udp_datapath_reply_with_little_headroom_shifts_the_quote() {
    let (cfg, routes) = setup(1450);
    let orig = ethernet([0x08, 0x00], &ipv4(1500, 17, 0x4000, 0));
    let (action, reply) = run(&orig, 8, &cfg, &routes, true);
    assert_eq!(action, Action::Reply);
    check_frag_needed(&reply, &orig, 1450);
    let orig6 = ethernet([0x86, 0xdd], &ipv6(1500, 17, 0, SRC6));
    let (action, reply) = run(&orig6, 8, &cfg, &routes, true);
    assert_eq!(action, Action::Reply);
    check_packet_too_big(&reply, &orig6, 1450);
}

#[test]
fn whole_quote_parses_as_a_smoltcp_repr() {
    // With a small MTU the whole offending packet fits in the quote, which smoltcp's
    // `Icmpv4Repr::parse` needs (it rejects truncated quotes).
    let (cfg, routes) = setup(400);
    let orig = ethernet([0x08, 0x00], &ipv4(500, 17, 0x4000, 0));
    let (action, reply) = run(&orig, 128, &cfg, &routes, false);
    assert_eq!(action, Action::Reply);
    check_frag_needed(&reply, &orig, 400);
    let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    match Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap() {
        Icmpv4Repr::DstUnreachable { reason, header, data } => {
            assert_eq!(reason, Icmpv4DstUnreachable::FragRequired);
            assert_eq!(header.src_addr.octets(), SRC4);
            assert_eq!(header.dst_addr.octets(), DST4);
            assert_eq!(header.next_header, IpProtocol::Udp);
            assert_eq!(data, &orig[34..]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_fixtures_1400_byte_ping_against_a_smaller_mtu() {
    let frames = linen_dataplane::pcap::Pcap::read_frames(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kernel-vxlan-flannel.pcap"
    ))
    .unwrap();
    let inner = &frames[4][50..];
    assert_eq!(inner.len(), 1442);
    let (cfg, routes) = setup(1400);
    let (action, reply) = run(inner, 256, &cfg, &routes, false);
    assert_eq!(action, Action::Reply);
    let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert!(Icmpv4Packet::new_checked(ip.payload()).unwrap().verify_checksum());
    assert_eq!(u16::from_be_bytes([ip.payload()[6], ip.payload()[7]]), 1400);
}

fn check_packet_too_big(reply: &[u8], orig: &[u8], mtu: u16) {
    let eth = EthernetFrame::new_checked(reply).unwrap();
    assert_eq!(eth.dst_addr().as_bytes(), &orig[6..12]);
    assert_eq!(eth.src_addr().as_bytes(), &orig[..6]);
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv6);
    let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.src_addr(), DST6.parse::<Ipv6Addr>().unwrap());
    assert_eq!(ip.dst_addr(), SRC6.parse::<Ipv6Addr>().unwrap());
    assert_eq!(ip.next_header(), IpProtocol::Icmpv6);
    assert_eq!(ip.hop_limit(), 64);
    let orig_ip = &orig[14..];
    let quote_len = orig_ip.len().min(1280 - 48);
    assert_eq!(usize::from(ip.payload_len()), 8 + quote_len);
    assert_eq!(reply.len(), 14 + 40 + 8 + quote_len, "reply fits the IPv6 minimum MTU");
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()), "ICMPv6 checksum");
    let repr =
        Icmpv6Repr::parse(&ip.src_addr(), &ip.dst_addr(), &icmp, &ChecksumCapabilities::default())
            .unwrap();
    match repr {
        Icmpv6Repr::PktTooBig { mtu: m, header, data } => {
            assert_eq!(m, u32::from(mtu));
            assert_eq!(header.src_addr, SRC6.parse::<Ipv6Addr>().unwrap());
            assert_eq!(header.dst_addr, DST6.parse::<Ipv6Addr>().unwrap());
            assert_eq!(data, &orig_ip[40..quote_len]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ipv6_over_mtu_gets_packet_too_big() {
    let (cfg, routes) = setup(1450);
    let orig = ethernet([0x86, 0xdd], &ipv6(1500 - 40 + 1, 6, 0, SRC6));
    let (action, reply) = run(&orig, 256, &cfg, &routes, false);
    assert_eq!(action, Action::Reply);
    check_packet_too_big(&reply, &orig, 1450);
    // A short one (quote not truncated) and exactly the MTU (forwarded).
    let (cfg, routes) = setup(1280);
    let orig = ethernet([0x86, 0xdd], &ipv6(1300 - 40, 17, 0, SRC6));
    assert_eq!(run(&orig, 256, &cfg, &routes, false).0, Action::Reply);
    let fits = ethernet([0x86, 0xdd], &ipv6(1280 - 40, 17, 0, SRC6));
    assert!(matches!(run(&fits, 256, &cfg, &routes, false).0, Action::Transmit(_)));
}

#[test]
fn no_icmp_error_about_errors_fragments_or_unanswerable_sources() {
    let (cfg, routes) = setup(1450);
    let no = Action::Drop(DropReason::TooBigNoIcmp);
    // An ICMP destination-unreachable that is itself too big.
    let e = ethernet([0x08, 0x00], &ipv4(1500, 1, 0x4000, 3));
    assert_eq!(run(&e, 256, &cfg, &routes, false).0, no);
    // But an echo request is answered.
    let e = ethernet([0x08, 0x00], &ipv4(1500, 1, 0x4000, 8));
    assert_eq!(run(&e, 256, &cfg, &routes, false).0, Action::Reply);
    // A non-initial fragment (DF set, offset 8).
    let e = ethernet([0x08, 0x00], &ipv4(1500, 17, 0x4001, 0));
    assert_eq!(run(&e, 256, &cfg, &routes, false).0, no);
    // A multicast source.
    let mut p = ipv4(1500, 17, 0x4000, 0);
    p[12] = 224;
    assert_eq!(run(&ethernet([0x08, 0x00], &p), 256, &cfg, &routes, false).0, no);
    // ICMPv6 errors (type < 128) are not answered; echo requests (128) are.
    let e = ethernet([0x86, 0xdd], &ipv6(1500, 58, 1, SRC6));
    assert_eq!(run(&e, 256, &cfg, &routes, false).0, no);
    let e = ethernet([0x86, 0xdd], &ipv6(1500, 58, 128, SRC6));
    assert_eq!(run(&e, 256, &cfg, &routes, false).0, Action::Reply);
    // Unspecified IPv6 source.
    let e = ethernet([0x86, 0xdd], &ipv6(1500, 17, 0, "::"));
    assert_eq!(run(&e, 256, &cfg, &routes, false).0, no);
}

#[test]
fn the_udp_datapath_without_room_for_a_reply_drops() {
    // 8 bytes of headroom and no tailroom: the reply (42 bytes of headers + quote) cannot be
    // built when the frame itself is shorter than the reply would be.
    let (cfg, routes) = setup(100);
    let orig = ethernet([0x08, 0x00], &ipv4(120, 17, 0x4000, 0));
    let mut buf = vec![0u8; 8];
    buf.extend_from_slice(&orig);
    let len = orig.len();
    let mut f = Frame::new(&mut buf, 8, len).unwrap();
    assert_eq!(encap_udp_payload(&mut f, &cfg, &routes), Action::Drop(DropReason::TooBigNoIcmp));
}
