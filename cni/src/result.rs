//! The ADD result, written in the version the runtime asked for.
//!
//! Differences between versions that matter here: 0.3.x and 0.4.0 carry `"version": "4"` in
//! every `ips` entry, 1.0.0 dropped it; 1.1.0 added `mtu` on interfaces (and more optional
//! fields linen does not fill). A chained `prevResult` is kept and linen's entries are appended,
//! with interface indices shifted past the previous plugin's interfaces.

use serde_json::{json, Map, Value};

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// An interface linen created or uses.
#[derive(Debug, Clone)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC address, `aa:bb:..`.
    pub mac: String,
    /// MTU.
    pub mtu: u32,
    /// The namespace path for interfaces inside the pod.
    pub sandbox: Option<String>,
}

/// An address given to an interface.
#[derive(Debug, Clone)]
pub struct IpConfig {
    /// Address with prefix length.
    pub address: Ipv4Net,
    /// Gateway.
    pub gateway: Ipv4Addr,
    /// Index into this result's own `interfaces`.
    pub interface: usize,
}

/// What linen adds to the result.
#[derive(Debug, Clone, Default)]
pub struct AddResult {
    /// Interfaces (bridge, host end, pod end).
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes in the pod: (destination, gateway).
    pub routes: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
    /// `dns` from the configuration.
    pub dns: Option<Value>,
}

fn is_pre_1_0(version: &str) -> bool {
    version.starts_with("0.")
}

impl AddResult {
    /// The result JSON in `version`, merged after `prev` (a chained previous result).
    pub fn to_json(&self, version: &str, prev: Option<&Value>) -> Value {
        let mut interfaces: Vec<Value> = prev
            .and_then(|p| p.get("interfaces"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut ips: Vec<Value> =
            prev.and_then(|p| p.get("ips")).and_then(Value::as_array).cloned().unwrap_or_default();
        let mut routes: Vec<Value> = prev
            .and_then(|p| p.get("routes"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let offset = interfaces.len();
        for i in &self.interfaces {
            let mut v = json!({ "name": i.name, "mac": i.mac });
            if version == "1.1.0" {
                v["mtu"] = json!(i.mtu);
            }
            if let Some(s) = &i.sandbox {
                v["sandbox"] = json!(s);
            }
            interfaces.push(v);
        }
        for ip in &self.ips {
            ips.push(json!({
                "interface": ip.interface + offset,
                "address": ip.address.to_string(),
                "gateway": ip.gateway.to_string(),
            }));
        }
        for (dst, gw) in &self.routes {
            let mut v = json!({ "dst": dst.to_string() });
            if let Some(gw) = gw {
                v["gw"] = json!(gw.to_string());
            }
            routes.push(v);
        }
        for ip in &mut ips {
            normalize_ip(ip, version);
        }
        if version != "1.1.0" {
            for i in &mut interfaces {
                if let Some(o) = i.as_object_mut() {
                    for k in ["mtu", "socketPath", "pciID"] {
                        o.remove(k);
                    }
                }
            }
        }
        let dns = self
            .dns
            .clone()
            .or_else(|| prev.and_then(|p| p.get("dns")).cloned())
            .unwrap_or_else(|| Value::Object(Map::new()));
        json!({
            "cniVersion": version,
            "interfaces": interfaces,
            "ips": ips,
            "routes": routes,
            "dns": dns,
        })
    }
}

/// Adds or removes the `version` key of one `ips` entry as `version` demands.
fn normalize_ip(ip: &mut Value, version: &str) {
    let Some(o) = ip.as_object_mut() else { return };
    if is_pre_1_0(version) {
        let v6 = o.get("address").and_then(Value::as_str).is_some_and(|a| a.contains(':'));
        o.insert("version".into(), json!(if v6 { "6" } else { "4" }));
    } else {
        o.remove("version");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "aa:00:00:00:00:01".into(),
                    mtu: 1450,
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "aa:00:00:00:00:02".into(),
                    mtu: 1450,
                    sandbox: Some("/var/run/netns/p".into()),
                },
            ],
            ips: vec![IpConfig {
                address: "10.1.0.5/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 1, 0, 1),
                interface: 1,
            }],
            routes: vec![("0.0.0.0/0".parse().unwrap(), Some(Ipv4Addr::new(10, 1, 0, 1)))],
            dns: None,
        }
    }

    #[test]
    fn shapes_per_version() {
        let r = sample();
        let v = r.to_json("0.3.1", None);
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert!(v["interfaces"][0].get("mtu").is_none());
        let v = r.to_json("1.0.0", None);
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["interfaces"][1]["sandbox"], "/var/run/netns/p");
        assert_eq!(v["routes"][0], json!({"dst":"0.0.0.0/0","gw":"10.1.0.1"}));
        assert_eq!(v["dns"], json!({}));
        let v = r.to_json("1.1.0", None);
        assert_eq!(v["interfaces"][0]["mtu"], 1450);
    }

    #[test]
    fn prev_result_is_kept_and_indices_shift() {
        let prev = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "lo0", "mac": "00:00:00:00:00:00"}],
            "ips": [{"version": "4", "address": "192.168.9.2/24", "interface": 0}],
            "dns": {"nameservers": ["10.1.0.1"]}
        });
        let v = sample().to_json("1.0.0", Some(&prev));
        assert_eq!(v["interfaces"].as_array().unwrap().len(), 3);
        assert_eq!(v["ips"][0]["address"], "192.168.9.2/24");
        assert!(v["ips"][0].get("version").is_none());
        assert_eq!(v["ips"][1]["interface"], 2);
        assert_eq!(v["dns"]["nameservers"][0], "10.1.0.1");
    }
}
