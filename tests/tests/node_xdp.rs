//! The AF_XDP datapath end to end (root): nodes are namespaces built by
//! `linen_testbed::cluster` (underlay veth with `tx off`, a `cni0` bridge and pods per node),
//! each running `linend --static-peers … --datapath xdp`.
//!
//! Run alone with `cargo build --workspace --bins && cargo test -p linen-testbed --test node_xdp`.

use std::net::Ipv4Addr;
use std::time::Duration;

use linen_testbed::cluster::{Cluster, ClusterBuilder, Node, Overlay};

fn xdp_pair(tag: &str) -> Cluster {
    ClusterBuilder::new(tag)
        .nodes(2, Overlay::linen("xdp"))
        .build()
        .unwrap_or_else(|e| panic!("cluster: {e}"))
}

fn stats(n: &Node) -> serde_json::Value {
    n.linend.as_ref().and_then(|l| l.worker_stats()).unwrap_or_else(|| {
        panic!("{}: no stats file; log:\n{}", n.name, n.linend.as_ref().unwrap().log_text())
    })
}

fn log(n: &Node) -> String {
    n.linend.as_ref().map(|l| l.log_text()).unwrap_or_default()
}

fn ping(c: &Cluster, from: &linen_testbed::Netns, to: Ipv4Addr) {
    assert!(
        c.wait_reachable(from, to, Duration::from_secs(10)),
        "{} cannot ping {to}\nn1: {}\nn1 log:\n{}\nn2: {}\nn2 log:\n{}",
        from.name,
        stats(&c.nodes()[0]),
        log(&c.nodes()[0]),
        stats(&c.nodes()[1]),
        log(&c.nodes()[1]),
    );
}

#[test]
fn xdp_two_nodes_ping() {
    let c = xdp_pair("nxdpp");
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    ping(&c, &a.pods[0], b.pod_ip(0));
    ping(&c, &b.pods[1], a.pod_ip(1));
    // The stats file is rewritten every 100 ms: wait for it to show the pings.
    let moved = linen_testbed::wait_for(Duration::from_secs(3), || {
        let (sa, sb) = (stats(a), stats(b));
        (sa["tx"].as_u64()? >= 2 && sb["tx"].as_u64()? >= 2).then_some(())
    });
    assert!(moved.is_some(), "n1: {}\nn2: {}", stats(a), stats(b));
}
