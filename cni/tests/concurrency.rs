//! 100 ADDs at once on one node, then 100 DELs at once: distinct addresses, then nothing left
//! on disk, on the bridge or in any namespace.

mod common;

use std::collections::HashSet;

use common::{first_ip, Node};
use serde_json::json;

#[test]
fn hundred_concurrent_adds_then_dels() {
    const N: usize = 100;
    let mut node = Node::new("cnip");
    let pods: Vec<_> = (0..N).map(|i| node.pod(&format!("p{i}"))).collect();
    let conf = node.conf("1.0.0", json!({}));

    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || node.cmd("ADD", &format!("ctr{i}"), &p.path(), "eth0", conf))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ips: HashSet<String> = results.iter().map(|r| first_ip(&r.ok())).collect();
    assert_eq!(ips.len(), N, "every pod got its own address");
    assert!(!ips.contains("10.244.8.1"), "gateway never handed out");
    assert_eq!(node.reservations().len(), N);
    assert_eq!(node.bridge_ports().len(), N);
    // Every pod reaches the gateway; two of them reach each other.
    for p in pods.iter().step_by(25) {
        p.sh("ping -c 1 -W 2 10.244.8.1");
    }
    let a = first_ip(&results[N - 1].json());
    pods[0].sh(&format!("ping -c 1 -W 2 {a}"));

    let dels: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || node.cmd("DEL", &format!("ctr{i}"), &p.path(), "eth0", conf))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for d in &dels {
        assert_eq!(d.status, 0, "{} {}", d.stdout, d.stderr);
    }
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
    assert!(node.bridge_ports().is_empty());
    let node_links = node.ns.sh("ip -o link show");
    assert_eq!(node_links.lines().count(), 2, "only lo and cni0 remain: {node_links}");
    for p in &pods {
        assert_eq!(p.sh("ip -o link show").lines().count(), 1, "only lo in {}", p.name);
    }
}
