//! The underlay program's filter, frame by frame, run in the kernel with `BPF_PROG_TEST_RUN`
//! (root). Its decision counters tell "steered to AF_XDP" from "left to the kernel" even though
//! no socket is registered (the redirect then falls back to XDP_PASS).

use std::fs::File;

use linen_dataplane::io::xsk::{ProgramCounters, UnderlayConfig, XdpAttachment};
use linen_testbed::{Netns, Testbed};
use nix::sched::{setns, CloneFlags};

const XDP_PASS: u32 = 2;

fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(ns.path()).expect("open netns file");
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("netns thread panicked")
    })
}

const VTEP4: [u8; 4] = [192, 168, 77, 1];
const VTEP6: [u8; 16] = [0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ipv4_udp(dst: [u8; 4], proto: u8, frag: u16, options: usize, dport: u16) -> Vec<u8> {
    let mut f = eth(0x0800);
    let ihl = 5 + options / 4;
    f.extend_from_slice(&[0x40 | ihl as u8, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&frag.to_be_bytes());
    f.extend_from_slice(&[64, proto, 0, 0, 192, 168, 77, 2]);
    f.extend_from_slice(&dst);
    f.extend(std::iter::repeat_n(1u8, options));
    f.extend_from_slice(&[0x12, 0x34]);
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 16, 0, 0]);
    f.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]);
    f
}

fn ipv6_udp(dst: [u8; 16], next: u8, dport: u16) -> Vec<u8> {
    let mut f = eth(0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 16, next, 64]);
    f.extend_from_slice(&[0xfd, 0, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&[0x12, 0x34]);
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&[0, 16, 0, 0]);
    f.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]);
    f
}

/// Runs `frame` through `prog` and returns whether it was steered (counter deltas).
fn steered(prog: &XdpAttachment, frame: &[u8]) -> bool {
    let before = prog.counters().expect("counters");
    assert_eq!(prog.test_run(frame).expect("test run"), XDP_PASS, "no socket: falls back to PASS");
    let after = prog.counters().expect("counters");
    let d = ProgramCounters {
        steered: after.steered - before.steered,
        passed: after.passed - before.passed,
    };
    assert_eq!(d.steered + d.passed, 1, "exactly one decision per frame: {d:?}");
    d.steered == 1
}

#[test]
fn underlay_filter_steers_exactly_local_vxlan() {
    let mut tb = Testbed::new("xfilter");
    let node = tb.netns("node");
    let peer = tb.netns("peer");
    tb.veth(&node, "ul0", &peer, "ul1");
    let config =
        UnderlayConfig { vtep_ipv4: Some(VTEP4.into()), vtep_ipv6: Some(VTEP6.into()), port: 8472 };
    let (prog, overlay) = in_netns(&node, || {
        (
            XdpAttachment::underlay("ul0", config, 4).expect("attach underlay"),
            XdpAttachment::overlay("lo", 1).expect("attach overlay"),
        )
    });

    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("IPv4 UDP to the VTEP's VXLAN port", ipv4_udp(VTEP4, 17, 0, 0, 8472), true),
        ("IPv4 with options", ipv4_udp(VTEP4, 17, 0, 8, 8472), true),
        ("IPv4 DF set", ipv4_udp(VTEP4, 17, 0x4000, 0, 8472), true),
        ("IPv4 other port", ipv4_udp(VTEP4, 17, 0, 0, 8473), false),
        ("IPv4 other address", ipv4_udp([192, 168, 77, 9], 17, 0, 0, 8472), false),
        ("IPv4 TCP to 8472", ipv4_udp(VTEP4, 6, 0, 0, 8472), false),
        ("IPv4 first fragment (MF)", ipv4_udp(VTEP4, 17, 0x2000, 0, 8472), false),
        ("IPv4 later fragment", ipv4_udp(VTEP4, 17, 0x0010, 0, 8472), false),
        ("IPv4 truncated in the IP header", ipv4_udp(VTEP4, 17, 0, 0, 8472)[..24].to_vec(), false),
        ("IPv4 truncated in the UDP header", ipv4_udp(VTEP4, 17, 0, 0, 8472)[..38].to_vec(), false),
        ("IPv6 UDP to the VTEP's VXLAN port", ipv6_udp(VTEP6, 17, 8472), true),
        ("IPv6 other port", ipv6_udp(VTEP6, 17, 4789), false),
        ("IPv6 extension header", ipv6_udp(VTEP6, 0, 8472), false),
        ("IPv6 other address", ipv6_udp([0xfd; 16], 17, 8472), false),
        (
            "ARP",
            {
                let mut f = eth(0x0806);
                f.extend_from_slice(&[0; 28]);
                f
            },
            false,
        ),
        (
            "802.1Q-tagged VXLAN",
            {
                let inner = ipv4_udp(VTEP4, 17, 0, 0, 8472);
                let mut f = eth(0x8100);
                f.extend_from_slice(&[0, 5, 0x08, 0x00]);
                f.extend_from_slice(&inner[14..]);
                f
            },
            false,
        ),
        ("bare Ethernet header", eth(0x0800), false),
    ];
    for (name, frame, want) in &cases {
        assert_eq!(steered(&prog, frame), *want, "{name}");
    }

    // A new configuration applies to the next frame.
    prog.set_underlay_config(UnderlayConfig {
        vtep_ipv4: Some(VTEP4.into()),
        vtep_ipv6: None,
        port: 4789,
    })
    .expect("reconfigure");
    assert!(steered(&prog, &ipv4_udp(VTEP4, 17, 0, 0, 4789)));
    assert!(!steered(&prog, &ipv4_udp(VTEP4, 17, 0, 0, 8472)));
    assert!(!steered(&prog, &ipv6_udp(VTEP6, 17, 4789)), "IPv6 steering switched off");

    // The overlay program steers everything.
    for (name, frame, _) in &cases {
        assert!(steered(&overlay, frame), "overlay: {name}");
    }
}
