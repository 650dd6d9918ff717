//! A real runtime: Debian's podman 4.3 with `network_backend = "cni"` running busybox
//! containers (`--rootfs`, no image pull) on one node — with linen, then with the reference
//! bridge + host-local plugins. Podman runs inside the test's node namespace
//! (`nsenter --net=`), so cni0 and every pod address stay out of the root namespace; its
//! configuration, storage and state live in a temp directory.

mod common;

use std::path::{Path, PathBuf};

use common::podman::Podman;
use common::Node;
use serde_json::json;

/// The single-node scenario: two containers talk, `--ip` gives a fixed IP, removing a container
/// releases its IP (on disk and on the bridge). Returns the IPs handed out.
fn single_node_scenario(node: &Node, pm: &Podman) -> Vec<String> {
    pm.start("a", &[]);
    pm.start("b", &[]);
    let (a, b) = (pm.ip("a"), pm.ip("b"));
    assert!(a.starts_with("10.244.8.") && b.starts_with("10.244.8."), "{a} {b}");
    assert_ne!(a, b);
    pm.ok(&["exec", "a", "ping", "-c", "2", "-W", "2", &b]);
    pm.ok(&["exec", "b", "ping", "-c", "2", "-W", "2", &a]);
    let addr = pm.ok(&["exec", "b", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{b}/24")), "{addr}");

    pm.start("c", &["--ip", "10.244.8.77"]);
    assert_eq!(pm.ip("c"), "10.244.8.77");
    pm.ok(&["exec", "a", "ping", "-c", "1", "-W", "2", "10.244.8.77"]);
    let store = node.data_dir().join("linen");
    assert!(store.join("10.244.8.77").exists());
    let ports = node.bridge_ports().len();
    assert_eq!(ports, 3);

    pm.ok(&["rm", "-f", "-t", "0", "c"]);
    assert!(!store.join("10.244.8.77").exists(), "IP released on disk");
    assert_eq!(node.bridge_ports().len(), 2, "host end removed from the bridge");
    // The released address can be taken again.
    pm.start("d", &["--ip", "10.244.8.77"]);
    pm.ok(&["exec", "d", "ping", "-c", "1", "-W", "2", &a]);
    pm.ok(&["rm", "-a", "-f", "-t", "0"]);
    let left: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    assert!(left.is_empty(), "no reservations left: {left:?}");
    assert!(node.bridge_ports().is_empty());
    vec![a, b]
}

#[test]
fn podman_with_linen() {
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_linen"));
    let plugin_dir = plugin.parent().unwrap().to_path_buf();
    let node = Node::new("pml");
    // The defaults are /run/flannel/subnet.env and /var/lib/cni/networks; point at the test's.
    let conf = json!({"type": "linen", "subnetFile": node.subnet_file(),
                      "dataDir": node.data_dir(), "capabilities": {"ips": true}});
    // Declared after the node, so dropped (containers removed) before its namespace goes.
    let pm = Podman::new("pml", &node.ns, &[&plugin_dir], conf);
    let ips = single_node_scenario(&node, &pm);
    assert_eq!(ips, vec!["10.244.8.2", "10.244.8.3"]);
}

#[test]
fn podman_with_reference_bridge_and_host_local() {
    let reference = Path::new("/usr/lib/cni");
    assert!(reference.join("bridge").exists(), "containernetworking-plugins installed");
    let node = Node::new("pmr");
    let conf = json!({"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
                      "hairpinMode": true, "mtu": 1450,
                      "ipam": {"type": "host-local",
                               "ranges": [[{"subnet": "10.244.8.0/24", "gateway": "10.244.8.1"}]],
                               "routes": [{"dst": "0.0.0.0/0"}], "dataDir": node.data_dir()}});
    let pm = Podman::new("pmr", &node.ns, &[reference], conf);
    let ips = single_node_scenario(&node, &pm);
    assert_eq!(ips, vec!["10.244.8.2", "10.244.8.3"]);
}
