//! Every operation and error code by direct invocation: CHECK, GC, STATUS, fixed IPs, DEL
//! idempotence, every spec version's result shape, chained prevResult, failures that undo.

mod common;

use common::{first_ip, Node};
use serde_json::json;

#[test]
fn error_codes_for_bad_input() {
    let mut node = Node::new("cnie");
    let p = node.pod("p");
    let conf = node.conf("1.0.0", json!({}));
    // 6: stdin is not JSON.
    let r = node.invoke(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", &p.path()),
            ("CNI_IFNAME", "eth0"),
        ],
        "{not json",
    );
    r.err(6);
    // 4: environment missing.
    node.invoke(
        &[("CNI_COMMAND", "ADD"), ("CNI_NETNS", &p.path()), ("CNI_IFNAME", "eth0")],
        &conf.to_string(),
    )
    .err(4);
    node.invoke(
        &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")],
        &conf.to_string(),
    )
    .err(4);
    node.invoke(
        &[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", &p.path())],
        &conf.to_string(),
    )
    .err(4);
    node.invoke(&[], &conf.to_string()).err(4);
    node.invoke(&[("CNI_COMMAND", "FROB")], &conf.to_string()).err(4);
    node.cmd("ADD", "c", "/var/run/netns/lt-does-not-exist", "eth0", &conf).err(4);
    // 7: invalid configuration values.
    node.cmd("ADD", "c", &p.path(), "eth0", &node.conf("1.0.0", json!({"mode": "ipvlan"}))).err(7);
    node.cmd(
        "ADD",
        "c",
        &p.path(),
        "eth0",
        &node.conf("1.0.0", json!({"bridge": "a-name-far-too-long"})),
    )
    .err(7);
    node.cmd(
        "ADD",
        "c",
        &p.path(),
        "eth0",
        &node.conf("1.0.0", json!({"ipam": {"subnet": "10.1.0.0"}})),
    )
    .err(7);
    // 1: unsupported version; the error is written in a version the runtime can read.
    let r = node.cmd("ADD", "c", &p.path(), "eth0", &node.conf("2.0.0", json!({})));
    r.err(1);
    assert_eq!(r.json()["cniVersion"], "1.1.0");
    // Errors are written in the version asked.
    let r = node.cmd("ADD", "c", &p.path(), "eth0", &node.conf("0.4.0", json!({"mode": "x"})));
    assert_eq!(r.json()["cniVersion"], "0.4.0");
    // Nothing was left behind by any of these.
    assert!(node.reservations().is_empty());
    assert!(p.sh("ip -o link show").lines().count() == 1, "only lo in the pod");
}

#[test]
fn unknown_keys_are_ignored_and_cni_args_may_hold_unknown_keys() {
    let mut node = Node::new("cniu");
    let p = node.pod("p");
    let conf = node.conf(
        "1.0.0",
        json!({"someFutureKey": {"x": [1, 2]}, "capabilities": {"ips": true}, "args": {"labels": {"a": "b"}}}),
    );
    let r = node
        .cmd_args(
            "ADD",
            "c1",
            &p.path(),
            "eth0",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;FOO=bar",
            &conf,
        )
        .ok();
    assert_eq!(first_ip(&r), "10.244.8.2");
    assert_eq!(node.cmd("DEL", "c1", &p.path(), "eth0", &conf).status, 0);
}

#[test]
fn result_shape_follows_every_version() {
    let mut node = Node::new("cnis");
    let dns = json!({"nameservers": ["10.96.0.10"], "search": ["svc.local"]});
    for (n, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let p = node.pod(&format!("p{n}"));
        let conf = node.conf(v, json!({"dns": dns}));
        let r = node.add(&format!("c{n}"), &p, &conf);
        assert_eq!(r["cniVersion"], *v);
        let ip = &r["ips"][0];
        if v.starts_with("0.") {
            assert_eq!(ip["version"], "4", "{v}: {r}");
        } else {
            assert!(ip.get("version").is_none(), "{v}: {r}");
        }
        assert_eq!(ip["interface"], 2);
        assert_eq!(ip["gateway"], "10.244.8.1");
        assert_eq!(r["dns"], dns);
        assert_eq!(r["interfaces"][2]["sandbox"], p.path());
        if *v == "1.1.0" {
            assert_eq!(r["interfaces"][2]["mtu"], 1450);
        } else {
            assert!(r["interfaces"][2].get("mtu").is_none());
        }
        assert_eq!(node.cmd("DEL", &format!("c{n}"), &p.path(), "eth0", &conf).status, 0);
    }
}

