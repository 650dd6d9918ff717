//! linend in etcd mode (`--datapath tap`) against a real etcd (Debian's `etcd-server`).
//!
//! Every host is a network namespace on one switched underlay (`192.168.77.0/24`, a bridge in a
//! switch namespace): etcd runs in its own namespace at `192.168.77.250`, so linend — which runs
//! inside its node namespace, where 127.0.0.1 is that namespace's own loopback — reaches it over
//! the underlay like a real cluster. Nodes get no fixed subnet: each linend claims one in etcd and
//! writes the subnet file; the test then wires the node's `cni0` gateway and one pod from that
//! file, as the CNI plugin would.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use linen_testbed::etcd::EtcdServer;
use linen_testbed::etcd_nodes::{
    assert_full_mesh, attach, lease_key, parse_leases, stop_linend, subnet_from_file, switch,
    wire_pod, Node,
};
use linen_testbed::TempDir;
use linen_testbed::{wait_for, workspace_bin, Netns, Testbed};

const ETCD_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 250);
const PREFIX: &str = "/coreos.com/network";

fn endpoint() -> String {
    format!("http://{ETCD_IP}:2379")
}

/// The switch, the etcd namespace and etcd itself.
struct Underlay {
    sw: Netns,
    etcd: Netns,
    server: EtcdServer,
}

fn underlay(tb: &mut Testbed) -> Underlay {
    let sw = switch(tb);
    let etcd = attach(tb, &sw, "etcd", ETCD_IP);
    let server = EtcdServer::start_in(&etcd, ETCD_IP, None);
    Underlay { sw, etcd, server }
}

impl Underlay {
    /// Kills etcd; its data stays for [`Underlay::start_etcd`].
    fn stop_etcd(&mut self) {
        self.server.stop();
    }

    /// Starts etcd again on the same data and waits until it is healthy.
    fn start_etcd(&mut self) {
        self.server.restart();
    }

    fn etcdctl_ok(&self, args: &[&str]) -> String {
        self.server.etcdctl_ok(args)
    }

    /// Every lease as (key, value JSON).
    fn leases(&self) -> Vec<(String, serde_json::Value)> {
        let out = self.etcdctl_ok(&["get", "--prefix", &format!("{PREFIX}/subnets/")]);
        parse_leases(&out)
    }
}

/// Node `k` on the underlay, without linend.
fn new_node(tb: &mut Testbed, u: &Underlay, k: u8, dir: &Path) -> Node {
    linen_testbed::etcd_nodes::new_node(tb, &u.sw, k, dir)
}

/// Starts the node's linend against the test's etcd.
fn start_linend(tb: &Testbed, n: &mut Node) {
    linen_testbed::etcd_nodes::start_linend(tb, n, &endpoint(), |_| {});
}

fn add_node(tb: &mut Testbed, u: &Underlay, k: u8, dir: &Path) -> Node {
    let mut n = new_node(tb, u, k, dir);
    start_linend(tb, &mut n);
    wire_pod(&mut n);
    n
}

fn vtep_mac(n: &Node) -> String {
    let out = n.host.sh("cat /sys/class/net/linen.1/address");
    out.trim().to_string()
}

/// A lease value exactly as flanneld writes it.
fn flannel_lease(public_ip: &str, vtep_mac: &str) -> String {
    linen_testbed::flannel::lease_value(public_ip.parse().expect("public IP"), vtep_mac)
}

/// Waits until the node's subnet file names a subnet other than `old`.
fn wait_subnet_change(n: &Node, old: &str) {
    let old_gw = Ipv4Addr::from(
        u32::from(old.split('/').next().and_then(|a| a.parse::<Ipv4Addr>().ok()).expect("subnet"))
            + 1,
    );
    let changed = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&n.subnet_file).ok()?;
        let line = text.lines().find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))?;
        (!line.starts_with(&format!("{old_gw}/"))).then_some(())
    });
    assert!(changed.is_some(), "n{} kept {old}; log:\n{}", n.k, n.log_text());
}

fn write_config(u: &Underlay) {
    write_config_args(u, &[]);
}

fn write_config_args(u: &Underlay, extra: &[&str]) {
    let out = u
        .etcd
        .command(&workspace_bin("linenctl").to_string_lossy())
        .args(["--etcd-endpoints", &endpoint(), "config", "set", "--network", "10.244.0.0/16"])
        .args(extra)
        .output()
        .expect("spawn linenctl");
    assert!(out.status.success(), "linenctl config set: {}", String::from_utf8_lossy(&out.stderr));
}

