//! The pipeline against real frames from the kernel's VXLAN device in flannel's configuration
//! (`tests/fixtures/kernel-vxlan-flannel.pcap`, see its README): decap must accept every frame
//! and yield exactly the inner frame; encap of each inner frame must reproduce the captured outer
//! headers except UDP source port, IPv4 ID and checksums. Also every drop reason decap and encap
//! can give, and the flow-hash source port.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use linen_dataplane::pcap::Pcap;
use linen_dataplane::pipeline::{
    decap, decap_udp_payload, encap, encap_udp_payload, Action, Config, DropReason, Egress, Frame,
    NextHop, Peer, Routes, RoutesBuilder,
};
use smoltcp::wire::{IpAddress, Ipv4Packet, UdpPacket};

const FIXTURE: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kernel-vxlan-flannel.pcap");
const HEADROOM: usize = 256;

struct Node {
    cfg: Config,
    subnet: &'static str,
    ifindex: u32,
}

fn node_a() -> Node {
    Node {
        cfg: Config::new(
            Ipv4Addr::new(192, 168, 77, 1),
            [0x92, 0x14, 0x14, 0x17, 0xdb, 0xd3],
            [0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8],
        ),
        subnet: "10.244.1.0/24",
        ifindex: 11,
    }
}

fn node_b() -> Node {
    Node {
        cfg: Config::new(
            Ipv4Addr::new(192, 168, 77, 2),
            [0xe6, 0x37, 0x6c, 0xed, 0x27, 0x39],
            [0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c],
        ),
        subnet: "10.244.2.0/24",
        ifindex: 12,
    }
}

/// `me`'s route to `peer`'s subnet, with `peer` as the only known VTEP.
fn routes_to(me: &Node, peer: &Node, resolved: bool) -> Routes {
    let mut b = RoutesBuilder::new();
    let p = Peer {
        vtep: peer.cfg.local_vtep,
        vtep_mac: peer.cfg.vtep_mac,
        underlay_mac: resolved.then_some(peer.cfg.local_mac),
        ifindex: me.ifindex,
    };
    b.insert(peer.subnet.parse().unwrap(), NextHop::new(&me.cfg, &p));
    b.build()
}

fn fixture_frames() -> Vec<Vec<u8>> {
    let frames = Pcap::read_frames(FIXTURE).expect("fixture pcap readable");
    assert_eq!(frames.len(), 18, "the fixture README promises 18 frames");
    frames
}

/// A buffer with `HEADROOM` bytes in front of `packet` and some spare room behind.
fn buffer_with(packet: &[u8]) -> Vec<u8> {
    let mut buf = vec![0xa5; HEADROOM];
    buf.extend_from_slice(packet);
    buf.extend_from_slice(&[0x5a; 64]);
    buf
}

