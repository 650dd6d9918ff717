//! linend in etcd mode with the AF_XDP datapath follows the kernel's neighbour table on the
//! underlay: when the MAC of a peer's underlay next hop changes, the frames the workers build
//! carry the new MAC (seen on the underlay switch), and when it changes back, pods talk again.
//!
//! The AF_XDP workers write the outer Ethernet header themselves from the route snapshot, so
//! a stale next-hop MAC there is not repaired by the kernel: the snapshot must follow.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use linen_testbed::cluster::{ClusterBuilder, Overlay};
use linen_testbed::{wait_for, Netns};

/// A MAC that no interface of the testbed has.
const FAKE_MAC: &str = "02:00:00:00:00:99";

/// `tcpdump -e` in `ns` on `dev` for VXLAN frames to `dst_mac`, at most `count` of them; the child
/// prints one line per frame. It stops by itself after `secs` (`timeout`).
fn capture(ns: &Netns, dev: &str, dst_mac: &str, count: u32, secs: u32) -> Child {
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "timeout", &secs.to_string(), "tcpdump", "-l", "-e"])
        .args(["-n", "-i", dev, "-c", &count.to_string()])
        .arg(format!("ether dst {dst_mac} and udp port 8472"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tcpdump")
}

/// Frames a capture saw (it has ended by then: `count` frames or its time limit).
fn frames(c: Child) -> usize {
    let out = c.wait_with_output().expect("tcpdump output");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("8472")).count()
}

#[test]
fn xdp_next_hops_follow_the_underlay_neighbour_table() {
    let c = ClusterBuilder::new("nhop")
        .nodes(2, Overlay::linen("xdp"))
        .etcd()
        .build()
        .expect("cluster");
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    let sw = c
        .testbed()
        .namespaces()
        .iter()
        .find(|n| n.name.ends_with("-sw"))
        .expect("switch namespace")
        .clone();
    assert!(c.wait_reachable(&a.pods[0], b.pod_ip(0), Duration::from_secs(10)), "no mesh");
    let log = || a.linend.as_ref().map(|l| l.log_text()).unwrap_or_default();
    let b_mac = b.host.sh("cat /sys/class/net/eth0/address").trim().to_string();
    // Port `p1` is the switch's end of node 1's underlay link: what node 1 sends arrives there.
    let port = "p1";
    let ping = |n: u32| {
        a.pods[0].sh_output(&format!("ping -c {n} -i 0.1 -W 1 {}", b.pod_ip(0)));
    };

    // The workers must build the frames themselves (not hand them to the kernel for want of a
    // resolved next hop), else the kernel's own neighbour look-up would hide what linend does.
    // The first pings make the kernel resolve node 2; linend must pick that up.
    let to_kernel = || {
        let w = a.linend.as_ref()?.worker_stats()?;
        w["to_kernel"].as_u64()
    };
    let direct = wait_for(Duration::from_secs(10), || {
        let before = to_kernel()?;
        ping(5);
        std::thread::sleep(Duration::from_millis(300));
        (to_kernel()? == before).then_some(())
    });
    assert!(
        direct.is_some(),
        "node 1's workers keep handing frames to the kernel (next hop never resolved); log:\n{}",
        log()
    );

    // Before: the workers address node 2's real MAC.
    let cap = capture(&sw, port, &b_mac, 3, 5);
    std::thread::sleep(Duration::from_millis(500));
    ping(10);
    assert!(frames(cap) >= 3, "no VXLAN frames to {b_mac} from node 1 before the change");

    // The kernel's neighbour entry for node 2 changes MAC: linend must follow it.
    a.host.sh(&format!("ip neigh replace {} lladdr {FAKE_MAC} dev eth0 nud permanent", b.ip));
    let followed = wait_for(Duration::from_secs(10), || {
        let cap = capture(&sw, port, FAKE_MAC, 2, 3);
        std::thread::sleep(Duration::from_millis(500));
        ping(5);
        (frames(cap) >= 2).then_some(())
    });
    assert!(
        followed.is_some(),
        "node 1 never sent VXLAN to the new next-hop MAC {FAKE_MAC}; log:\n{}",
        log()
    );
    assert!(log().contains("underlay neighbours changed"), "log:\n{}", log());

    // And back: with the real MAC again, pods on the two nodes talk.
    a.host.sh(&format!("ip neigh replace {} lladdr {b_mac} dev eth0 nud reachable", b.ip));
    assert!(
        c.wait_reachable(&a.pods[0], b.pod_ip(0), Duration::from_secs(10)),
        "pods did not talk again after the next hop's MAC came back; log:\n{}",
        log()
    );
}