/// Three nodes claim distinct subnets through etcd and their pods talk; a fourth joins; a deleted
/// lease takes its routes off the other nodes and its owner claims again; a restarted linend
/// keeps its subnet.
#[test]
fn etcd_nodes_claim_subnets_and_follow_each_other() {
    let dir = TempDir::new("netcd");
    let mut tb = Testbed::new("netcd");
    let u = underlay(&mut tb);
    // The network config, as an operator writes it.
    write_config(&u);

    let mut nodes: Vec<Node> = (1..=3).map(|k| add_node(&mut tb, &u, k, &dir.0)).collect();

    // Distinct subnets, flannel-format leases carrying each node's public IP and linen.1's MAC.
    let subnets: std::collections::HashSet<&str> =
        nodes.iter().map(|n| n.subnet.as_str()).collect();
    assert_eq!(subnets.len(), 3, "subnets not distinct: {subnets:?}");
    let leases = u.leases();
    assert_eq!(leases.len(), 3, "{leases:?}");
    for n in &nodes {
        let (_, v) =
            leases.iter().find(|(k, _)| *k == lease_key(PREFIX, &n.subnet)).unwrap_or_else(|| {
                panic!("no lease for n{} at {}: {leases:?}", n.k, lease_key(PREFIX, &n.subnet))
            });
        assert_eq!(v["PublicIP"], n.ip.to_string(), "{v}");
        assert_eq!(v["BackendType"], "vxlan", "{v}");
        assert_eq!(v["BackendData"]["VNI"], 1, "{v}");
        assert_eq!(v["BackendData"]["VtepMAC"], vtep_mac(n), "{v}");
        assert!(v.get("PublicIPv6").is_some_and(serde_json::Value::is_null), "{v}");
    }
    assert_full_mesh(&nodes);

    // A fourth node joins: everyone reaches its pod, it reaches everyone.
    let t = Instant::now();
    nodes.push(add_node(&mut tb, &u, 4, &dir.0));
    assert_full_mesh(&nodes);
    eprintln!("fourth node up and reachable from all in {:?}", t.elapsed());

    // Leases written the way flanneld writes them become routes (and neighbours) on every node,
    // and go away when deleted. n1's log says how long each update took from the watch event to
    // the published route table and the programmed kernel (printed, not asserted).
    let fake: Vec<(String, String)> = (0..20u8)
        .map(|i| {
            let subnet = format!("10.244.{}.0/24", 200 + u32::from(i));
            let value = format!(
                r#"{{"PublicIP":"192.168.77.{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"0a:00:00:00:00:{i:02x}"}}}}"#,
                100 + u32::from(i)
            );
            (subnet, value)
        })
        .collect();
    let updates_before = nodes[0].log_text().matches("routes published").count();
    for (subnet, value) in &fake {
        u.etcdctl_ok(&["put", &lease_key(PREFIX, subnet), value]);
    }
    let last = &fake.last().expect("fake leases").0;
    let routed = wait_for(Duration::from_secs(5), || {
        let r = nodes[0].host.sh(&format!("ip route show {last}"));
        r.contains("dev linen.1").then_some(r)
    });
    assert!(routed.is_some(), "n1 has no route for {last}; log:\n{}", nodes[0].log_text());
    let neigh = nodes[0].host.sh("ip neigh show dev linen.1");
    assert!(neigh.contains("10.244.219.0 lladdr 0a:00:00:00:00:13"), "{neigh}");
    for (subnet, _) in &fake {
        u.etcdctl_ok(&["del", &lease_key(PREFIX, subnet)]);
    }
    let gone = wait_for(Duration::from_secs(5), || {
        nodes[0].host.sh(&format!("ip route show {last}")).trim().is_empty().then_some(())
    });
    assert!(gone.is_some(), "n1 kept its route to {last}");
    let log = nodes[0].log_text();
    let field = |name: &str| -> Vec<u64> {
        let mut v: Vec<u64> = log
            .lines()
            .filter(|l| l.contains("routes published"))
            .skip(updates_before)
            .filter_map(|l| l.split(name).nth(1)?.split_whitespace().next()?.parse().ok())
            .collect();
        v.sort_unstable();
        v
    };
    for (name, what) in
        [("publish_us=", "route table published"), ("total_us=", "+ kernel programmed")]
    {
        let v = field(name);
        if let (Some(min), Some(max)) = (v.first(), v.last()) {
            eprintln!(
                "n1: {} updates, watch event -> {what}: min {min} us, median {} us, max {max} us",
                v.len(),
                v[v.len() / 2]
            );
        }
    }

    // A malformed lease value is skipped with a warning; forwarding and later updates go on.
    u.etcdctl_ok(&["put", &lease_key(PREFIX, "10.244.230.0/24"), "{not json"]);
    let warned = wait_for(Duration::from_secs(5), || {
        nodes[0]
            .log_text()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("malformed") && l.contains("10.244.230.0/24"))
            .then_some(())
    });
    assert!(warned.is_some(), "no warning for the malformed lease; log:\n{}", nodes[0].log_text());
    assert!(nodes[0].host.sh("ip route show 10.244.230.0/24").trim().is_empty());
    u.etcdctl_ok(&["del", &lease_key(PREFIX, "10.244.230.0/24")]);
    assert_full_mesh(&nodes);

    // Deleting n3's lease: its route disappears on n1; n3 claims again and traffic resumes.
    let monitor_out = dir.0.join("n1.monitor");
    let mut mon = nodes[0].host.command("ip");
    mon.args(["-o", "monitor", "route"])
        .stdout(std::fs::File::create(&monitor_out).expect("monitor file"))
        .stderr(Stdio::null());
    let mon_pid = tb.spawn(mon);
    std::thread::sleep(Duration::from_millis(300)); // let the monitor subscribe
    let victim = nodes[2].subnet.clone();
    u.etcdctl_ok(&["del", &lease_key(PREFIX, &victim)]);
    let deleted = wait_for(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&monitor_out).unwrap_or_default();
        text.lines().any(|l| l.starts_with("Deleted") && l.contains(&victim)).then_some(())
    });
    tb.kill(mon_pid);
    assert!(
        deleted.is_some(),
        "n1 kept its route to {victim} after the lease was deleted; monitor:\n{}\nlog:\n{}",
        std::fs::read_to_string(&monitor_out).unwrap_or_default(),
        nodes[0].log_text()
    );
    let back = wait_for(Duration::from_secs(10), || {
        u.leases()
            .iter()
            .any(|(k, v)| {
                *k == lease_key(PREFIX, &victim) && v["PublicIP"] == nodes[2].ip.to_string()
            })
            .then_some(())
    });
    assert!(back.is_some(), "n3 did not claim {victim} again; log:\n{}", nodes[2].log_text());
    assert_full_mesh(&nodes);

    // Another node's lease overwrites n3's key: n3 claims a different subnet, re-addresses
    // linen.1 and rewrites its subnet file; every pod reaches n3's pod at its new address.
    let old = nodes[2].subnet.clone();
    u.etcdctl_ok(&[
        "put",
        &lease_key(PREFIX, &old),
        &flannel_lease("192.168.77.99", "0a:00:00:00:00:99"),
    ]);
    wait_subnet_change(&nodes[2], &old);
    wire_pod(&mut nodes[2]);
    assert_ne!(nodes[2].subnet, old);
    // The subnet file is written when the lease is claimed; linen.1 is re-addressed right after.
    let own = nodes[2].subnet.replace("/24", "/32");
    let readdressed = wait_for(Duration::from_secs(5), || {
        let addr = nodes[2].host.sh("ip -4 -o addr show dev linen.1");
        (addr.contains(&own) && !addr.contains(&old.replace("/24", "/32"))).then_some(())
    });
    let addr = nodes[2].host.sh("ip -4 -o addr show dev linen.1");
    assert!(readdressed.is_some(), "linen.1 not re-addressed to {own}: {addr}");
    assert_full_mesh(&nodes);
    u.etcdctl_ok(&["del", &lease_key(PREFIX, &old)]);

    // Restart n2 without its subnet file: the lease carrying its public IP gives it back its
    // subnet, and a TCP connection from n1's pod to n2's pod outlives the restart.
    let echo = dir.0.join("echo.out");
    let mut server = nodes[1].pod.command("socat");
    server
        .args(["TCP-LISTEN:7000,reuseaddr", "SYSTEM:cat"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    tb.spawn(server);
    let listening = wait_for(Duration::from_secs(5), || {
        nodes[1].pod.sh("ss -ltn").contains(":7000").then_some(())
    });
    assert!(listening.is_some(), "echo server did not start");
    let mut client = nodes[0].pod.command("sh");
    client
        .args([
            "-c",
            &format!(
                "(echo before; sleep 4; echo after; sleep 1) | socat -t 20 - TCP:{}:7000",
                nodes[1].pod_ip()
            ),
        ])
        .stdout(std::fs::File::create(&echo).expect("echo file"))
        .stderr(Stdio::null());
    tb.spawn(client);
    let first = wait_for(Duration::from_secs(5), || {
        std::fs::read_to_string(&echo).unwrap_or_default().contains("before").then_some(())
    });
    assert!(first.is_some(), "no echo before the restart");
    let before = nodes[1].subnet.clone();
    stop_linend(&tb, &mut nodes[1]);
    assert!(
        !std::fs::read_to_string(&echo).unwrap_or_default().contains("after"),
        "the client finished before n2's linend was down; the restart proves nothing"
    );
    std::fs::remove_file(&nodes[1].subnet_file).expect("remove n2's subnet file");
    start_linend(&tb, &mut nodes[1]);
    assert_eq!(subnet_from_file(&nodes[1]), before, "n2 changed subnet across a restart");
    let after = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&echo).unwrap_or_default().contains("after").then_some(())
    });
    assert!(
        after.is_some(),
        "the TCP connection did not survive n2's restart: {:?}\nn2 log:\n{}",
        std::fs::read_to_string(&echo).unwrap_or_default(),
        nodes[1].log_text()
    );
    assert_eq!(u.leases().len(), 4);
    assert_full_mesh(&nodes);

    for n in &mut nodes {
        stop_linend(&tb, n);
    }
    let names: Vec<String> = tb.namespaces().iter().map(|n| n.name.clone()).collect();
    drop(tb);
    let left = linen_testbed::run("ip", &["netns", "list"]);
    for n in names {
        assert!(!left.contains(&n), "namespace {n} left behind");
    }
}

