//! `linend --ip-masq` and `--can-reach` on a netns cluster (`--datapath tap`; the static-mode
//! masquerade test also runs on `xdp`).
//!
//! The masquerade tests add an "external" host to the cluster's switched underlay: a namespace
//! at [`EXT_IP`] with a veth into the switch's bridge, which is no node and has no route to the
//! pod network. A TCP listener there (socat) answers every connection with the peer address it
//! saw, so a pod that connects learns which source address left the node. The same listener in
//! a pod shows that pod-to-pod traffic keeps the pod's address.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use linen_testbed::cluster::{running, Cluster, ClusterBuilder, Overlay, ETCD_PREFIX};
use linen_testbed::{wait_for, workspace_bin, Netns, Testbed};

/// The external host's underlay address.
const EXT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 200);
/// The port of the peer-address echo listeners.
const ECHO_PORT: u16 = 9000;

/// The switch namespace of a switched cluster (`<testbed>-sw`, beside `<testbed>-n1`).
fn switch_of(c: &Cluster) -> Netns {
    let n1 = &c.nodes()[0].host.name;
    let base = n1.strip_suffix("-n1").expect("node namespace name ends in -n1");
    Netns { name: format!("{base}-sw") }
}

/// Adds the external host to the cluster's switch (namespaces in `tb`, removed with it).
fn external_host(tb: &mut Testbed, c: &Cluster) -> Netns {
    let sw = switch_of(c);
    let ext = tb.netns("ext");
    tb.veth(&ext, "eth0", &sw, "pext");
    sw.sh("ip link set pext master br0 && ethtool -K pext tx off >/dev/null");
    ext.sh(&format!("ip addr add {EXT_IP}/24 dev eth0 && ethtool -K eth0 tx off >/dev/null"));
    ext
}

/// Starts a listener in `ns` that answers each TCP connection with the peer's address.
fn echo_peer_listener(tb: &Testbed, ns: &Netns) {
    let mut cmd = ns.command("socat");
    cmd.arg(format!("TCP4-LISTEN:{ECHO_PORT},reuseaddr,fork"))
        .arg("SYSTEM:echo $SOCAT_PEERADDR")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    tb.spawn(cmd);
}