fn run(packet: &[u8], f: impl FnOnce(&mut Frame<'_>) -> Action) -> (Action, Vec<u8>) {
    let mut buf = buffer_with(packet);
    let mut frame = Frame::new(&mut buf, HEADROOM, packet.len()).unwrap();
    let action = f(&mut frame);
    (action, frame.data().to_vec())
}

/// (receiver, sender) for a captured frame, by outer destination address.
fn direction(frame: &[u8]) -> (Node, Node) {
    match frame[30..34] {
        [192, 168, 77, 2] => (node_b(), node_a()),
        [192, 168, 77, 1] => (node_a(), node_b()),
        _ => panic!("fixture frame to an unexpected address"),
    }
}

fn outer_ipv4_checksum_ok(frame: &[u8]) -> bool {
    Ipv4Packet::new_checked(&frame[14..]).unwrap().verify_checksum()
}

fn outer_udp_checksum_ok(frame: &[u8]) -> bool {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    let udp = UdpPacket::new_checked(ip.payload()).unwrap();
    udp.verify_checksum(&IpAddress::Ipv4(ip.src_addr()), &IpAddress::Ipv4(ip.dst_addr()))
}

#[test]
fn decap_accepts_every_fixture_frame_and_yields_the_inner_frame() {
    for (i, captured) in fixture_frames().iter().enumerate() {
        let (rx, tx) = direction(captured);
        let routes = routes_to(&rx, &tx, true);
        let (action, inner) = run(captured, |f| decap(f, &rx.cfg, &routes));
        assert_eq!(action, Action::Transmit(Egress::Overlay), "frame {i}");
        assert_eq!(inner, &captured[50..], "frame {i}");
    }
}

#[test]
fn decap_udp_payload_accepts_every_fixture_payload() {
    for (i, captured) in fixture_frames().iter().enumerate() {
        let (rx, tx) = direction(captured);
        let routes = routes_to(&rx, &tx, true);
        let (action, inner) = run(&captured[42..], |f| {
            decap_udp_payload(
                f,
                tx.cfg.local_vtep.into(),
                rx.cfg.local_vtep.into(),
                &rx.cfg,
                &routes,
            )
        });
        assert_eq!(action, Action::Transmit(Egress::Overlay), "frame {i}");
        assert_eq!(inner, &captured[50..], "frame {i}");
    }
}

/// Captured and encapsulated frames are equal except UDP source port, IPv4 ID and checksums.
fn assert_same_outer_headers(ours: &[u8], captured: &[u8], what: &str) {
    assert_eq!(ours.len(), captured.len(), "{what}: length");
    let mask = |b: &[u8]| {
        let mut b = b[..50].to_vec();
        for r in [18..20, 24..26, 34..36, 40..42] {
            b[r].fill(0);
        }
        b
    };
    assert_eq!(mask(ours), mask(captured), "{what}: outer headers");
    assert_eq!(&ours[50..], &captured[50..], "{what}: inner frame");
}

#[test]
fn encap_reproduces_the_kernels_outer_headers() {
    for udp_checksum in [false, true] {
        for (i, captured) in fixture_frames().iter().enumerate() {
            let (rx, mut tx) = direction(captured);
            tx.cfg.udp_checksum = udp_checksum;
            let routes = routes_to(&tx, &rx, true);
            let (action, ours) = run(&captured[50..], |f| encap(f, &tx.cfg, &routes));
            assert_eq!(
                action,
                Action::Transmit(Egress::Underlay { ifindex: tx.ifindex }),
                "frame {i}"
            );
            let what = format!("frame {i}, udpcsum {udp_checksum}");
            assert_same_outer_headers(&ours, captured, &what);
            assert!(outer_ipv4_checksum_ok(&ours), "{what}: IPv4 header checksum");
            let sport = u16::from_be_bytes([ours[34], ours[35]]);
            assert!((32768..=60999).contains(&sport), "{what}: source port {sport}");
            if udp_checksum {
                assert_ne!(&ours[40..42], &[0, 0], "{what}");
                assert!(outer_udp_checksum_ok(&ours), "{what}: UDP checksum");
                // The decap side accepts our frame too.
                let back = routes_to(&rx, &tx, true);
                let (action, inner) = run(&ours, |f| decap(f, &rx.cfg, &back));
                assert_eq!(
                    (action, &inner[..]),
                    (Action::Transmit(Egress::Overlay), &captured[50..]),
                    "{what}"
                );
            } else {
                assert_eq!(&ours[40..42], &[0, 0], "{what}: UDP checksum off means zero");
            }
        }
    }
}

#[test]
fn encap_udp_payload_yields_the_captured_udp_payload_and_destination() {
    for (i, captured) in fixture_frames().iter().enumerate() {
        let (rx, tx) = direction(captured);
        let routes = routes_to(&tx, &rx, true);
        let (action, ours) = run(&captured[50..], |f| encap_udp_payload(f, &tx.cfg, &routes));
        let Action::Transmit(Egress::Udp { remote, source_port }) = action else {
            panic!("frame {i}: {action:?}");
        };
        assert_eq!(remote, SocketAddrV4::new(rx.cfg.local_vtep, 8472), "frame {i}");
        assert_eq!(ours, &captured[42..], "frame {i}");
        // The same port the full-frame encap puts in the outer header.
        let (_, full) = run(&captured[50..], |f| encap(f, &tx.cfg, &routes));
        assert_eq!(source_port, u16::from_be_bytes([full[34], full[35]]), "frame {i}");
    }
}

#[test]
fn unresolved_underlay_mac_goes_to_the_kernel_as_a_complete_datagram() {
    let captured = &fixture_frames()[0];
    let (rx, tx) = direction(captured);
    let routes = routes_to(&tx, &rx, false);
    let (action, ours) = run(&captured[50..], |f| encap(f, &tx.cfg, &routes));
    assert_eq!(action, Action::ToKernel);
    assert_eq!(&ours[..6], &[0; 6], "destination MAC unresolved");
    let mut expect = captured.clone();
    expect[..6].fill(0);
    assert_same_outer_headers(&ours, &expect, "to kernel");
    assert!(outer_ipv4_checksum_ok(&ours));
}

/// Per flow in the fixture (by inner 5-tuple), the outer source ports encap chose.
#[test]
fn one_flow_one_source_port_and_flows_spread() {
    let mut ports: HashMap<Vec<u8>, HashSet<u16>> = HashMap::new();
    for captured in fixture_frames() {
        let (rx, tx) = direction(&captured);
        let routes = routes_to(&tx, &rx, true);
        let (_, ours) = run(&captured[50..], |f| encap(f, &tx.cfg, &routes));
        let inner_ip = &captured[64..];
        let ihl = usize::from(inner_ip[0] & 0xf) * 4;
        let mut key = inner_ip[12..20].to_vec(); // addresses
        key.push(inner_ip[9]); // protocol
        if matches!(inner_ip[9], 6 | 17) {
            key.extend_from_slice(&inner_ip[ihl..ihl + 4]);
        }
        ports.entry(key).or_default().insert(u16::from_be_bytes([ours[34], ours[35]]));
    }
    // ICMP A→B, ICMP B→A, UDP both ways, TCP both ways.
    assert_eq!(ports.len(), 6);
    for (flow, p) in &ports {
        assert_eq!(p.len(), 1, "flow {flow:?} used ports {p:?}");
    }
    let distinct: HashSet<u16> = ports.values().flatten().copied().collect();
    assert_eq!(distinct.len(), 6, "six flows, six ports: {distinct:?}");
}

#[test]
fn many_flows_spread_over_the_port_range() {
    let captured = &fixture_frames()[8]; // TCP SYN A→B
    assert_eq!(captured[64 + 9], 6);
    let (rx, tx) = direction(captured);
    let routes = routes_to(&tx, &rx, true);
    let mut seen = HashSet::new();
    for sport in 0..2000u16 {
        let mut inner = captured[50..].to_vec();
        inner[34..36].copy_from_slice(&(40000 + sport).to_be_bytes());
        let (_, ours) = run(&inner, |f| encap(f, &tx.cfg, &routes));
        seen.insert(u16::from_be_bytes([ours[34], ours[35]]));
    }
    assert!(seen.len() > 1900, "2000 flows on only {} ports", seen.len());
}

// ---- decap drop reasons ----

/// Fixture frame 0 (A→B ICMP echo), decapsulated at B after `mutate`.
fn decap_at_b(mutate: impl FnOnce(&mut Vec<u8>)) -> Action {
    let mut frame = fixture_frames()[0].clone();
    mutate(&mut frame);
    let (b, a) = (node_b(), node_a());
    let routes = routes_to(&b, &a, true);
    run(&frame, |f| decap(f, &b.cfg, &routes)).0
}

fn drop_of(reason: DropReason) -> Action {
    Action::Drop(reason)
}

#[test]
fn decap_unmodified_frame_is_accepted() {
    assert_eq!(decap_at_b(|_| {}), Action::Transmit(Egress::Overlay));
}

#[test]
fn decap_unknown_vtep() {
    // A stranger on the underlay, everything else right.
    let action = decap_at_b(|f| f[26..30].copy_from_slice(&[192, 168, 77, 9]));
    assert_eq!(action, drop_of(DropReason::UnknownVtep));
    // And a node that has no peers at all knows no one.
    let b = node_b();
    let (action, _) = run(&fixture_frames()[0], |f| decap(f, &b.cfg, &Routes::empty()));
    assert_eq!(action, drop_of(DropReason::UnknownVtep));
}

#[test]
fn decap_wrong_vni() {
    assert_eq!(decap_at_b(|f| f[48] = 2), drop_of(DropReason::WrongVni));
    assert_eq!(decap_at_b(|f| f[46] = 1), drop_of(DropReason::WrongVni));
}

#[test]
fn decap_bad_vxlan_flags() {
    assert_eq!(decap_at_b(|f| f[42] = 0), drop_of(DropReason::BadVxlanFlags), "I flag clear");
    assert_eq!(decap_at_b(|f| f[42] = 0x88), drop_of(DropReason::BadVxlanFlags), "GBP flag");
    assert_eq!(
        decap_at_b(|f| f[43] = 1),
        drop_of(DropReason::BadVxlanFlags),
        "reserved after flags"
    );
    assert_eq!(
        decap_at_b(|f| f[45] = 1),
        drop_of(DropReason::BadVxlanFlags),
        "reserved after flags"
    );
    assert_eq!(decap_at_b(|f| f[49] = 1), drop_of(DropReason::BadVxlanFlags), "reserved after VNI");
}

#[test]
fn decap_wrong_port() {
    assert_eq!(
        decap_at_b(|f| f[36..38].copy_from_slice(&4789u16.to_be_bytes())),
        drop_of(DropReason::WrongPort)
    );
}

#[test]
fn decap_not_local_vtep() {
    assert_eq!(decap_at_b(|f| f[33] = 3), drop_of(DropReason::NotLocalVtep));
    // The same frame at its sender: not addressed to it.
    let (a, b) = (node_a(), node_b());
    let routes = routes_to(&a, &b, true);
    assert_eq!(
        run(&fixture_frames()[0], |f| decap(f, &a.cfg, &routes)).0,
        drop_of(DropReason::NotLocalVtep)
    );
    // An IPv6 outer header: linen has no IPv6 VTEP.
    assert_eq!(
        decap_at_b(|f| f[12..14].copy_from_slice(&[0x86, 0xdd])),
        drop_of(DropReason::NotLocalVtep)
    );
}

#[test]
fn decap_inner_mac_mismatch_and_multicast() {
    assert_eq!(decap_at_b(|f| f[55] ^= 1), drop_of(DropReason::InnerMacMismatch));
    assert_eq!(decap_at_b(|f| f[50..56].fill(0xff)), drop_of(DropReason::InnerMulticast));
    assert_eq!(
        decap_at_b(|f| f[50..56].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1])),
        drop_of(DropReason::InnerMulticast)
    );
}

