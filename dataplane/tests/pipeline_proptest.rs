//! Property tests: encap and decap never panic on arbitrary bytes with arbitrary headroom, leave
//! dropped frames untouched, and round-trip every inner frame they accept.

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use linen_dataplane::pcap::Pcap;
use linen_dataplane::pipeline::{
    decap, decap_udp_payload, encap, encap_udp_payload, Action, Config, Egress, Frame, NextHop,
    Peer, Routes, RoutesBuilder,
};
use proptest::prelude::*;

const A_VTEP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const B_VTEP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const A_MAC: [u8; 6] = [0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8];
const B_MAC: [u8; 6] = [0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c];

fn config_a() -> Config {
    Config::new(A_VTEP, [0x92, 0x14, 0x14, 0x17, 0xdb, 0xd3], A_MAC)
}

fn config_b() -> Config {
    Config::new(B_VTEP, [0xe6, 0x37, 0x6c, 0xed, 0x27, 0x39], B_MAC)
}

/// Both nodes' routes, built once (a table build allocates its tries; per case it would dominate
/// the run). The outer UDP checksum and MTU settings do not enter the next hops' templates.
fn routes() -> &'static (Routes, Routes) {
    static ROUTES: OnceLock<(Routes, Routes)> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let (a, b) = (config_a(), config_b());
        let to_b =
            Peer { vtep: B_VTEP, vtep_mac: B_MAC, underlay_mac: Some(b.local_mac), ifindex: 1 };
        let to_a =
            Peer { vtep: A_VTEP, vtep_mac: A_MAC, underlay_mac: Some(a.local_mac), ifindex: 1 };
        let mut ra = RoutesBuilder::new();
        ra.insert("0.0.0.0/0".parse().unwrap(), NextHop::new(&a, &to_b));
        ra.insert("::/0".parse().unwrap(), NextHop::new(&a, &to_b));
        let mut rb = RoutesBuilder::new();
        rb.insert("10.244.1.0/24".parse().unwrap(), NextHop::new(&b, &to_a));
        (ra.build(), rb.build())
    })
}

/// Node A (sender) and node B (receiver) as in the fixture, A with a catch-all route so arbitrary
/// destinations reach the later stages of encap.
fn setup(udp_checksum: bool, mtu: u16) -> (Config, &'static Routes, Config, &'static Routes) {
    let mut a = config_a();
    a.udp_checksum = udp_checksum;
    a.overlay_mtu = mtu;
    let (ra, rb) = routes();
    (a, ra, config_b(), rb)
}

/// The fixture's frames, read once.
fn fixture() -> &'static [Vec<u8>] {
    static FRAMES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        Pcap::read_frames(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kernel-vxlan-flannel.pcap"
        ))
        .unwrap()
    })
}

/// Runs `f` on `bytes` placed after `headroom` bytes in a buffer with `tail` spare bytes, and
/// checks the invariants every action keeps.
fn check(
    bytes: &[u8],
    headroom: usize,
    tail: usize,
    f: impl FnOnce(&mut Frame<'_>) -> Action,
) -> Action {
    let mut buf = vec![0x77; headroom];
    buf.extend_from_slice(bytes);
    buf.resize(buf.len() + tail, 0x77);
    let total = buf.len();
    let mut frame = Frame::new(&mut buf, headroom, bytes.len()).unwrap();
    let action = f(&mut frame);
    assert!(frame.start() + frame.len() <= total);
    if let Action::Drop(_) = action {
        assert_eq!(frame.data(), bytes, "a dropped frame is unchanged");
        assert_eq!(frame.start(), headroom);
    }
    action
}

fn all_entry_points(bytes: &[u8], headroom: usize, tail: usize, udp_checksum: bool, mtu: u16) {
    let (a, ra, b, rb) = setup(udp_checksum, mtu);
    check(bytes, headroom, tail, |f| encap(f, &a, ra));
    check(bytes, headroom, tail, |f| encap_udp_payload(f, &a, ra));
    check(bytes, headroom, tail, |f| decap(f, &b, rb));
    check(bytes, headroom, tail, |f| decap_udp_payload(f, A_VTEP.into(), B_VTEP.into(), &b, rb));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..1600),
        headroom in 0usize..300,
        tail in 0usize..64,
        udp_checksum in any::<bool>(),
        mtu in 68u16..1600,
    ) {
        all_entry_points(&bytes, headroom, tail, udp_checksum, mtu);
    }

    /// Arbitrary bytes behind a plausible header prefix, so the deeper checks run too.
    #[test]
    fn plausible_headers_never_panic(
        which in 0usize..18,
        cut in 0usize..1500,
        flips in proptest::collection::vec((0usize..120, any::<u8>()), 0..6),
        headroom in 0usize..300,
        udp_checksum in any::<bool>(),
        mtu in 68u16..1600,
    ) {
        let frames = fixture();
        let mut outer = frames[which].clone();
        for (at, v) in &flips {
            if let Some(b) = outer.get_mut(*at) { *b = *v; }
        }
        outer.truncate(cut.max(1));
        all_entry_points(&outer, headroom, 0, udp_checksum, mtu);
        let inner = outer.get(50..).unwrap_or(&[]).to_vec();
        all_entry_points(&inner, headroom, 0, udp_checksum, mtu);
    }

    /// Any IPv4 or IPv6 inner frame encap accepts comes back out of decap byte for byte.
    #[test]
    fn encap_then_decap_round_trips(
        v6 in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1400),
        proto in prop_oneof![Just(6u8), Just(17u8), Just(1u8), any::<u8>()],
        src_low in any::<u8>(),
        udp_checksum in any::<bool>(),
    ) {
        let (a, ra, b, rb) = setup(udp_checksum, 1450);
        let mut inner = B_MAC.to_vec();
        inner.extend_from_slice(&A_MAC);
        if v6 {
            inner.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            inner.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            inner.extend_from_slice(&[proto, 63]);
            inner.extend_from_slice(&[0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, src_low]);
            inner.extend_from_slice(&[0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            inner.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            inner.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            inner.extend_from_slice(&[0, 0, 0x40, 0, 63, proto, 0, 0, 10, 244, 1, src_low, 10, 244, 2, 2]);
        }
        inner.extend_from_slice(&payload);
        let mut buf = vec![0u8; 64];
        buf.extend_from_slice(&inner);
        let mut frame = Frame::new(&mut buf, 64, inner.len()).unwrap();
        let action = encap(&mut frame, &a, ra);
        prop_assert_eq!(action, Action::Transmit(Egress::Underlay { ifindex: 1 }));
        prop_assert_eq!(frame.start(), 14);
        prop_assert_eq!(decap(&mut frame, &b, rb), Action::Transmit(Egress::Overlay));
        prop_assert_eq!(frame.data(), &inner[..]);
    }
}
