//! A node whose overlay is the kernel's VXLAN device, programmed the way flanneld's vxlan backend
//! programs it, for tests that mix linen with flannel nodes.
//!
//! - [`device_script`]: `flannel.1` as flanneld creates it — VNI 1, port 8472, `nolearning`,
//!   MTU underlay − 50, the address `<subnet>.0/32` (see `dataplane/tests/fixtures/README.md`).
//! - [`peer_script`]: what flanneld writes for one peer lease. Without `DirectRouting`, or for a
//!   peer it cannot reach directly: a permanent neighbour `<subnet>.0 lladdr <VtepMAC>` and a
//!   permanent FDB entry `<VtepMAC> dst <PublicIP>` on `flannel.1`, then the onlink route
//!   `<subnet> via <subnet>.0 dev flannel.1`. With `DirectRouting` and a peer whose public IP
//!   the kernel reaches without a gateway: only `<subnet> via <PublicIP>`. flanneld writes its
//!   routes with "replace", so the direct route and the VXLAN route take each other's place.
//! - [`sync`]: a flanneld (re)start — every lease handled as above. flanneld reads
//!   `DirectRouting` once, at start; a flannel node follows a config change only when restarted,
//!   which is what calling [`sync`] again with the new setting stands for.
//! - [`lease_value`]: a lease value byte for byte as flanneld writes it.

use std::net::Ipv4Addr;

use crate::Netns;

/// The kernel VXLAN device flanneld creates for VNI 1.
pub const DEVICE: &str = "flannel.1";

/// One peer's lease as flanneld reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The peer's pod subnet, `10.244.3.0/24`.
    pub subnet: String,
    /// The peer's public IP.
    pub public_ip: Ipv4Addr,
    /// The peer's VtepMAC.
    pub vtep_mac: String,
}

impl Lease {
    /// The lease in `(key, value)` as listed by `etcdctl get --prefix <prefix>/subnets/` and
    /// parsed by [`crate::etcd_nodes::parse_leases`]; `None` for a value without `PublicIP` or
    /// `VtepMAC`.
    pub fn from_etcd(key: &str, value: &serde_json::Value) -> Option<Lease> {
        let subnet = key.rsplit('/').next()?.replacen('-', "/", 1);
        Some(Lease {
            subnet,
            public_ip: value["PublicIP"].as_str()?.parse().ok()?,
            vtep_mac: value["BackendData"]["VtepMAC"].as_str()?.to_string(),
        })
    }

    /// The subnet's network address (`10.244.3.0`), the VXLAN route's gateway.
    pub fn network(&self) -> &str {
        self.subnet.split('/').next().unwrap_or_default()
    }
}

/// A lease value exactly as flanneld writes it.
pub fn lease_value(public_ip: Ipv4Addr, vtep_mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{vtep_mac}"}}}}"#
    )
}

/// The commands that create `flannel.1` on the underlay `eth0` at `local`, with MAC `mac`, MTU
/// `mtu` and the address `<network>/32` (`network` is the node subnet's network address).
pub fn device_script(local: Ipv4Addr, mac: &str, mtu: u32, network: &str) -> String {
    format!(
        "ip link add {DEVICE} type vxlan id 1 dstport 8472 local {local} dev eth0 nolearning
         ip link set {DEVICE} mtu {mtu} address {mac}
         ip link set {DEVICE} up
         ip addr add {network}/32 dev {DEVICE}\n"
    )
}

/// The commands flanneld runs for `peer`: the direct route when `direct`, else the VXLAN
/// neighbour, FDB entry and route.
pub fn peer_script(peer: &Lease, direct: bool) -> String {
    if direct {
        return format!("ip route replace {} via {}\n", peer.subnet, peer.public_ip);
    }
    format!(
        "ip neigh replace {net} lladdr {mac} dev {DEVICE} nud permanent
         bridge fdb replace {mac} dev {DEVICE} dst {ip} self permanent
         ip route replace {subnet} via {net} dev {DEVICE} onlink\n",
        net = peer.network(),
        mac = peer.vtep_mac,
        ip = peer.public_ip,
        subnet = peer.subnet,
    )
}

/// Whether the kernel in `ns` reaches `ip` without a gateway — flanneld's `DirectRouting`
/// test (`ip route get` answers one route and it has no `via`).
pub fn directly_reachable(ns: &Netns, ip: Ipv4Addr) -> bool {
    let out = ns.sh_output(&format!("ip -4 route get {ip}"));
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && !text.contains(" via ")
}

/// A flanneld (re)start on the node `ns` with public IP `me`: every lease but its own programmed
/// as [`peer_script`] says, each peer direct when `direct_routing` and directly reachable.
/// Returns the subnets it routed directly.
///
/// # Errors
/// The failing command's output.
pub fn sync(
    ns: &Netns,
    me: Ipv4Addr,
    leases: &[Lease],
    direct_routing: bool,
) -> Result<Vec<String>, String> {
    let mut script = String::new();
    let mut direct = Vec::new();
    for l in leases.iter().filter(|l| l.public_ip != me) {
        let d = direct_routing && directly_reachable(ns, l.public_ip);
        if d {
            direct.push(l.subnet.clone());
        }
        script.push_str(&peer_script(l, d));
    }
    let out = ns.sh_output(&script);
    if out.status.success() {
        Ok(direct)
    } else {
        Err(format!(
            "flannel peers on {}: {}{}",
            ns.name,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_read_and_written_as_flanneld_does() {
        let value = lease_value(Ipv4Addr::new(192, 168, 77, 4), "02:6c:6e:00:00:04");
        assert_eq!(
            value,
            r#"{"PublicIP":"192.168.77.4","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:6c:6e:00:00:04"}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&value).unwrap();
        let l = Lease::from_etcd("/coreos.com/network/subnets/10.244.240.0-24", &v).unwrap();
        assert_eq!(l.subnet, "10.244.240.0/24");
        assert_eq!(l.network(), "10.244.240.0");
        assert_eq!(l.public_ip, Ipv4Addr::new(192, 168, 77, 4));
        assert_eq!(l.vtep_mac, "02:6c:6e:00:00:04");
        assert_eq!(Lease::from_etcd("k/10.244.1.0-24", &serde_json::json!({})), None);
    }

    #[test]
    fn peers_direct_or_through_vxlan() {
        let l = Lease {
            subnet: "10.244.3.0/24".into(),
            public_ip: Ipv4Addr::new(192, 168, 77, 3),
            vtep_mac: "26:69:c7:3a:5b:8c".into(),
        };
        assert_eq!(peer_script(&l, true), "ip route replace 10.244.3.0/24 via 192.168.77.3\n");
        let vxlan = peer_script(&l, false);
        assert!(vxlan.contains("ip neigh replace 10.244.3.0 lladdr 26:69:c7:3a:5b:8c"));
        assert!(
            vxlan.contains("bridge fdb replace 26:69:c7:3a:5b:8c dev flannel.1 dst 192.168.77.3")
        );
        assert!(
            vxlan.contains("ip route replace 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink")
        );
    }
}