/// Connects from `from` (optionally from the local address `bind`) to the echo listener on
/// `to` until it answers (up to 10 s); returns the address the listener saw.
fn seen_source(from: &Netns, to: Ipv4Addr, bind: Option<Ipv4Addr>) -> String {
    let bind = bind.map(|b| format!(",bind={b}")).unwrap_or_default();
    let script =
        format!("socat -t 2 -T 3 STDIO TCP4:{to}:{ECHO_PORT},connect-timeout=1{bind} </dev/null");
    wait_for(Duration::from_secs(10), || {
        let out = from.sh_output(&script);
        let seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !seen.is_empty()).then_some(seen)
    })
    .unwrap_or_else(|| {
        let out = from.sh_output(&script);
        panic!(
            "{} got no answer from {to}:{ECHO_PORT}: {}",
            from.name,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn nft_table(ns: &Netns) -> Option<String> {
    let out = ns.sh_output("nft list table ip linen");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn has_table(ns: &Netns) -> bool {
    ns.sh("nft list tables").lines().any(|l| l.trim() == "table ip linen")
}

/// Static-peers mode, TAP datapath: see [`static_mode`].
#[test]
fn static_mode_tap_masquerades_outbound_only_and_keeps_the_table() {
    static_mode("masqt", "tap");
}

/// Static-peers mode, AF_XDP datapath (replies to masqueraded traffic are not VXLAN, so the
/// underlay's XDP program passes them to the kernel, which undoes the NAT): see [`static_mode`].
#[test]
fn static_mode_xdp_masquerades_outbound_only_and_keeps_the_table() {
    static_mode("masqx", "xdp");
}

/// Three nodes (two linen on `datapath`, one kernel VXLAN) and an external host: pods reach
/// the external host as their node, pods reach pods as themselves, the external host reaches a
/// pod as itself, the node's own traffic to remote pods is masqueraded; a table deleted or
/// edited by hand is rewritten within the resync interval and SIGTERM removes it.
fn static_mode(tag: &str, datapath: &str) {
    let t0 = Instant::now();
    let c = ClusterBuilder::new(tag)
        .node(Overlay::linen(datapath))
        .node(Overlay::linen(datapath))
        .node(Overlay::KernelVxlan)
        .pods_per_node(1)
        .linend(workspace_bin("linend"))
        .linend_arg("--ip-masq")
        .linend_arg("--ip-masq-resync")
        .linend_arg("1")
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tb = Testbed::new(&format!("{tag}e"));
    let ext = external_host(&mut tb, &c);
    let nodes = c.nodes();
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);

    // The rules are in the node's namespace, rendered for the network and n1's subnet.
    let table = nft_table(&n1.host).expect("table ip linen on n1");
    for rule in [
        "type nat hook postrouting priority srcnat; policy accept;",
        "ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return",
        "ip saddr 10.244.0.0/16 ip daddr 10.244.1.0/24 return",
        "ip saddr != 10.244.0.0/16 ip daddr 10.244.1.0/24 return",
        "ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random",
        "ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random",
    ] {
        assert!(table.contains(rule), "`{rule}` missing from\n{table}");
    }
    assert!(nft_table(&n2.host).expect("table on n2").contains("ip daddr 10.244.2.0/24 return"));
    assert!(!has_table(&n3.host), "the kernel-VXLAN node runs no linend");
    let subnet_file = std::fs::read_to_string(c.dir().join("n1.subnet.env")).unwrap();
    assert!(subnet_file.contains("FLANNEL_IPMASQ=true"), "{subnet_file}");

    echo_peer_listener(&tb, &ext);
    echo_peer_listener(c.testbed(), &n2.pods[0]);
    echo_peer_listener(c.testbed(), &n3.pods[0]);
    echo_peer_listener(c.testbed(), &n1.pods[0]);

    // Pod → outside: the external host sees the node's underlay address.
    assert_eq!(seen_source(&n1.pods[0], EXT_IP, None), n1.ip.to_string());
    assert_eq!(seen_source(&n2.pods[0], EXT_IP, None), n2.ip.to_string());
    // Pod → pod on other nodes (linen and kernel VXLAN): no NAT.
    assert_eq!(seen_source(&n1.pods[0], n2.pod_ip(0), None), n1.pod_ip(0).to_string());
    assert_eq!(seen_source(&n1.pods[0], n3.pod_ip(0), None), n1.pod_ip(0).to_string());
    assert_eq!(seen_source(&n2.pods[0], n1.pod_ip(0), None), n2.pod_ip(0).to_string());
    // Outside → our pod: the pod sees the external host's own address.
    ext.sh(&format!("ip route add {} via {}", n1.subnet(), n1.ip));
    assert_eq!(seen_source(&ext, n1.pod_ip(0), None), EXT_IP.to_string());
    // The node itself (from its underlay address) → a remote pod: masqueraded to linen.1's
    // address, as flannel does for host traffic into the overlay.
    assert_eq!(seen_source(&n1.host, n2.pod_ip(0), Some(n1.ip)), "10.244.1.0");

    // Deleted by hand: restored within the 1 s resync (allow a few).
    n1.host.sh("nft delete table ip linen");
    let restored = wait_for(Duration::from_secs(5), || has_table(&n1.host).then_some(()));
    let log = n1.linend.as_ref().unwrap().log_text();
    assert!(restored.is_some(), "table not restored:\n{log}");
    let restored_log = wait_for(Duration::from_secs(2), || {
        n1.linend
            .as_ref()
            .unwrap()
            .log_text()
            .contains("masquerade table was missing")
            .then_some(())
    });
    assert!(restored_log.is_some(), "no log line about the restore:\n{log}");
    assert_eq!(nft_table(&n1.host).as_deref(), Some(table.as_str()));
    // A rule added by hand is undone too.
    n1.host.sh("nft add rule ip linen postrouting ip daddr 198.51.100.1 accept");
    let rewritten = wait_for(Duration::from_secs(5), || {
        (nft_table(&n1.host).as_deref() == Some(table.as_str())).then_some(())
    });
    assert!(rewritten.is_some(), "hand-added rule not removed: {:?}", nft_table(&n1.host));
    assert_eq!(seen_source(&n1.pods[0], EXT_IP, None), n1.ip.to_string());
    // The node API counts both restores and reports the rules in place.
    let metrics =
        n1.host.sh("printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' | socat - TCP:127.0.0.1:9472");
    let sample = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse::<f64>().ok())
    };
    assert_eq!(sample("linen_ip_masq_enabled"), Some(1.0), "{metrics}");
    assert_eq!(sample("linen_ip_masq_rules_ok"), Some(1.0), "{metrics}");
    assert!(sample("linen_ip_masq_restores_total") >= Some(2.0), "{metrics}");

    // SIGTERM: the table goes with linend.
    assert!(c.stop_linend(Duration::from_secs(5)).is_empty(), "linend ignored SIGTERM");
    assert!(!has_table(&n1.host), "table left after SIGTERM: {:?}", nft_table(&n1.host));
    assert!(!has_table(&n2.host), "table left after SIGTERM");
    let log = n1.linend.as_ref().unwrap().log_text();
    assert!(log.contains("masquerade table ip linen removed"), "{log}");
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
}

/// etcd mode: the rules follow the config's Network; when the config in etcd changes, the
/// table is rebuilt within the resync interval and outbound NAT keeps working.
#[test]
fn etcd_mode_rules_follow_the_network_config() {
    let t0 = Instant::now();
    let c = ClusterBuilder::new("masqe")
        .nodes(2, Overlay::linen("tap"))
        .pods_per_node(1)
        .linend(workspace_bin("linend"))
        .linend_arg("--ip-masq")
        .linend_arg("--ip-masq-resync")
        .linend_arg("1")
        .etcd()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tb = Testbed::new("masqex");
    let ext = external_host(&mut tb, &c);
    let (n1, n2) = (&c.nodes()[0], &c.nodes()[1]);
    echo_peer_listener(&tb, &ext);
    echo_peer_listener(c.testbed(), &n2.pods[0]);

    let table = nft_table(&n1.host).expect("table ip linen on n1");
    assert!(table.contains("ip saddr 10.244.1.0/24 ip daddr 10.244.0.0/16 return"), "{table}");
    assert_eq!(seen_source(&n1.pods[0], EXT_IP, None), n1.ip.to_string());
    assert_eq!(seen_source(&n1.pods[0], n2.pod_ip(0), None), n1.pod_ip(0).to_string());

    let config = r#"{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;
    c.etcdctl(&["put", &format!("{ETCD_PREFIX}/config"), config]).unwrap();
    let rebuilt = wait_for(Duration::from_secs(6), || {
        let t = nft_table(&n1.host)?;
        t.contains("ip saddr 10.244.1.0/24 ip daddr 10.0.0.0/8 return").then_some(t)
    });
    let log = n1.linend.as_ref().unwrap().log_text();
    let rebuilt = rebuilt.unwrap_or_else(|| panic!("rules did not follow the config:\n{log}"));
    assert!(!rebuilt.contains("10.244.0.0/16"), "{rebuilt}");
    let logged = wait_for(Duration::from_secs(2), || {
        n1.linend.as_ref().unwrap().log_text().contains("masquerade rules rebuilt").then_some(())
    });
    assert!(logged.is_some(), "{log}");
    assert_eq!(seen_source(&n1.pods[0], EXT_IP, None), n1.ip.to_string());
    assert_eq!(seen_source(&n1.pods[0], n2.pod_ip(0), None), n1.pod_ip(0).to_string());

    assert!(c.stop_linend(Duration::from_secs(5)).is_empty(), "linend ignored SIGTERM");
    assert!(!has_table(&n1.host) && !has_table(&n2.host), "table left after SIGTERM");
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
}

/// `--can-reach`: node n1 gets a second interface on another subnet that carries its default
/// route, and its static-peers file no longer fixes its public IP, so the default-route rule
/// would pick the wrong NIC. linend with `--can-reach <n2's underlay address>` picks `eth0`
/// and `192.168.77.1`, and pods on both nodes reach each other through it.
#[test]
fn can_reach_picks_the_underlay_of_a_two_nic_node() {
    let t0 = Instant::now();
    let c = ClusterBuilder::new("canr")
        .nodes(2, Overlay::linen("tap"))
        .pods_per_node(1)
        .linend(workspace_bin("linend"))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let (n1, n2) = (&c.nodes()[0], &c.nodes()[1]);
    let mut tb = Testbed::new("canrx");
    let mgmt = tb.netns("mgmt");

    // Replace n1's linend: stop the one the builder started (it removes linen.1).
    let old = n1.linend.as_ref().unwrap().pid;
    n1.host.sh(&format!("kill -TERM {old}"));
    assert!(wait_for(Duration::from_secs(5), || (!running(old)).then_some(())).is_some());
    tb.veth(&n1.host, "eth1", &mgmt, "eth0");
    mgmt.sh("ip addr add 172.31.0.254/24 dev eth0");
    n1.host.sh("ip addr add 172.31.0.1/24 dev eth1 && ip route add default via 172.31.0.254");
    let default = n1.host.sh("ip route show default");
    assert!(
        default.contains("dev eth1"),
        "setup: the default route must not be the underlay: {default}"
    );

    // A masquerade table left by an earlier run with --ip-masq goes when linend starts without.
    n1.host.sh("nft add table ip linen && nft add chain ip linen postrouting");
    assert!(has_table(&n1.host));

    let peers = c.dir().join("n1-canreach.peers.json");
    let json = serde_json::json!({
        "network": "10.244.0.0/16",
        "subnet": n1.subnet(),
        "vtep_mac": n1.vtep_mac,
        "peers": [{ "subnet": n2.subnet(), "public_ip": n2.ip.to_string(), "vtep_mac": n2.vtep_mac }],
    });
    std::fs::write(&peers, json.to_string()).unwrap();
    let log = c.dir().join("n1-canreach.log");
    let stats = c.dir().join("n1-canreach.stats.json");
    let mut cmd = n1.host.command(&workspace_bin("linend").to_string_lossy());
    cmd.arg("--static-peers")
        .arg(&peers)
        .args(["--datapath", "tap", "--can-reach", &n2.ip.to_string()])
        .arg("--subnet-file")
        .arg(c.dir().join("n1-canreach.subnet.env"))
        .arg("--stats-file")
        .arg(&stats)
        .args(["--stats-interval-ms", "100"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let pid = c.testbed().spawn(cmd);
    let up = wait_for(Duration::from_secs(10), || stats.exists().then_some(()));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(up.is_some() && running(pid), "linend --can-reach did not start:\n{text}");
    let chosen = text.lines().find(|l| l.contains("underlay chosen by --can-reach"));
    let chosen = chosen.unwrap_or_else(|| panic!("no --can-reach log line:\n{text}"));
    assert!(chosen.contains("iface=eth0") && chosen.contains("public_ip=192.168.77.1"), "{chosen}");
    assert!(!has_table(&n1.host), "stale masquerade table kept");
    assert!(
        text.contains("removed the masquerade table ip linen left by an earlier run"),
        "{text}"
    );
    assert!(c.wait_reachable(&n1.pods[0], n2.pod_ip(0), Duration::from_secs(5)), "{text}");
    assert!(c.wait_reachable(&n2.pods[0], n1.pod_ip(0), Duration::from_secs(5)), "{text}");

    // A local address is refused with a clear error.
    let out = n1
        .host
        .command(&workspace_bin("linend").to_string_lossy())
        .args(["--static-peers"])
        .arg(&peers)
        .args(["--datapath", "tap", "--can-reach", "172.31.0.1", "--metrics-addr", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("address of this node"), "{err}");
    // --can-reach with --iface is a usage error.
    let out = n1
        .host
        .command(&workspace_bin("linend").to_string_lossy())
        .args(["--can-reach", "192.168.77.2", "--iface", "eth0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cannot be used with"), "{err}");

    n1.host.sh(&format!("kill -TERM {pid}"));
    assert!(wait_for(Duration::from_secs(5), || (!running(pid)).then_some(())).is_some());
    assert!(t0.elapsed() < Duration::from_secs(30), "took {:?}", t0.elapsed());
}
