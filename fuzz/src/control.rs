//! What the fuzz targets for the control plane's and the CNI plugin's inputs run: the etcd lease
//! value and subnet key, flannel's network config, the static-peers file and the CNI network
//! configuration. Each of these arrives from another process (any node writing to etcd, an
//! operator's file, the container runtime), so beyond "never panics" every function checks what
//! the rest of linen relies on once the parser has accepted the input:
//!
//! - what is accepted is coherent (the checks the validator promises really hold), and
//! - what linen writes back out from the parsed value parses to the same value.
//!
//! Each function returns whether the parser accepted the bytes. A rejected input is not a
//! finding; a panic or a failed assertion is.

use linen_cni::config::{peek_version, NetConf, SUPPORTED_VERSIONS};
use linen_cni::error::Code;
use linen_controlplane::config::{NetworkConfig, RawConfig};
use linen_controlplane::lease::{decode_lease, parse_subnet_key, subnet_key, LeaseValue};
use linen_controlplane::static_peers::StaticNode;
use serde_json::{json, Value};

/// The lease decoder on a value read from `<prefix>/subnets/<key>`, and the key parser on the
/// same bytes (keys come from etcd as well).
///
/// A decoded vxlan lease re-encodes (as flannel would write it) to a value that decodes to the
/// same lease, and its VtepMAC is one of the document's strings read as a MAC address. Returns
/// whether either parser accepted the bytes.
pub fn lease(data: &[u8]) -> bool {
    let key = std::str::from_utf8(data).ok().and_then(parse_subnet_key);
    if let Some(net) = key {
        assert_eq!(net.network(), net.addr(), "a subnet key never has host bits");
        assert_eq!(parse_subnet_key(&subnet_key(net)), Some(net));
    }
    let value = match decode_lease(data) {
        Ok(LeaseValue::Vxlan(l)) => {
            assert!(l.vni < 1 << 24, "VNI {} does not fit in 24 bits", l.vni);
            assert_eq!(decode_lease(l.to_json().as_bytes()), Ok(LeaseValue::Vxlan(l)));
            let doc: Value = serde_json::from_slice(data).expect("the decoder accepted it");
            let mut strings = Vec::new();
            collect_strings(&doc, &mut strings);
            let mac = l.vtep_mac.to_string();
            assert!(
                strings.iter().filter_map(|s| mac_reference(s)).any(|m| mac_text(m) == mac),
                "VtepMAC {} is not written in the value as a MAC address",
                l.vtep_mac
            );
            true
        }
        Ok(LeaseValue::OtherBackend(b)) => {
            assert_ne!(b, "vxlan");
            true
        }
        Err(_) => false,
    };
    value || key.is_some()
}

/// flannel's network config (`<prefix>/config`): parse, write back, validate.
///
/// `RawConfig::to_json` of a parsed config parses to the same config and validates the same
/// way; a validated config's subnets lie in its network, on subnet boundaries, with
/// `SubnetMin` ≤ `SubnetMax`, and `nth_subnet` walks exactly from `SubnetMin` to `SubnetMax`.
pub fn flannel_config(data: &[u8]) -> bool {
    let Ok(raw) = RawConfig::parse(data) else { return false };
    let again = RawConfig::parse(raw.to_json().as_bytes()).expect("to_json output parses");
    assert_eq!(again, raw, "to_json round trip");
    let validated = raw.validate();
    assert_eq!(again.validate(), validated);
    let Ok(cfg) = validated else { return false };
    check_network_config(&cfg);
    true
}