#[test]
fn chained_prev_result_is_passed_through() {
    let mut node = Node::new("cnic");
    let p = node.pod("p");
    let prev = json!({
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "dummy0", "mac": "02:00:00:00:00:01", "sandbox": p.path()}],
        "ips": [{"version": "4", "address": "192.168.77.2/24", "interface": 0}],
        "routes": [{"dst": "192.168.0.0/16"}],
        "dns": {"nameservers": ["192.168.77.1"]}
    });
    let conf = node.conf("0.4.0", json!({"prevResult": prev}));
    let r = node.add("c1", &p, &conf);
    assert_eq!(r["interfaces"][0]["name"], "dummy0");
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 4);
    assert_eq!(r["ips"][0]["address"], "192.168.77.2/24");
    assert_eq!(r["ips"][1]["interface"], 3);
    assert_eq!(r["ips"][1]["version"], "4");
    assert_eq!(r["routes"][0]["dst"], "192.168.0.0/16");
    assert_eq!(r["dns"]["nameservers"][0], "192.168.77.1");
    assert_eq!(node.cmd("DEL", "c1", &p.path(), "eth0", &conf).status, 0);
}

#[test]
fn fixed_ips_from_cni_args_runtime_config_and_args() {
    let mut node = Node::new("cnif");
    let (p1, p2, p3, p4) = (node.pod("p1"), node.pod("p2"), node.pod("p3"), node.pod("p4"));
    let conf = node.conf("1.0.0", json!({}));
    let r = node
        .cmd_args("ADD", "c1", &p1.path(), "eth0", "IgnoreUnknown=1;IP=10.244.8.50", &conf)
        .ok();
    assert_eq!(first_ip(&r), "10.244.8.50");
    let conf_rc = node.conf("1.0.0", json!({"runtimeConfig": {"ips": ["10.244.8.51/24"]}}));
    assert_eq!(first_ip(&node.add("c2", &p2, &conf_rc)), "10.244.8.51");
    let conf_args = node.conf("1.0.0", json!({"args": {"cni": {"ips": ["10.244.8.52"]}}}));
    assert_eq!(first_ip(&node.add("c3", &p3, &conf_args)), "10.244.8.52");
    assert!(p3.sh("ip -4 -o addr show eth0").contains("10.244.8.52/24"));

    // Taken: own code, names the holder; out of range and the gateway: code 7.
    let msg = node.cmd_args("ADD", "c4", &p4.path(), "eth0", "IP=10.244.8.50", &conf).err(102);
    assert!(msg.contains("c1"), "{msg}");
    node.cmd_args("ADD", "c4", &p4.path(), "eth0", "IP=10.245.0.9", &conf).err(7);
    node.cmd_args("ADD", "c4", &p4.path(), "eth0", "IP=10.244.8.1", &conf).err(7);
    node.cmd_args("ADD", "c4", &p4.path(), "eth0", "IP=banana", &conf).err(7);
    // The failed ADDs left nothing in p4 or on disk.
    assert_eq!(p4.sh("ip -o link show").lines().count(), 1);
    assert_eq!(node.reservations(), vec!["10.244.8.50", "10.244.8.51", "10.244.8.52"]);
    // The round-robin allocator skips the fixed ones' holders but not their neighbourhood.
    assert_eq!(first_ip(&node.add("c4", &p4, &conf)), "10.244.8.2");
    for (id, p) in [("c1", &p1), ("c2", &p2), ("c3", &p3), ("c4", &p4)] {
        assert_eq!(node.cmd("DEL", id, &p.path(), "eth0", &conf).status, 0);
    }
    assert!(node.reservations().is_empty());
}

#[test]
fn del_is_idempotent_and_needs_no_netns() {
    let mut node = Node::new("cnid");
    let p1 = node.pod("p1");
    let p2 = node.pod("p2");
    let conf = node.conf("1.0.0", json!({}));
    node.add("c1", &p1, &conf);
    node.add("c2", &p2, &conf);
    // Twice with the netns.
    assert_eq!(node.cmd("DEL", "c1", &p1.path(), "eth0", &conf).status, 0);
    let r = node.cmd("DEL", "c1", &p1.path(), "eth0", &conf);
    assert_eq!(r.status, 0, "{}", r.stdout);
    // CNI_NETNS empty: the host end and the reservation still go.
    assert_eq!(node.cmd("DEL", "c2", "", "eth0", &conf).status, 0);
    assert!(node.reservations().is_empty());
    assert!(node.bridge_ports().is_empty());
    assert!(p2.sh_output("ip link show eth0").status.code() != Some(0), "veth peer went with it");
    // A netns path that no longer exists, and a container never seen.
    assert_eq!(node.cmd("DEL", "c3", "/var/run/netns/lt-gone", "eth0", &conf).status, 0);
    // Before the node even has a subnet.
    std::fs::remove_file(node.subnet_file()).unwrap();
    assert_eq!(node.cmd("DEL", "c9", "", "eth0", &conf).status, 0);
}

