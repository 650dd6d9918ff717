//! Fuzz target: the VXLAN pipeline (`linen_dataplane::pipeline`) on arbitrary frames.
//!
//! Input layout: byte 0 selects the entry point and options, byte 1 is the headroom in front of
//! the frame, the rest is the frame.
//!
//! - bits 0–1 of byte 0: 0 `decap`, 1 `decap_udp_payload` (outer addresses from the receiver's
//!   peer), 2 `encap`, 3 `encap_udp_payload`;
//! - bit 2: outer UDP checksum on for encap; bit 3: node A receives/sends instead of node B.
//!
//! The nodes are the fixture's (`dataplane/tests/fixtures/kernel-vxlan-flannel.pcap`), and the
//! seeds in `fuzz/seeds/decap/` are its frames in every mode (written by the test
//! `fuzz_seeds_match_the_fixture` in `dataplane/tests/pipeline_fixture.rs`).
//!
//! Beyond "never panics", it checks what every caller relies on: a dropped frame is unchanged,
//! the frame stays inside its buffer, and whatever encap accepts decap turns back into the same
//! inner frame at the peer.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use linen_dataplane::pipeline::{
    decap, decap_udp_payload, encap, encap_udp_payload, Action, Config, DropReason, Egress, Frame,
    NextHop, Peer, Routes, RoutesBuilder,
};

struct Node {
    cfg: Config,
    subnet: &'static str,
}

fn node(a: bool) -> Node {
    if a {
        Node {
            cfg: Config::new(
                Ipv4Addr::new(192, 168, 77, 1),
                [0x92, 0x14, 0x14, 0x17, 0xdb, 0xd3],
                [0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8],
            ),
            subnet: "10.244.1.0/24",
        }
    } else {
        Node {
            cfg: Config::new(
                Ipv4Addr::new(192, 168, 77, 2),
                [0xe6, 0x37, 0x6c, 0xed, 0x27, 0x39],
                [0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c],
            ),
            subnet: "10.244.2.0/24",
        }
    }
}

fn routes(me: &Node, peer: &Node) -> Routes {
    let p = Peer {
        vtep: peer.cfg.local_vtep,
        vtep_mac: peer.cfg.vtep_mac,
        underlay_mac: Some(peer.cfg.local_mac),
        ifindex: 1,
    };
    let mut b = RoutesBuilder::new();
    b.insert(peer.subnet.parse().expect("valid prefix"), NextHop::new(&me.cfg, &p));
    b.insert("fd00::/8".parse().expect("valid prefix"), NextHop::new(&me.cfg, &p));
    b.build()
}

/// Node A and node B, each with its routes to the other (built once: building a route table
/// allocates its tries, which would dominate every run).
fn nodes() -> &'static [(Node, Routes); 2] {
    static NODES: OnceLock<[(Node, Routes); 2]> = OnceLock::new();
    NODES.get_or_init(|| {
        let (a, b) = (node(true), node(false));
        let (ra, rb) = (routes(&a, &b), routes(&b, &a));
        [(a, ra), (b, rb)]
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [mode, headroom, packet @ ..] = data else {
        return;
    };
    let [a, b] = nodes();
    let ((me, my_routes), (peer, peer_routes)) = if mode & 8 != 0 { (a, b) } else { (b, a) };
    let mut cfg = me.cfg.clone();
    cfg.udp_checksum = mode & 4 != 0;
    let me = Node { cfg, subnet: me.subnet };
    let headroom = usize::from(*headroom);
    let mut buf = vec![0x5au8; headroom + packet.len() + 16];
    buf[headroom..headroom + packet.len()].copy_from_slice(packet);
    let total = buf.len();
    let mut frame = Frame::new(&mut buf, headroom, packet.len()).expect("fits by construction");
    let action = match mode & 3 {
        0 => decap(&mut frame, &me.cfg, my_routes),
        1 => decap_udp_payload(
            &mut frame,
            peer.cfg.local_vtep.into(),
            me.cfg.local_vtep.into(),
            &me.cfg,
            my_routes,
        ),
        2 => encap(&mut frame, &me.cfg, my_routes),
        _ => encap_udp_payload(&mut frame, &me.cfg, my_routes),
    };
    assert!(frame.start() + frame.len() <= total);
    match action {
        Action::Drop(_) => {
            assert_eq!(frame.start(), headroom);
            assert_eq!(frame.data(), packet, "a dropped frame is unchanged");
        }
        Action::Transmit(Egress::Underlay { .. }) => {
            // What encap sends, the peer decapsulates back into the inner frame it was given
            // (Ethernet padding after the IP packet aside).
            // Encap does not look at the inner MACs; decap accepts only frames to its VtepMAC.
            let mut back = frame.data().to_vec();
            let len = back.len();
            let mut f = Frame::new(&mut back, 0, len).expect("fits");
            let action = decap(&mut f, &peer.cfg, peer_routes);
            if packet[..6] == peer.cfg.vtep_mac {
                assert_eq!(action, Action::Transmit(Egress::Overlay));
                assert_eq!(f.data(), &packet[..f.len()]);
            } else {
                assert!(matches!(
                    action,
                    Action::Drop(DropReason::InnerMacMismatch | DropReason::InnerMulticast)
                ));
            }
        }
        _ => {}
    }
});