#[test]
fn decap_truncated() {
    for len in [0, 13, 14, 33, 34, 41, 49] {
        assert_eq!(decap_at_b(|f| f.truncate(len)), drop_of(DropReason::Truncated), "length {len}");
    }
    // The outer IP length claims more than the frame has.
    assert_eq!(decap_at_b(|f| f.truncate(f.len() - 1)), drop_of(DropReason::Truncated));
    // The UDP length claims more than the IP packet has.
    assert_eq!(
        decap_at_b(|f| f[38..40].copy_from_slice(&200u16.to_be_bytes())),
        drop_of(DropReason::Truncated)
    );
    // The UDP length is below the UDP header.
    assert_eq!(
        decap_at_b(|f| f[38..40].copy_from_slice(&7u16.to_be_bytes())),
        drop_of(DropReason::Truncated)
    );
    // Room for UDP but not for VXLAN.
    assert_eq!(
        decap_at_b(|f| f[38..40].copy_from_slice(&12u16.to_be_bytes())),
        drop_of(DropReason::Truncated)
    );
}

#[test]
fn decap_inner_truncated_and_not_ip() {
    // UDP length leaving 13 bytes of inner frame.
    let short = (8 + 8 + 13) as u16;
    assert_eq!(
        decap_at_b(|f| f[38..40].copy_from_slice(&short.to_be_bytes())),
        drop_of(DropReason::InnerTruncated)
    );
    // An inner Ethernet header and 19 bytes of IPv4.
    let short = (8 + 8 + 14 + 19) as u16;
    assert_eq!(
        decap_at_b(|f| f[38..40].copy_from_slice(&short.to_be_bytes())),
        drop_of(DropReason::InnerTruncated)
    );
    assert_eq!(
        decap_at_b(|f| f[62..64].copy_from_slice(&[0x08, 0x06])),
        drop_of(DropReason::InnerNotIpv4OrIpv6)
    );
}

