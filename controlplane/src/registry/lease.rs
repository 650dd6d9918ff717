//! Lease values and keys exactly as flannel stores them in etcd.
//!
//! A node's lease lives at `<prefix>/subnets/<ip>-<len>` (for example `10.244.8.0-24`; a
//! dual-stack flannel node appends `&<ipv6>-<len>`, which linen reads past). The value is the JSON
//! flannel's Go code marshals, byte for byte:
//!
//! ```text
//! {"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}
//! ```
//!
//! Decoding takes bytes written by any node, so it never panics and returns a typed error for
//! anything it cannot use; keys match case-insensitively, as Go's decoder does. Leases of other
//! backends decode to [`LeaseValue::OtherBackend`] so callers can skip them knowingly.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Map, Value};

/// The VtepMAC's type: linen's one MAC address type, whose text form is the one flanneld
/// writes (lowercase, colon-separated; `-` separators and upper case are read too).
pub use linen_dataplane::wire::MacAddr;

/// What a vxlan lease tells its readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanLease {
    /// The node's underlay (VTEP) address.
    pub public_ip: Ipv4Addr,
    /// The VNI the node announced.
    pub vni: u32,
    /// MAC of the node's VXLAN device (`flannel.1` / `linen.1`).
    pub vtep_mac: MacAddr,
}

impl VxlanLease {
    /// The value flannel would write for this lease, byte for byte.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"PublicIP":"{}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":{},"VtepMAC":"{}"}}}}"#,
            self.public_ip, self.vni, self.vtep_mac
        )
    }
}

/// A decoded lease value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseValue {
    /// A vxlan node linen can route to.
    Vxlan(VxlanLease),
    /// A node on another flannel backend (`udp`, `host-gw`, …): not reachable over VXLAN, skipped.
    OtherBackend(String),
}

/// Why a lease value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseDecodeError {
    /// Not a JSON object.
    #[error("lease value is not a JSON object: {0}")]
    Json(String),
    /// A required field is missing or has the wrong type.
    #[error("lease field `{0}` is missing or not a string/number as expected")]
    Missing(&'static str),
    /// A field is present but its content is unusable.
    #[error("lease field `{field}`: {reason}")]
    Bad {
        /// Field name.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name)
        .or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
        .filter(|v| !v.is_null())
}

/// Decodes a lease value read from etcd. Never panics, whatever the bytes.
///
/// # Errors
/// [`LeaseDecodeError`] naming the field that is missing or wrong.
pub fn decode_lease(bytes: &[u8]) -> Result<LeaseValue, LeaseDecodeError> {
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| LeaseDecodeError::Json(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(LeaseDecodeError::Json("expected an object".into()));
    };
    let backend = field(&obj, "BackendType")
        .and_then(Value::as_str)
        .ok_or(LeaseDecodeError::Missing("BackendType"))?;
    if backend != "vxlan" {
        return Ok(LeaseValue::OtherBackend(backend.to_string()));
    }
    let public_ip = field(&obj, "PublicIP")
        .and_then(Value::as_str)
        .ok_or(LeaseDecodeError::Missing("PublicIP"))?;
    let public_ip: Ipv4Addr = public_ip.parse().map_err(|_| LeaseDecodeError::Bad {
        field: "PublicIP",
        reason: format!("{public_ip:?} is not an IPv4 address"),
    })?;
    let data = match field(&obj, "BackendData") {
        Some(Value::Object(d)) => d,
        _ => return Err(LeaseDecodeError::Missing("BackendData")),
    };
    let mac = field(data, "VtepMAC")
        .and_then(Value::as_str)
        .ok_or(LeaseDecodeError::Missing("VtepMAC"))?;
    let vtep_mac: MacAddr = mac.parse().map_err(|e| LeaseDecodeError::Bad {
        field: "VtepMAC",
        reason: format!("{mac:?} is {e}"),
    })?;
    let vni = match field(data, "VNI") {
        None => crate::config::DEFAULT_VNI,
        Some(v) => {
            v.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n < 1 << 24).ok_or_else(
                || LeaseDecodeError::Bad {
                    field: "VNI",
                    reason: format!("{v} is not a 24-bit VNI"),
                },
            )?
        }
    };
    Ok(LeaseValue::Vxlan(VxlanLease { public_ip, vni, vtep_mac }))
}

/// The key suffix (below `<prefix>/subnets/`) of a subnet: `10.244.8.0-24`.
pub fn subnet_key(subnet: Ipv4Net) -> String {
    format!("{}-{}", subnet.addr(), subnet.prefix_len())
}

