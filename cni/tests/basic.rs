//! ADD, DEL and VERSION by direct invocation, and traffic between two pods through the bridge.

mod common;

use common::{first_ip, Node};
use serde_json::json;

#[test]
fn two_pods_ping_through_the_bridge_then_del_cleans_up() {
    let mut node = Node::new("cnib");
    let p1 = node.pod("p1");
    let p2 = node.pod("p2");
    let conf = node.conf("1.0.0", json!({}));
    let r1 = node.add("c1", &p1, &conf);
    let r2 = node.add("c2", &p2, &conf);
    let (ip1, ip2) = (first_ip(&r1), first_ip(&r2));
    assert_ne!(ip1, ip2);
    assert_eq!(ip1, "10.244.8.2");

    // Result shape (1.0.0): bridge, host end, pod end with sandbox; ips point at the pod end.
    let ifs = r1["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3);
    assert_eq!(ifs[0]["name"], "cni0");
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], p1.path());
    for i in ifs {
        let mac = i["mac"].as_str().unwrap();
        assert_eq!(mac.len(), 17, "mac {mac}");
    }
    assert_eq!(r1["ips"][0]["interface"], 2);
    assert_eq!(r1["ips"][0]["gateway"], "10.244.8.1");
    assert!(r1["ips"][0].get("version").is_none());
    assert_eq!(r1["routes"][0], json!({"dst": "0.0.0.0/0", "gw": "10.244.8.1"}));
    assert_eq!(r1["cniVersion"], "1.0.0");

    // The pod end is what the result says, with the subnet.env MTU and a default route.
    let link = p1.sh("ip -o link show eth0");
    assert!(link.contains("mtu 1450"), "{link}");
    assert!(link.contains(ifs[2]["mac"].as_str().unwrap()), "{link}");
    assert!(p1.sh("ip -4 -o addr show eth0").contains("10.244.8.2/24"));
    assert!(p1.sh("ip route show default").contains("via 10.244.8.1"));
    assert!(node.ns.sh("ip -4 -o addr show cni0").contains("10.244.8.1/24"));
    assert!(node.ns.sh("ip -d link show").contains("hairpin on"));
    let bridge_link = node.ns.sh("ip -o link show cni0");
    // The bridge's MAC is pinned: every result reports the one it has.
    assert_eq!(r1["interfaces"][0]["mac"], r2["interfaces"][0]["mac"]);
    assert!(bridge_link.contains(r1["interfaces"][0]["mac"].as_str().unwrap()), "{bridge_link}");
    let host_link = node.ns.sh(&format!("ip -o link show {}", ifs[1]["name"].as_str().unwrap()));
    assert!(host_link.contains(ifs[1]["mac"].as_str().unwrap()), "{host_link}");

    p1.sh(&format!("ping -c 2 -W 2 {ip2}"));
    p2.sh(&format!("ping -c 2 -W 2 {ip1}"));
    p1.sh("ping -c 1 -W 2 10.244.8.1");

    assert_eq!(node.reservations(), vec!["10.244.8.2", "10.244.8.3"]);
    assert_eq!(node.bridge_ports().len(), 2);
    for (id, ns) in [("c1", &p1), ("c2", &p2)] {
        let r = node.cmd("DEL", id, &ns.path(), "eth0", &conf);
        assert_eq!(r.status, 0, "{} {}", r.stdout, r.stderr);
        assert_eq!(r.stdout, "", "DEL prints nothing on success");
        assert!(ns.sh_output("ip link show eth0").status.code() != Some(0));
    }
    assert!(node.reservations().is_empty());
    assert!(node.bridge_ports().is_empty());
}

#[test]
fn version_lists_every_supported_version_in_the_version_asked() {
    let node = Node::new("cniv");
    for asked in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let v = node
            .invoke(&[("CNI_COMMAND", "VERSION")], &json!({"cniVersion": asked}).to_string())
            .ok();
        assert_eq!(v["cniVersion"], asked);
        assert_eq!(v["supportedVersions"], json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
    }
}