#[test]
fn decap_other_outer_header_problems() {
    assert_eq!(
        decap_at_b(|f| f[12..14].copy_from_slice(&[0x08, 0x06])),
        drop_of(DropReason::NotIpv4OrIpv6)
    );
    assert_eq!(
        decap_at_b(|f| f[12..14].copy_from_slice(&[0x81, 0x00])),
        drop_of(DropReason::VlanTagged)
    );
    assert_eq!(decap_at_b(|f| f[14] = 0x44), drop_of(DropReason::BadIpHeader));
    assert_eq!(decap_at_b(|f| f[14] = 0x65), drop_of(DropReason::BadIpHeader));
    assert_eq!(decap_at_b(|f| f[23] = 6), drop_of(DropReason::NotUdp));
    assert_eq!(decap_at_b(|f| f[20] = 0x20), drop_of(DropReason::OuterFragment), "more fragments");
    assert_eq!(decap_at_b(|f| f[21] = 0x10), drop_of(DropReason::OuterFragment), "offset");
    // A non-zero, even wrong, outer UDP checksum is not checked; a zero one is accepted.
    assert_eq!(decap_at_b(|f| f[40] ^= 0xff), Action::Transmit(Egress::Overlay));
    assert_eq!(decap_at_b(|f| f[40..42].fill(0)), Action::Transmit(Egress::Overlay));
}