#[test]
fn check_notices_missing_address_interface_and_reservation() {
    let mut node = Node::new("cnik");
    let p = node.pod("p");
    let conf = node.conf("1.0.0", json!({}));
    let result = node.add("c1", &p, &conf);
    let check_conf = node.conf("1.0.0", json!({"prevResult": result}));
    let r = node.cmd("CHECK", "c1", &p.path(), "eth0", &check_conf);
    assert_eq!(r.status, 0, "{} {}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "");
    // Without prevResult: invalid configuration.
    node.cmd("CHECK", "c1", &p.path(), "eth0", &conf).err(7);

    p.sh("ip route del default");
    assert!(node.cmd("CHECK", "c1", &p.path(), "eth0", &check_conf).err(103).contains("route"));
    p.sh("ip route add default via 10.244.8.1");
    p.sh("ip addr del 10.244.8.2/24 dev eth0");
    assert!(node
        .cmd("CHECK", "c1", &p.path(), "eth0", &check_conf)
        .err(103)
        .contains("10.244.8.2"));
    // Removing the address also removed the default route through it; put both back.
    p.sh("ip addr add 10.244.8.2/24 dev eth0 && ip route add default via 10.244.8.1");
    let r = node.cmd("CHECK", "c1", &p.path(), "eth0", &check_conf);
    assert_eq!(r.status, 0, "{}", r.stdout);
    std::fs::remove_file(node.store().join("10.244.8.2")).unwrap();
    assert!(node.cmd("CHECK", "c1", &p.path(), "eth0", &check_conf).err(103).contains("IPAM"));
    std::fs::write(node.store().join("10.244.8.2"), "c1\r\neth0").unwrap();
    p.sh("ip link del eth0");
    assert!(node.cmd("CHECK", "c1", &p.path(), "eth0", &check_conf).err(103).contains("missing"));
    assert_eq!(node.cmd("DEL", "c1", &p.path(), "eth0", &conf).status, 0);
    assert!(node.reservations().is_empty());
}

#[test]
fn gc_releases_everything_not_in_the_valid_attachments() {
    let mut node = Node::new("cnig");
    let pods: Vec<_> = (0..4).map(|i| node.pod(&format!("p{i}"))).collect();
    let conf = node.conf("1.1.0", json!({}));
    for (i, p) in pods.iter().enumerate() {
        node.add(&format!("c{i}"), p, &conf);
    }
    // A stale reservation as an older host-local would have written it, and a stale host veth on
    // the bridge that no reservation names (an ADD killed half-way).
    std::fs::write(node.store().join("10.244.8.200"), "ghost\r\neth0").unwrap();
    node.ns.sh("ip link add lnv00000000dead type veth peer name lnvpeer && ip link set lnv00000000dead master cni0");
    let gc = node.conf(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [
            {"containerID": "c0", "ifname": "eth0"},
            {"containerID": "c2", "ifname": "eth0"}
        ]}),
    );
    let r = node.invoke(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")], &gc.to_string());
    assert_eq!(r.status, 0, "{} {}", r.stdout, r.stderr);
    assert_eq!(node.reservations(), vec!["10.244.8.2", "10.244.8.4"]);
    let ports = node.bridge_ports();
    assert_eq!(ports.len(), 2, "{ports:?}");
    assert!(pods[1].sh_output("ip link show eth0").status.code() != Some(0));
    assert!(pods[0].sh_output("ip link show eth0").status.success());
    // Without any list GC refuses (code 7) and releases nothing.
    node.invoke(&[("CNI_COMMAND", "GC")], &node.conf("1.1.0", json!({})).to_string()).err(7);
    assert_eq!(node.reservations(), vec!["10.244.8.2", "10.244.8.4"]);
    // The older key name works too; an empty list releases everything.
    let gc = node
        .conf("1.1.0", json!({"cni.dev/attachments": [{"containerID": "c0", "ifname": "eth0"}]}));
    assert_eq!(node.invoke(&[("CNI_COMMAND", "GC")], &gc.to_string()).status, 0);
    assert_eq!(node.reservations(), vec!["10.244.8.2"]);
    let gc = node.conf("1.1.0", json!({"cni.dev/valid-attachments": []}));
    assert_eq!(node.invoke(&[("CNI_COMMAND", "GC")], &gc.to_string()).status, 0);
    assert!(node.reservations().is_empty());
    assert!(node.bridge_ports().is_empty());
}