fn check_network_config(cfg: &NetworkConfig) {
    assert!(cfg.ipv4.is_some() || cfg.ipv6.is_some());
    assert!(cfg.backend.vni < 1 << 24);
    assert_ne!(cfg.backend.port, 0, "port 0 means the default");
    assert_ne!(cfg.backend.mtu, Some(0), "MTU 0 means the default");
    if let Some(v4) = &cfg.ipv4 {
        let plen = v4.network.prefix_len();
        assert!(v4.subnet_len <= 30 && v4.subnet_len >= plen + 2, "{v4:?}");
        let (min, max) = (u32::from(v4.subnet_min), u32::from(v4.subnet_max));
        assert!(v4.network.contains(&v4.subnet_min) && v4.network.contains(&v4.subnet_max));
        assert!(min <= max, "{v4:?}");
        let size = 1u32 << (32 - u32::from(v4.subnet_len));
        assert_eq!(min % size, 0, "{v4:?}");
        assert_eq!(max % size, 0, "{v4:?}");
        let first = v4.nth_subnet(0).expect("SubnetMin is a subnet");
        assert_eq!(first.addr(), v4.subnet_min);
        assert!(v4.allows(first));
        let last_index = (max - min) / size;
        let last = v4.nth_subnet(last_index).expect("SubnetMax is a subnet");
        assert_eq!(last.addr(), v4.subnet_max);
        assert!(v4.allows(last));
        if let Some(past) = last_index.checked_add(1) {
            assert_eq!(v4.nth_subnet(past), None, "{v4:?}");
        }
    }
    if let Some(v6) = &cfg.ipv6 {
        let plen = v6.network.prefix_len();
        assert!(v6.subnet_len <= 126 && v6.subnet_len >= plen + 2, "{v6:?}");
        assert!(v6.network.contains(&v6.subnet_min) && v6.network.contains(&v6.subnet_max));
        let (min, max) = (u128::from(v6.subnet_min), u128::from(v6.subnet_max));
        assert!(min <= max, "{v6:?}");
        let host_bits = (1u128 << (128 - u32::from(v6.subnet_len))) - 1;
        assert_eq!(min & host_bits, 0, "{v6:?}");
        assert_eq!(max & host_bits, 0, "{v6:?}");
    }
}

/// The static-peers file (`linend --static-peers`), given as text (`StaticNode::load` reads the
/// file as UTF-8, so other bytes never reach the parser).
///
/// An accepted file keeps every subnet aligned, inside the network and apart from the others;
/// every VtepMAC it accepted is written as a MAC address; and the node written back out as JSON
/// parses to the same node.
pub fn static_peers(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let Ok(node) = StaticNode::parse(text) else { return false };
    let doc: Value = serde_json::from_str(text).expect("the parser accepted it");
    let own_subnet = node.subnet;
    for s in std::iter::once(own_subnet).chain(node.peers.iter().map(|p| p.subnet)) {
        assert_eq!(s, s.trunc(), "{s} has host bits set");
        assert!(s.prefix_len() <= 30, "{s}");
        assert!(node.network.contains(&s), "{s} outside {}", node.network);
    }
    for (i, p) in node.peers.iter().enumerate() {
        assert!(!p.subnet.contains(&own_subnet) && !own_subnet.contains(&p.subnet));
        for q in &node.peers[..i] {
            assert!(!p.subnet.contains(&q.subnet) && !q.subnet.contains(&p.subnet));
        }
        assert_ne!(Some(p.public_ip), node.public_ip);
        let text = doc["peers"][i]["vtep_mac"].as_str().expect("peers have a vtep_mac");
        assert_eq!(mac_reference(text), Some(p.vtep_mac), "peer {i} vtep_mac {text:?}");
    }
    if let Some(mac) = node.vtep_mac {
        let text = doc["vtep_mac"].as_str().expect("vtep_mac was given");
        assert_eq!(mac_reference(text), Some(mac), "vtep_mac {text:?}");
    }
    let written = json!({
        "network": node.network.to_string(),
        "subnet": node.subnet.to_string(),
        "public_ip": node.public_ip.map(|a| a.to_string()),
        "vtep_mac": node.vtep_mac.map(mac_text),
        "peers": node.peers.iter().map(|p| json!({
            "subnet": p.subnet.to_string(),
            "public_ip": p.public_ip.to_string(),
            "vtep_mac": mac_text(p.vtep_mac),
        })).collect::<Vec<_>>(),
    });
    let again = StaticNode::parse(&written.to_string()).expect("the written node parses");
    assert_eq!(again, node);
    true
}