#[test]
fn decap_accepts_outer_ip_options_and_padding() {
    let captured = fixture_frames()[0].clone();
    // Insert a 4-byte NOP option block into the outer IPv4 header and pad the frame.
    let mut f = captured[..34].to_vec();
    f.extend_from_slice(&[1, 1, 1, 0]);
    f.extend_from_slice(&captured[34..]);
    f[14] = 0x46;
    let total = u16::from_be_bytes([f[16], f[17]]) + 4;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0; 7]);
    let (b, a) = (node_b(), node_a());
    let routes = routes_to(&b, &a, true);
    let (action, inner) = run(&f, |fr| decap(fr, &b.cfg, &routes));
    assert_eq!(action, Action::Transmit(Egress::Overlay));
    assert_eq!(inner, &captured[50..]);
}

#[test]
fn decap_udp_payload_checks_addresses_and_shares_the_vxlan_checks() {
    let captured = fixture_frames()[0].clone();
    let (b, a) = (node_b(), node_a());
    let routes = routes_to(&b, &a, true);
    let udp = |payload: &[u8], src: IpAddr, dst: IpAddr| {
        run(payload, |f| decap_udp_payload(f, src, dst, &b.cfg, &routes)).0
    };
    let (pa, pb): (IpAddr, IpAddr) = (a.cfg.local_vtep.into(), b.cfg.local_vtep.into());
    assert_eq!(udp(&captured[42..], pa, pb), Action::Transmit(Egress::Overlay));
    assert_eq!(udp(&captured[42..], pa, pa), drop_of(DropReason::NotLocalVtep));
    assert_eq!(udp(&captured[42..], pa, "::1".parse().unwrap()), drop_of(DropReason::NotLocalVtep));
    assert_eq!(
        udp(&captured[42..], "192.168.77.9".parse().unwrap(), pb),
        drop_of(DropReason::UnknownVtep)
    );
    assert_eq!(
        udp(&captured[42..], "fe80::1".parse().unwrap(), pb),
        drop_of(DropReason::UnknownVtep)
    );
    assert_eq!(udp(&captured[42..49], pa, pb), drop_of(DropReason::Truncated));
    let mut bad = captured[42..].to_vec();
    bad[6] = 7;
    assert_eq!(udp(&bad, pa, pb), drop_of(DropReason::WrongVni));
    bad[6] = 1;
    bad[0] = 0x0c;
    assert_eq!(udp(&bad, pa, pb), drop_of(DropReason::BadVxlanFlags));
    assert_eq!(udp(&captured[42..42 + 8 + 20], pa, pb), drop_of(DropReason::InnerTruncated));
}

#[test]
fn a_dropped_frame_is_left_unchanged() {
    let captured = fixture_frames()[0].clone();
    let b = node_b();
    let (action, data) = run(&captured, |f| decap(f, &b.cfg, &Routes::empty()));
    assert_eq!(action, drop_of(DropReason::UnknownVtep));
    assert_eq!(data, captured);
}

// ---- encap drop reasons ----

/// The inner frame of fixture frame 0 (A→B), encapsulated at A after `mutate`.
fn encap_at_a(mutate: impl FnOnce(&mut Vec<u8>)) -> (Action, Vec<u8>) {
    let mut inner = fixture_frames()[0][50..].to_vec();
    mutate(&mut inner);
    let (a, b) = (node_a(), node_b());
    let routes = routes_to(&a, &b, true);
    run(&inner, |f| encap(f, &a.cfg, &routes))
}