#[test]
fn status_is_50_until_the_node_has_a_subnet_and_add_says_try_later() {
    let mut node = Node::new("cnit");
    let p = node.pod("p");
    let conf = node.conf("1.1.0", json!({}));
    std::fs::remove_file(node.subnet_file()).unwrap();
    let msg = node.invoke(&[("CNI_COMMAND", "STATUS")], &conf.to_string()).err(50);
    assert!(msg.contains("subnet.env"), "{msg}");
    node.cmd("ADD", "c1", &p.path(), "eth0", &conf).err(11);
    std::fs::write(node.subnet_file(), common::SUBNET_ENV).unwrap();
    let r = node.invoke(&[("CNI_COMMAND", "STATUS")], &conf.to_string());
    assert_eq!(r.status, 0, "{}", r.stdout);
    assert_eq!(r.stdout, "");
    node.add("c1", &p, &conf);
    // A subnet.env that does not parse: still not available.
    std::fs::write(node.subnet_file(), "FLANNEL_SUBNET=garbage\n").unwrap();
    node.invoke(&[("CNI_COMMAND", "STATUS")], &conf.to_string()).err(50);
    assert_eq!(node.cmd("DEL", "c1", &p.path(), "eth0", &conf).status, 0);
}

#[test]
fn ipam_config_overrides_ranges_and_routes() {
    let mut node = Node::new("cnir");
    let p = node.pod("p");
    let conf = node.conf(
        "1.0.0",
        json!({"mtu": 1400, "ipam": {"ranges": [[{"subnet": "10.50.0.0/24", "rangeStart": "10.50.0.100",
               "rangeEnd": "10.50.0.110", "gateway": "10.50.0.254"}]],
               "routes": [{"dst": "10.60.0.0/16"}]}}),
    );
    std::fs::remove_file(node.subnet_file()).unwrap();
    let r = node.add("c1", &p, &conf);
    assert_eq!(first_ip(&r), "10.50.0.100");
    assert_eq!(r["ips"][0]["gateway"], "10.50.0.254");
    assert_eq!(r["routes"], json!([{"dst": "10.60.0.0/16", "gw": "10.50.0.254"}]));
    assert!(p.sh("ip route").contains("10.60.0.0/16 via 10.50.0.254"));
    assert!(p.sh("ip -o link show eth0").contains("mtu 1400"));
    p.sh("ping -c 1 -W 2 10.50.0.254");
    assert_eq!(node.cmd("DEL", "c1", &p.path(), "eth0", &conf).status, 0);
}

#[test]
fn add_failing_half_way_undoes_everything() {
    let mut node = Node::new("cniw");
    let p = node.pod("p");
    let conf = node.conf("1.0.0", json!({}));
    // eth0 already exists in the pod: creating the veth fails after the IP was reserved.
    p.sh("ip link add eth0 type veth peer name other0");
    let msg = node.cmd("ADD", "c1", &p.path(), "eth0", &conf).err(7);
    assert!(msg.contains("eth0"), "{msg}");
    assert!(node.reservations().is_empty(), "reservation released");
    assert!(node.bridge_ports().is_empty());
    // A route the pod already has: fails after the veth exists, in the pod namespace.
    p.sh("ip link del eth0");
    let conf2 = node.conf(
        "1.0.0",
        json!({"ipam": {"subnet": "10.244.8.0/24", "gateway": "10.244.8.1",
        "routes": [{"dst": "10.70.0.0/16"}, {"dst": "10.70.0.0/16"}]}}),
    );
    node.cmd("ADD", "c1", &p.path(), "eth0", &conf2).err(100);
    assert!(node.reservations().is_empty(), "reservation released");
    assert!(node.bridge_ports().is_empty(), "host veth removed");
    assert_eq!(p.sh("ip -o link show").lines().count(), 1, "pod end removed with the host end");
}
