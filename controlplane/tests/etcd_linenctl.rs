//! `linenctl` against a real etcd.

use std::process::Command;

use linen_testbed::etcd::EtcdServer;

fn linenctl(etcd: &EtcdServer, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_linenctl"))
        .env("LINEN_ETCD_ENDPOINTS", etcd.endpoint())
        .args(args)
        .output()
        .expect("run linenctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_set_get_and_leases() {
    let etcd = EtcdServer::start();
    let (ok, _, err) = linenctl(&etcd, &["config", "get"]);
    assert!(!ok && err.contains("no config"), "{err}");

    let (ok, out, err) = linenctl(
        &etcd,
        &["config", "set", "--network", "10.50.0.0/16", "--vni", "7", "--subnet-len", "26"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        r#"{"Backend":{"Type":"vxlan","VNI":7},"Network":"10.50.0.0/16","SubnetLen":26}"#
    );
    let stored = etcd.etcdctl_ok(&["get", "--print-value-only", "/coreos.com/network/config"]);
    assert_eq!(stored.trim(), out.trim());
    let (ok, out, _) = linenctl(&etcd, &["config", "get"]);
    assert!(ok);
    assert!(
        out.contains("subnet len:  /26")
            && out.contains("10.50.0.64 .. 10.50.255.192")
            && out.contains("vni 7 port 8472"),
        "{out}"
    );

    // Invalid configs are refused before anything is written.
    let (ok, _, err) =
        linenctl(&etcd, &["config", "set", "--network", "10.50.0.0/16", "--subnet-len", "31"]);
    assert!(!ok && err.contains("SubnetLen"), "{err}");

    etcd.etcdctl_ok(&["put", "/coreos.com/network/subnets/10.50.0.64-26", r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":7,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#]);
    etcd.etcdctl_ok(&["put", "/coreos.com/network/subnets/10.50.0.128-26", "garbage"]);
    let (ok, out, err) = linenctl(&etcd, &["leases"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("10.50.0.64/26")
            && out.contains("192.168.64.3")
            && out.contains("c6:d2:32:6f:8f:44"),
        "{out}"
    );
    assert!(out.contains("10.50.0.128/26") && out.contains("invalid:"), "{out}");
    let (ok, out, _) = linenctl(&etcd, &["leases", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["leases"][0]["public_ip"], "192.168.64.3");
    assert_eq!(v["leases"][0]["vni"], 7);
    assert!(v["leases"][1]["error"].is_string());

    // Unreachable etcd: a clear error, not a hang.
    let (ok, _, err) = linenctl(&etcd, &["--etcd-endpoints", "http://127.0.0.1:1", "leases"]);
    assert!(!ok && err.contains("127.0.0.1:1"), "{err}");
}