#[test]
fn encap_drop_reasons() {
    let drop = |m: fn(&mut Vec<u8>)| encap_at_a(m).0;
    assert_eq!(drop(|f| f[30..34].copy_from_slice(&[10, 244, 3, 2])), drop_of(DropReason::NoRoute));
    assert_eq!(
        drop(|f| f[12..14].copy_from_slice(&[0x08, 0x06])),
        drop_of(DropReason::NotIpv4OrIpv6)
    );
    assert_eq!(drop(|f| f[12..14].copy_from_slice(&[0x81, 0x00])), drop_of(DropReason::VlanTagged));
    assert_eq!(drop(|f| f[12..14].copy_from_slice(&[0x88, 0xa8])), drop_of(DropReason::VlanTagged));
    assert_eq!(drop(|f| f.truncate(13)), drop_of(DropReason::Truncated));
    assert_eq!(drop(|f| f.truncate(33)), drop_of(DropReason::Truncated));
    assert_eq!(drop(|f| f.truncate(f.len() - 1)), drop_of(DropReason::Truncated));
    assert_eq!(drop(|f| f[14] = 0x44), drop_of(DropReason::BadIpHeader));
    assert_eq!(drop(|f| f[14] = 0x65), drop_of(DropReason::BadIpHeader));
    assert_eq!(drop(|f| f[22] = 0), drop_of(DropReason::TtlExpired));
    // Over the MTU without DF: the kernel would fragment; linen drops and counts.
    let big_no_df = |f: &mut Vec<u8>| {
        f.resize(14 + 1451, 0);
        f[16..18].copy_from_slice(&1451u16.to_be_bytes());
        f[20] = 0;
    };
    assert_eq!(encap_at_a(big_no_df).0, drop_of(DropReason::TooBigDfClear));
}

#[test]
fn encap_needs_headroom() {
    let inner = fixture_frames()[0][50..].to_vec();
    let (a, b) = (node_a(), node_b());
    let routes = routes_to(&a, &b, true);
    let mut buf = vec![0u8; 49];
    buf.extend_from_slice(&inner);
    let mut frame = Frame::new(&mut buf, 49, inner.len()).unwrap();
    assert_eq!(encap(&mut frame, &a.cfg, &routes), drop_of(DropReason::NoHeadroom));
    assert_eq!(frame.data(), &inner[..]);
    let mut buf = vec![0u8; 7];
    buf.extend_from_slice(&inner);
    let mut frame = Frame::new(&mut buf, 7, inner.len()).unwrap();
    assert_eq!(encap_udp_payload(&mut frame, &a.cfg, &routes), drop_of(DropReason::NoHeadroom));
}

#[test]
fn encap_trims_ethernet_padding() {
    let (action, ours) = encap_at_a(|f| f.extend_from_slice(&[0; 10]));
    assert_eq!(action, Action::Transmit(Egress::Underlay { ifindex: 11 }));
    assert_same_outer_headers(&ours, &fixture_frames()[0], "padded inner frame");
}

/// The seed corpus of the `decap` fuzz target (`fuzz/seeds/decap/`): every fixture frame in every
/// mode of the target (see `fuzz/fuzz_targets/decap.rs` for the input layout). Regenerate with
/// `LINEN_WRITE_FUZZ_SEEDS=1 cargo test -p linen-dataplane --test pipeline_fixture fuzz_seeds`.
#[test]
fn fuzz_seeds_match_the_fixture() {
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, frame) in fixture_frames().iter().enumerate() {
        let to_a = frame[30..34] == [192, 168, 77, 1];
        let (rx_bit, tx_bit) = if to_a { (8u8, 0u8) } else { (0, 8) };
        let seed = |mode: u8, headroom: u8, bytes: &[u8]| [&[mode, headroom][..], bytes].concat();
        let n = i + 1;
        expected.push((format!("frame{n:02}-decap"), seed(rx_bit, 0, frame)));
        expected.push((format!("frame{n:02}-decap-headroom"), seed(rx_bit, 200, frame)));
        expected.push((format!("frame{n:02}-decap-udp"), seed(1 | rx_bit, 8, &frame[42..])));
        expected.push((format!("frame{n:02}-encap"), seed(2 | tx_bit, 64, &frame[50..])));
        expected
            .push((format!("frame{n:02}-encap-udpcsum"), seed(2 | 4 | tx_bit, 64, &frame[50..])));
        expected.push((format!("frame{n:02}-encap-udp"), seed(3 | tx_bit, 16, &frame[50..])));
    }
    common::check_fuzz_seeds("decap", &expected);
}