/// The CNI network configuration a runtime passes on stdin (one plugin's entry of a conflist,
/// with the list's `name` and `cniVersion`).
///
/// Errors carry one of the codes the spec gives configuration problems (1, 6, 7). An accepted
/// configuration names a supported version (the one `peek_version` reads, which the plugin uses
/// before parsing), a network name that keeps the IPAM store inside its data directory, and
/// IPAM ranges whose addresses lie in their subnet in order.
pub fn cni_config(data: &[u8]) -> bool {
    let peeked = peek_version(data);
    let conf = match NetConf::parse(data) {
        Ok(conf) => conf,
        Err(e) => {
            assert!(
                matches!(
                    e.code,
                    Code::IncompatibleVersion | Code::DecodeFailure | Code::InvalidConfig
                ),
                "configuration error with code {:?}: {e}",
                e.code
            );
            return false;
        }
    };
    assert_eq!(conf.cni_version, peeked.as_deref().unwrap_or("0.3.0"));
    assert!(SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()));
    let store = conf.store_dir();
    assert_eq!(store.parent(), Some(conf.data_dir.as_path()), "{store:?}");
    assert_eq!(store.file_name(), Some(std::ffi::OsStr::new(&conf.name)));
    assert!(!conf.bridge.is_empty() && conf.bridge.len() <= 15);
    if let Some(mtu) = conf.mtu {
        assert!((68..=65535).contains(&mtu));
    }
    for r in &conf.ipam_ranges {
        assert!(r.subnet.prefix_len() <= 30);
        for ip in [r.start, r.end, r.gateway] {
            assert!(r.subnet.contains(&ip), "{ip} outside {}", r.subnet);
        }
        assert!(r.start <= r.end);
    }
    true
}

/// What a MAC address written as text means, independently of linen's parsers: six groups of
/// one or two hex digits separated by `:` or `-`. Anything else (signs, spaces, three digits)
/// is not a MAC address.
pub fn mac_reference(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut groups = s.split([':', '-']);
    for byte in &mut out {
        let g = groups.next()?;
        if g.is_empty() || g.len() > 2 || !g.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(g, 16).ok()?;
    }
    groups.next().is_none().then_some(out)
}

fn mac_text(m: [u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}

fn collect_strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every committed seed still reaches the part of its parser it was written for: a seed is
    /// accepted, unless its name starts with `reject-`, in which case it must be rejected.
    /// (A seed the parser has come to reject would leave the accepting paths unfuzzed.)
    #[test]
    fn seeds_are_accepted_or_rejected_as_named() {
        type Target = fn(&[u8]) -> bool;
        let targets: [(&str, Target); 4] = [
            ("lease", super::lease),
            ("flannel_config", super::flannel_config),
            ("static_peers", super::static_peers),
            ("cni_config", super::cni_config),
        ];
        for (target, run) in targets {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
            let mut seen = 0;
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let path = entry.expect("directory entry").path();
                let name = path.file_name().and_then(|n| n.to_str()).expect("UTF-8 name");
                let data = std::fs::read(&path).expect("seed readable");
                let want = !name.starts_with("reject-");
                assert_eq!(run(&data), want, "{target}/{name}: accepted should be {want}");
                seen += 1;
            }
            assert!(seen >= 3, "{target}: only {seen} seeds in {dir:?}");
        }
    }

    #[test]
    fn mac_reference_reads_only_mac_addresses() {
        assert_eq!(
            super::mac_reference("c6:d2:32:6f:8f:44"),
            Some([0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44])
        );
        assert_eq!(
            super::mac_reference("AA-BB-CC-DD-EE-F"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xf])
        );
        for bad in
            ["+a:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee", "aa:bb:cc:dd:ee:ff:00", "aaa:b:c:d:e:f", ""]
        {
            assert_eq!(super::mac_reference(bad), None, "{bad}");
        }
    }
}