/// etcd goes away: pod traffic keeps flowing on the last routes, linend says etcd is
/// unreachable, and after etcd is back a new lease reaches both nodes' routes.
#[test]
fn etcd_outage_keeps_forwarding_and_resyncs() {
    let dir = TempDir::new("netcdo");
    let mut tb = Testbed::new("netcdo");
    let mut u = underlay(&mut tb);
    write_config(&u);
    let mut nodes: Vec<Node> = (1..=2).map(|k| add_node(&mut tb, &u, k, &dir.0)).collect();
    assert_full_mesh(&nodes);

    u.stop_etcd();
    let reported = wait_for(Duration::from_secs(20), || {
        nodes[0].log_text().contains("etcd unreachable").then_some(())
    });
    assert!(reported.is_some(), "n1 did not report the outage; log:\n{}", nodes[0].log_text());
    let out = nodes[0].pod.sh_output(&format!("ping -c 15 -i 0.2 -W 1 {}", nodes[1].pod_ip()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("15 received"),
        "pod traffic stalled during the etcd outage: {text}"
    );
    let not_ready =
        wait_for(Duration::from_secs(15), || (ready(&nodes[0]) == Some(false)).then_some(()));
    assert!(not_ready.is_some(), "n1's /readyz did not report the etcd outage");

    u.start_etcd();
    // Ready again without any lease change: the daemon's own etcd check notices the recovery.
    let ready_again =
        wait_for(Duration::from_secs(20), || (ready(&nodes[0]) == Some(true)).then_some(()));
    assert!(
        ready_again.is_some(),
        "n1 not ready again after etcd came back; log:\n{}",
        nodes[0].log_text()
    );
    let subnet = "10.244.250.0/24";
    u.etcdctl_ok(&[
        "put",
        &lease_key(PREFIX, subnet),
        &flannel_lease("192.168.77.98", "0a:00:00:00:00:98"),
    ]);
    for n in &nodes {
        let routed = wait_for(Duration::from_secs(20), || {
            n.host.sh(&format!("ip route show {subnet}")).contains("dev linen.1").then_some(())
        });
        assert!(
            routed.is_some(),
            "n{} did not resync after etcd came back; log:\n{}",
            n.k,
            n.log_text()
        );
    }
    assert_full_mesh(&nodes);
    for n in &mut nodes {
        stop_linend(&tb, n);
    }
}

/// Whether the node's API says it is ready (`linenctl status`), `None` when it does not answer.
fn ready(n: &Node) -> Option<bool> {
    let ctl = linen_testbed::workspace_bin("linenctl");
    let out = n.host.sh_output(&format!("{} status --json", ctl.display()));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["status"]["ready"].as_bool()
}

/// Two linends starting together in a network with room for exactly two subnets: whoever loses
/// the race for a subnet takes the other one, so both end with distinct subnets and talk.
#[test]
fn racing_nodes_end_with_distinct_subnets() {
    let dir = TempDir::new("netcdr");
    let mut tb = Testbed::new("netcdr");
    let u = underlay(&mut tb);
    write_config_args(&u, &["--subnet-min", "10.244.1.0", "--subnet-max", "10.244.2.0"]);
    let mut nodes: Vec<Node> = (1..=2).map(|k| new_node(&mut tb, &u, k, &dir.0)).collect();
    for n in &mut nodes {
        start_linend(&tb, n);
    }
    for n in &mut nodes {
        wire_pod(n);
    }
    let mut got: Vec<&str> = nodes.iter().map(|n| n.subnet.as_str()).collect();
    got.sort_unstable();
    assert_eq!(got, ["10.244.1.0/24", "10.244.2.0/24"]);
    assert_eq!(u.leases().len(), 2);
    assert_full_mesh(&nodes);
    for n in &mut nodes {
        stop_linend(&tb, n);
    }
}
