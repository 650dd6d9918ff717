//! A real runtime across the overlay: two netns nodes on one underlay, `linend --static-peers`
//! on each (it writes the node's subnet.env and carries traffic between the pod subnets), and on
//! each node Debian's podman 4.3 with the CNI backend, run inside the node's namespace
//! (`nsenter --net=`), whose `linen` network reads that subnet.env. One busybox container per
//! node; they ping and talk TCP to each other across the overlay, then removing them leaves no
//! reservation, no bridge port and no network namespace behind.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::podman::Podman;
use common::TempDir;
use linen_testbed::cluster::{ClusterBuilder, Node as ClusterNode, Overlay};
use linen_testbed::wait_for;
use serde_json::json;

/// The node's `linen` IPAM store: `<dataDir>/<network name>`.
fn store(ipam: &Path, node: &ClusterNode) -> PathBuf {
    ipam.join(&node.name).join("linen")
}

fn reservations(store: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(store) else { return Vec::new() };
    let mut v: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::Ipv4Addr>().is_ok())
        .collect();
    v.sort();
    v
}

fn bridge_ports(node: &ClusterNode) -> Vec<String> {
    let out = node.host.sh("ip -o link show master cni0 2>/dev/null || true");
    out.lines().filter_map(|l| l.split(": ").nth(1)).map(str::to_string).collect()
}

/// Frames linend on `node` has sent so far (0 before its first stats file).
fn linend_tx(node: &ClusterNode) -> u64 {
    let stats = node.linend.as_ref().and_then(|l| l.worker_stats());
    stats.and_then(|w| w["tx"].as_u64()).unwrap_or(0)
}

#[test]
fn podman_containers_on_two_linend_nodes_talk_across_the_overlay() {
    let t0 = Instant::now();
    // Declared first, so dropped last: the podman setups below remove their containers while
    // the node namespaces still exist.
    let cluster = ClusterBuilder::new("pmo")
        .nodes(2, Overlay::linen("auto"))
        .pods_per_node(0)
        .build()
        .unwrap_or_else(|e| panic!("cluster: {e}"));
    let nodes = cluster.nodes();
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_linen"));
    let plugin_dir = plugin.parent().unwrap().to_path_buf();
    let ipam = TempDir::new("pmo-ipam");

    let mut pms = Vec::new();
    for node in nodes {
        let subnet_file = cluster.dir().join(format!("{}.subnet.env", node.name));
        let written = wait_for(Duration::from_secs(5), || {
            let text = std::fs::read_to_string(&subnet_file).ok()?;
            text.contains("FLANNEL_SUBNET=").then_some(text)
        });
        let text = written.unwrap_or_else(|| {
            panic!("linend on {} wrote no {}", node.name, subnet_file.display())
        });
        assert!(
            text.contains(&format!("FLANNEL_SUBNET=10.244.{}.1/24", node.index)),
            "{}: {text}",
            node.name
        );
        let conf = json!({"type": "linen", "subnetFile": subnet_file,
                          "dataDir": ipam.0.join(&node.name), "capabilities": {"ips": true}});
        pms.push(Podman::new(&format!("pmo{}", node.name), &node.host, &[&plugin_dir], conf));
    }
    let (pa, pb) = (&pms[0], &pms[1]);
    let (na, nb) = (&nodes[0], &nodes[1]);

    pa.start("a", &[]);
    pb.start("b", &[]);
    let (a, b) = (pa.ip("a"), pb.ip("b"));
    assert!(a.starts_with("10.244.1."), "container a on n1 got {a}");
    assert!(b.starts_with("10.244.2."), "container b on n2 got {b}");
    let addr = pb.ok(&["exec", "b", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{b}/24")), "{addr}");
    assert_eq!(reservations(&store(&ipam.0, na)), vec![a.clone()]);
    assert_eq!(reservations(&store(&ipam.0, nb)), vec![b.clone()]);
    let (sandbox_a, sandbox_b) = (pa.sandbox("a"), pb.sandbox("b"));
    assert!(Path::new(&sandbox_a).exists() && Path::new(&sandbox_b).exists());

    let ids =
        [pa.ok(&["inspect", "-f", "{{.Id}}", "a"]), pb.ok(&["inspect", "-f", "{{.Id}}", "b"])];
    let cache = |id: &String| Path::new("/var/lib/cni/results").join(format!("linen-{id}-eth0"));
    for id in &ids {
        assert!(cache(id).exists(), "podman keeps ADD's result at {}", cache(id).display());
    }
    let tx_before: Vec<u64> = nodes.iter().map(linend_tx).collect();

    // Across the overlay, both ways: the first echo may race the overlay's setup, then every
    // one of three must come back.
    assert!(pa.wait_ping("a", &b, Duration::from_secs(10)), "a ({a}) never reached b ({b})");
    pa.ok(&["exec", "a", "ping", "-c", "3", "-W", "2", &b]);
    assert!(pb.wait_ping("b", &a, Duration::from_secs(10)), "b ({b}) never reached a ({a})");
    pb.ok(&["exec", "b", "ping", "-c", "3", "-W", "2", &a]);

    // A TCP exchange: b listens, a connects (retried until b's listener is up), each side
    // sends a line and receives the other's.
    pb.ok(&["exec", "-d", "b", "sh", "-c", "echo from-b | timeout 15 nc -l -p 7777 > /tmp/got"]);
    let reply = wait_for(Duration::from_secs(10), || {
        let out = pa.run(&[
            "exec",
            "a",
            "sh",
            "-c",
            &format!("echo from-a | timeout 5 nc -w 2 {b} 7777"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    });
    assert_eq!(reply.as_deref(), Some("from-b"), "a's TCP reply from b");
    let got = wait_for(Duration::from_secs(5), || {
        let text = pb.ok(&["exec", "b", "cat", "/tmp/got"]);
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(got.as_deref(), Some("from-a"), "what b received over TCP");

    // The traffic went through linend on both nodes (its stats file is rewritten every 100 ms).
    for (node, before) in nodes.iter().zip(&tx_before) {
        let grew = wait_for(Duration::from_secs(2), || (linend_tx(node) > *before).then_some(()));
        assert!(grew.is_some(), "linend on {} forwarded nothing", node.name);
    }

    // Removal releases everything: the reservation, the bridge port, podman's namespace.
    pa.ok(&["rm", "-f", "-t", "0", "a"]);
    pb.ok(&["rm", "-f", "-t", "0", "b"]);
    for (pm, node) in [(pa, na), (pb, nb)] {
        assert!(pm.containers().is_empty(), "{}: containers left", node.name);
        let left = reservations(&store(&ipam.0, node));
        assert!(left.is_empty(), "{}: reservations left: {left:?}", node.name);
        let ports = bridge_ports(node);
        assert!(ports.is_empty(), "{}: cni0 ports left: {ports:?}", node.name);
    }
    for sandbox in [&sandbox_a, &sandbox_b] {
        assert!(!Path::new(sandbox).exists(), "podman's namespace {sandbox} left behind");
    }
    // libcni's result cache is the one thing podman keeps outside its temp directory.
    for id in &ids {
        assert!(!cache(id).exists(), "{} left behind", cache(id).display());
    }
    // linend kept running throughout.
    for node in nodes {
        let l = node.linend.as_ref().expect("linend");
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", l.pid)).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|r| r.chars().next());
        assert!(
            matches!(state, Some(s) if s != 'Z' && s != 'X'),
            "linend on {} died:\n{}",
            node.name,
            l.log_text()
        );
    }
    eprintln!("podman overlay scenario: {:.1} s", t0.elapsed().as_secs_f64());
}
