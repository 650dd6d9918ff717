//! linen's ADD result has the shape of the reference bridge + host-local result (same
//! interfaces in the same order, same keys), in every version both speak; and both plugins read
//! and write one IPAM store layout.

mod common;

use std::collections::BTreeSet;

use common::{first_ip, Node};
use serde_json::{json, Value};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
}

fn reference_conf(node: &Node, version: &str) -> Value {
    json!({"cniVersion": version, "name": "lt", "type": "bridge", "bridge": "cni0",
           "isGateway": true, "ipMasq": false, "hairpinMode": true, "mtu": 1450,
           "ipam": {"type": "host-local", "dataDir": node.data_dir(),
                    "ranges": [[{"subnet": "10.244.8.0/24", "gateway": "10.244.8.1"}]],
                    "routes": [{"dst": "0.0.0.0/0"}]}})
}

fn reference(node: &Node, command: &str, id: &str, netns: &str, conf: &Value) -> common::Reply {
    let mut vars = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ];
    if !netns.is_empty() {
        vars.push(("CNI_NETNS", netns));
    }
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net={}", node.ns.path())).arg("/usr/lib/cni/bridge");
    cmd.env_clear();
    for (k, v) in &vars {
        cmd.env(k, v);
    }
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    common::Reply {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn same_result_shape_and_shared_ipam_store_as_the_reference_plugins() {
    let mut ref_node = Node::new("cnirr");
    let mut lin_node = Node::new("cnirl");
    for (n, version) in ["0.3.1", "0.4.0", "1.0.0"].iter().enumerate() {
        let rp = ref_node.pod(&format!("r{n}"));
        let lp = lin_node.pod(&format!("l{n}"));
        let rc = reference_conf(&ref_node, version);
        let lc = lin_node.conf(version, json!({}));
        let r = reference(&ref_node, "ADD", &format!("r{n}"), &rp.path(), &rc).ok();
        let l = lin_node.add(&format!("l{n}"), &lp, &lc);
        assert_eq!(keys(&r), keys(&l), "{version}: top-level keys\n{r}\n{l}");
        let (ri, li) = (r["interfaces"].as_array().unwrap(), l["interfaces"].as_array().unwrap());
        assert_eq!(ri.len(), li.len());
        for (a, b) in ri.iter().zip(li) {
            assert_eq!(keys(a), keys(b), "{version}: interface keys");
        }
        assert_eq!(ri[0]["name"], li[0]["name"]);
        assert_eq!(ri[2]["name"], li[2]["name"]);
        assert_eq!(keys(&r["ips"][0]), keys(&l["ips"][0]), "{version}: ips keys");
        assert_eq!(r["ips"][0]["interface"], l["ips"][0]["interface"]);
        assert_eq!(r["ips"][0]["gateway"], l["ips"][0]["gateway"]);
        assert_eq!(first_ip(&r), first_ip(&l), "{version}: same allocation order");
        assert_eq!(r["dns"], l["dns"]);
        // Routes: the reference reports host-local's route as configured (no gw); linen names
        // the gateway it installed.
        assert_eq!(r["routes"][0]["dst"], l["routes"][0]["dst"]);
    }

    // One store, two plugins: host-local continues after the addresses linen handed out and
    // sees linen's reservations; linen sees host-local's.
    let p = lin_node.pod("mixed1");
    let rc = reference_conf(&lin_node, "1.0.0");
    let r = reference(&lin_node, "ADD", "href", &p.path(), &rc).ok();
    assert_eq!(first_ip(&r), "10.244.8.5", "host-local continues from linen's last_reserved_ip");
    let p2 = lin_node.pod("mixed2");
    let l = lin_node.add("lin", &p2, &lin_node.conf("1.0.0", json!({})));
    assert_eq!(first_ip(&l), "10.244.8.6", "linen skips host-local's reservation");
    assert_eq!(reference(&lin_node, "DEL", "href", &p.path(), &rc).status, 0);
    assert!(!lin_node.store().join("10.244.8.5").exists());
}