/// Parses a key suffix written by linen or flannel. Returns `None` for anything else (including an
/// IPv4 address with host bits set). A dual-stack suffix (`&…`) is ignored.
pub fn parse_subnet_key(key: &str) -> Option<Ipv4Net> {
    let v4 = key.split('&').next()?;
    let (ip, len) = v4.rsplit_once('-')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let net = Ipv4Net::new(ip, len.parse().ok()?).ok()?;
    (net.network() == ip).then_some(net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FLANNEL: &str = r#"{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#;

    #[test]
    fn encodes_byte_identical_to_flannel() {
        let l = VxlanLease {
            public_ip: Ipv4Addr::new(192, 168, 64, 3),
            vni: 1,
            vtep_mac: "c6:d2:32:6f:8f:44".parse().unwrap(),
        };
        assert_eq!(l.to_json(), FLANNEL);
        assert_eq!(decode_lease(FLANNEL.as_bytes()), Ok(LeaseValue::Vxlan(l)));
    }

    #[test]
    fn decodes_case_insensitively_and_with_extra_fields() {
        let v = br#"{"publicip":"10.0.0.1","backendtype":"vxlan","backenddata":{"vni":7,"vtepmac":"AA-BB-CC-DD-EE-FF"},"BackendV6Data":null,"Future":1}"#;
        assert_eq!(
            decode_lease(v),
            Ok(LeaseValue::Vxlan(VxlanLease {
                public_ip: Ipv4Addr::new(10, 0, 0, 1),
                vni: 7,
                vtep_mac: MacAddr([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]),
            }))
        );
    }

    #[test]
    fn other_backends_are_reported_not_errors() {
        assert_eq!(
            decode_lease(br#"{"PublicIP":"10.0.0.1","BackendType":"udp"}"#),
            Ok(LeaseValue::OtherBackend("udp".into()))
        );
    }

    #[test]
    fn malformed_values_are_errors() {
        for bad in [
            &b""[..],
            b"null",
            b"[]",
            br#"{"PublicIP":"10.0.0.1"}"#,
            br#"{"PublicIP":"10.0.0.300","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
            br#"{"PublicIP":"10.0.0.1","BackendType":"vxlan"}"#,
            br#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VtepMAC":"c6:d2:32:6f:8f"}}"#,
            br#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":-1,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
            br#"{"PublicIP":"10.0.0.1","BackendType":"vxlan","BackendData":{"VNI":16777216,"VtepMAC":"c6:d2:32:6f:8f:44"}}"#,
        ] {
            assert!(decode_lease(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn keys() {
        let n: Ipv4Net = "10.244.8.0/24".parse().unwrap();
        assert_eq!(subnet_key(n), "10.244.8.0-24");
        assert_eq!(parse_subnet_key("10.244.8.0-24"), Some(n));
        assert_eq!(parse_subnet_key("10.244.8.0-24&fc00::-64"), Some(n));
        for bad in [
            "10.244.8.1-24",
            "10.244.8.0-33",
            "10.244.8.0",
            "x-24",
            "10.244.8.0-",
            "10.244.8.0-+4",
            "",
        ] {
            assert_eq!(parse_subnet_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn vtep_mac_must_be_a_mac() {
        // The MAC text forms themselves are tested with the type (wire::ethernet); here only
        // that a lease with a malformed one is rejected and names it.
        for bad in ["c6:d2:32:6f:8f:+4", "c6:d2:32:6f:8f", "+a:d2:32:6f:8f:44"] {
            let v = format!(
                r#"{{"PublicIP":"192.168.64.3","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{bad}"}}}}"#
            );
            let err = decode_lease(v.as_bytes()).unwrap_err();
            assert!(
                matches!(err, LeaseDecodeError::Bad { field: "VtepMAC", .. }),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_lease(&bytes);
        }

        #[test]
        fn decode_never_panics_on_json_like_input(s in r#"\{("[A-Za-z]{0,12}":("[0-9a-f:.\-]{0,20}"|-?[0-9]{1,12}|null|\{\}|\[\]),?){0,6}\}"#) {
            let _ = decode_lease(s.as_bytes());
        }

        #[test]
        fn key_parse_never_panics(s in ".{0,40}") {
            let _ = parse_subnet_key(&s);
        }

        #[test]
        fn round_trip(ip in any::<u32>(), vni in 0u32..(1 << 24), mac in any::<[u8; 6]>()) {
            let l = VxlanLease { public_ip: Ipv4Addr::from(ip), vni, vtep_mac: MacAddr(mac) };
            prop_assert_eq!(decode_lease(l.to_json().as_bytes()), Ok(LeaseValue::Vxlan(l)));
        }
    }
}
