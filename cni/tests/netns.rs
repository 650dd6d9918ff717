//! A netlink connection stays in the network namespace it was opened in: one opened for a pod
//! (on a short-lived thread inside the pod namespace) creates, finds and removes links there
//! only, although the thread that drives it afterwards never leaves the node namespace.

use std::fs::File;
use std::path::PathBuf;

use linen_cni::netlink::{in_netns, Netlink};
use linen_testbed::Testbed;

fn thread_netns() -> PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").expect("read /proc/thread-self/ns/net")
}

fn has_link(ns: &linen_testbed::Netns, name: &str) -> bool {
    ns.sh_output(&format!("ip link show {name}")).status.success()
}

#[test]
fn a_pod_connection_acts_in_the_pod_namespace_only() {
    let mut tb = Testbed::new("cnins");
    let node = tb.netns("node");
    let pod = tb.netns("pod");
    let node_file = File::open(node.path()).unwrap();
    let pod_file = File::open(pod.path()).unwrap();

    // The plugin runs inside the node namespace; so does this closure's thread.
    let checked = in_netns(&node_file, move || {
        let node_ns = thread_netns();
        let mut node_nl = Netlink::open().expect("open in the node namespace");
        let mut pod_nl = Netlink::open_in(&pod_file).expect("open in the pod namespace");
        assert_eq!(thread_netns(), node_ns, "opening the pod connection moved this thread");

        pod_nl.add_bridge("ltpod0").expect("bridge in the pod");
        node_nl.add_bridge("ltnode0").expect("bridge in the node");
        assert!(pod_nl.link_by_name("ltpod0").unwrap().is_some());
        assert!(pod_nl.link_by_name("ltnode0").unwrap().is_none());
        assert!(node_nl.link_by_name("ltnode0").unwrap().is_some());
        assert!(node_nl.link_by_name("ltpod0").unwrap().is_none());
        assert_eq!(thread_netns(), node_ns);
        pod_nl
    })
    .expect("enter the node namespace");
    let mut pod_nl = checked;

    // As seen from outside, each bridge is where its connection put it.
    assert!(has_link(&pod, "ltpod0") && !has_link(&pod, "ltnode0"));
    assert!(has_link(&node, "ltnode0") && !has_link(&node, "ltpod0"));

    // The pod connection still works from this (root-namespace) thread after the thread that
    // created it is gone, and still acts on the pod namespace.
    let index = pod_nl.link_by_name("ltpod0").unwrap().expect("ltpod0").index;
    pod_nl.del_link(index).expect("delete in the pod");
    assert!(!has_link(&pod, "ltpod0"));
    assert!(pod_nl.link_by_name("ltpod0").unwrap().is_none());
}
