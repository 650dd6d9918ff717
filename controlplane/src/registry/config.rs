//! flannel's network configuration (`<prefix>/config`), parsed and then validated.
//!
//! The JSON is the one flannel reads: keys match case-insensitively (flannel's own tooling writes
//! both `VNI` and `vni`), an exact-case key wins over a case-folded one. Parsing ([`RawConfig::parse`])
//! only checks types; [`RawConfig::validate`] derives the defaults exactly as flannel does and rejects
//! incoherent values:
//!
//! - `SubnetLen`: when absent, 24 if the network is /22 or larger, otherwise the network's prefix + 2;
//!   a network smaller than /28 is rejected. When given it must be at most 30 and at least prefix + 2.
//! - `SubnetMin` defaults to the second subnet of the network (the first would collide with the network
//!   address), `SubnetMax` to the last subnet; both must lie in the network and on a subnet boundary.
//! - IPv6 mirrors that with 64 (network /62 or larger), prefix + 2, a /124 minimum and a /126 maximum.
//! - `Backend` must be present with `"Type": "vxlan"`: flannel treats a missing backend as `udp`, which
//!   linen does not speak, so it is an error rather than a guess. `VNI` defaults to 1, `Port` 0 means
//!   the Linux default 8472, `MTU` absent means "underlay MTU − 50", decided by the node.
//!
//! This module never touches the network; it turns bytes into a checked [`NetworkConfig`].

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{Map, Value};

/// The VXLAN UDP port flannel (and the Linux kernel) use when the config says 0 or nothing.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
/// The VNI flannel uses when the config names none.
pub const DEFAULT_VNI: u32 = 1;

/// Why a configuration was refused. Messages name the field and what would be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The bytes are not a JSON object.
    #[error("network config is not valid JSON: {0}")]
    Json(String),
    /// A field has the wrong JSON type or an unparsable value.
    #[error("network config field `{field}`: {reason}")]
    Field {
        /// The field, as flannel names it.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// No `Backend` object: flannel would fall back to its `udp` backend.
    #[error("network config has no `Backend`; flannel would default to the `udp` backend, which linen does not support: add \"Backend\": {{\"Type\": \"vxlan\"}}")]
    MissingBackend,
    /// A backend other than vxlan.
    #[error(
        "network config asks for backend type {0:?}; linen only speaks flannel's `vxlan` backend"
    )]
    UnsupportedBackend(String),
    /// Values that parse but do not fit together.
    #[error("network config is inconsistent: {0}")]
    Invalid(String),
}

/// The `Backend` object as written, before defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawBackend {
    /// `Type`; `None` when the key is absent.
    pub backend_type: Option<String>,
    /// `VNI`.
    pub vni: Option<u32>,
    /// `Port` (0 means the default).
    pub port: Option<u16>,
    /// `MTU`.
    pub mtu: Option<u32>,
    /// `DirectRouting`.
    pub direct_routing: Option<bool>,
    /// `GBP`.
    pub gbp: Option<bool>,
    /// `Learning`.
    pub learning: Option<bool>,
}

/// `<prefix>/config` as written: every field optional, nothing derived yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawConfig {
    /// `EnableIPv4` (flannel's default: true).
    pub enable_ipv4: Option<bool>,
    /// `EnableIPv6` (default false).
    pub enable_ipv6: Option<bool>,
    /// `Network`, host bits cleared as flannel does.
    pub network: Option<Ipv4Net>,
    /// `SubnetLen`.
    pub subnet_len: Option<u8>,
    /// `SubnetMin`.
    pub subnet_min: Option<Ipv4Addr>,
    /// `SubnetMax`.
    pub subnet_max: Option<Ipv4Addr>,
    /// `IPv6Network`.
    pub ipv6_network: Option<Ipv6Net>,
    /// `IPv6SubnetLen`.
    pub ipv6_subnet_len: Option<u8>,
    /// `IPv6SubnetMin`.
    pub ipv6_subnet_min: Option<Ipv6Addr>,
    /// `IPv6SubnetMax`.
    pub ipv6_subnet_max: Option<Ipv6Addr>,
    /// `Backend`; `None` when absent (which flannel reads as `udp`).
    pub backend: Option<RawBackend>,
}

/// The validated VXLAN backend settings, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanBackend {
    /// VXLAN network identifier (default 1).
    pub vni: u32,
    /// UDP port (0 in the config becomes 8472).
    pub port: u16,
    /// Overlay MTU asked for; `None` means underlay MTU − 50, decided by the node.
    pub mtu: Option<u32>,
    /// flannel's DirectRouting: peers whose public IP is on this node's underlay segment get a
    /// plain route via that IP instead of VXLAN (see `crate::node`); followed at run time.
    pub direct_routing: bool,
    /// VXLAN Group Based Policy extension flag.
    pub gbp: bool,
    /// Kernel FDB learning flag.
    pub learning: bool,
}

/// The IPv4 part of a validated config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Config {
    /// The cluster network.
    pub network: Ipv4Net,
    /// Prefix length of one node's subnet.
    pub subnet_len: u8,
    /// First subnet that may be allocated (network address of that subnet).
    pub subnet_min: Ipv4Addr,
    /// Last subnet that may be allocated.
    pub subnet_max: Ipv4Addr,
}

/// The IPv6 part of a validated config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Config {
    /// The cluster IPv6 network.
    pub network: Ipv6Net,
    /// Prefix length of one node's IPv6 subnet.
    pub subnet_len: u8,
    /// First allocatable IPv6 subnet.
    pub subnet_min: Ipv6Addr,
    /// Last allocatable IPv6 subnet.
    pub subnet_max: Ipv6Addr,
}

/// A checked configuration with flannel's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// IPv4 settings when `EnableIPv4` (the default).
    pub ipv4: Option<Ipv4Config>,
    /// IPv6 settings when `EnableIPv6`.
    pub ipv6: Option<Ipv6Config>,
    /// The VXLAN backend.
    pub backend: VxlanBackend,
}

impl NetworkConfig {
    /// Parses and validates in one go.
    ///
    /// # Errors
    /// Any [`ConfigError`] of [`RawConfig::parse`] or [`RawConfig::validate`].
    pub fn from_json(bytes: &[u8]) -> Result<NetworkConfig, ConfigError> {
        RawConfig::parse(bytes)?.validate()
    }

    /// The IPv4 part, or an error saying linen needs it.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when IPv4 is disabled.
    pub fn require_ipv4(&self) -> Result<&Ipv4Config, ConfigError> {
        self.ipv4.as_ref().ok_or_else(|| {
            ConfigError::Invalid("EnableIPv4 is false; linen allocates IPv4 pod subnets".into())
        })
    }
}

impl Ipv4Config {
    /// Whether `subnet` may be handed to a node: right length, aligned, within [min, max].
    pub fn allows(&self, subnet: Ipv4Net) -> bool {
        subnet.prefix_len() == self.subnet_len
            && subnet.network() == subnet.addr()
            && self.network.contains(&subnet)
            && subnet.addr() >= self.subnet_min
            && subnet.addr() <= self.subnet_max
    }

    /// The `index`-th subnet counting from `SubnetMin`, if it is not past `SubnetMax`.
    pub fn nth_subnet(&self, index: u32) -> Option<Ipv4Net> {
        let size = 1u64 << (32 - u32::from(self.subnet_len));
        let addr = u64::from(u32::from(self.subnet_min)) + u64::from(index) * size;
        if addr > u64::from(u32::from(self.subnet_max)) {
            return None;
        }
        let addr = u32::try_from(addr).ok()?;
        Ipv4Net::new(Ipv4Addr::from(addr), self.subnet_len).ok()
    }
}

/// Looks up `name` in `obj`: an exact match first, then an ASCII case-insensitive one. (Go's
/// decoder lets the later key in the document win; an exact-case key winning is deterministic
/// whatever the key order, and no real config carries both spellings of one field.)
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = obj.get(name) {
        return Some(v);
    }
    obj.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// A present, non-null field.
fn present<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    field(obj, name).filter(|v| !v.is_null())
}

fn get_bool(obj: &Map<String, Value>, name: &'static str) -> Result<Option<bool>, ConfigError> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ConfigError::Field {
            field: name,
            reason: format!("expected true or false, got {other}"),
        }),
    }
}

fn get_uint<T: TryFrom<u64>>(
    obj: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<T>, ConfigError> {
    match present(obj, name) {
        None => Ok(None),
        Some(v) => {
            let n = v.as_u64().ok_or_else(|| ConfigError::Field {
                field: name,
                reason: format!("expected a non-negative integer, got {v}"),
            })?;
            T::try_from(n).map(Some).map_err(|_| ConfigError::Field {
                field: name,
                reason: format!("{n} is out of range"),
            })
        }
    }
}

fn get_parsed<T: std::str::FromStr>(
    obj: &Map<String, Value>,
    name: &'static str,
    what: &str,
) -> Result<Option<T>, ConfigError> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| ConfigError::Field {
            field: name,
            reason: format!("{s:?} is not {what}"),
        }),
        Some(other) => Err(ConfigError::Field {
            field: name,
            reason: format!("expected {what} as a string, got {other}"),
        }),
    }
}

impl RawConfig {
    /// Parses flannel's JSON, checking only types.
    ///
    /// # Errors
    /// [`ConfigError::Json`] for bytes that are not a JSON object, [`ConfigError::Field`] for a
    /// field of the wrong type or format.
    pub fn parse(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        let Value::Object(obj) = value else {
            return Err(ConfigError::Json("expected a JSON object".into()));
        };
        let backend = match present(&obj, "Backend") {
            None => None,
            Some(Value::Object(b)) => Some(RawBackend {
                backend_type: match present(b, "Type") {
                    None => None,
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(other) => {
                        return Err(ConfigError::Field {
                            field: "Backend.Type",
                            reason: format!("expected a string, got {other}"),
                        })
                    }
                },
                vni: get_uint(b, "VNI")?,
                port: get_uint(b, "Port")?,
                mtu: get_uint(b, "MTU")?,
                direct_routing: get_bool(b, "DirectRouting")?,
                gbp: get_bool(b, "GBP")?,
                learning: get_bool(b, "Learning")?,
            }),
            Some(other) => {
                return Err(ConfigError::Field {
                    field: "Backend",
                    reason: format!("expected an object, got {other}"),
                })
            }
        };
        Ok(RawConfig {
            enable_ipv4: get_bool(&obj, "EnableIPv4")?,
            enable_ipv6: get_bool(&obj, "EnableIPv6")?,
            network: get_parsed::<Ipv4Net>(&obj, "Network", "an IPv4 CIDR")?.map(|n| n.trunc()),
            subnet_len: get_uint(&obj, "SubnetLen")?,
            subnet_min: get_parsed(&obj, "SubnetMin", "an IPv4 address")?,
            subnet_max: get_parsed(&obj, "SubnetMax", "an IPv4 address")?,
            ipv6_network: get_parsed::<Ipv6Net>(&obj, "IPv6Network", "an IPv6 CIDR")?
                .map(|n| n.trunc()),
            ipv6_subnet_len: get_uint(&obj, "IPv6SubnetLen")?,
            ipv6_subnet_min: get_parsed(&obj, "IPv6SubnetMin", "an IPv6 address")?,
            ipv6_subnet_max: get_parsed(&obj, "IPv6SubnetMax", "an IPv6 address")?,
            backend,
        })
    }

    /// Applies flannel's defaults and checks coherence.
    ///
    /// # Errors
    /// [`ConfigError::MissingBackend`], [`ConfigError::UnsupportedBackend`] or
    /// [`ConfigError::Invalid`] naming the offending field.
    pub fn validate(&self) -> Result<NetworkConfig, ConfigError> {
        let backend = self.backend.as_ref().ok_or(ConfigError::MissingBackend)?;
        match backend.backend_type.as_deref() {
            Some("vxlan") => {}
            Some(other) => return Err(ConfigError::UnsupportedBackend(other.to_string())),
            None => return Err(ConfigError::UnsupportedBackend(String::new())),
        }
        let vni = backend.vni.unwrap_or(DEFAULT_VNI);
        if vni >= 1 << 24 {
            return Err(ConfigError::Invalid(format!("Backend.VNI {vni} does not fit in 24 bits")));
        }
        let port = match backend.port.unwrap_or(0) {
            0 => DEFAULT_VXLAN_PORT,
            p => p,
        };
        let backend = VxlanBackend {
            vni,
            port,
            mtu: backend.mtu.filter(|m| *m != 0),
            direct_routing: backend.direct_routing.unwrap_or(false),
            gbp: backend.gbp.unwrap_or(false),
            learning: backend.learning.unwrap_or(false),
        };
        let ipv4 = if self.enable_ipv4.unwrap_or(true) { Some(self.validate_v4()?) } else { None };
        let ipv6 = if self.enable_ipv6.unwrap_or(false) { Some(self.validate_v6()?) } else { None };
        if ipv4.is_none() && ipv6.is_none() {
            return Err(ConfigError::Invalid("both EnableIPv4 and EnableIPv6 are false".into()));
        }
        Ok(NetworkConfig { ipv4, ipv6, backend })
    }

    fn validate_v4(&self) -> Result<Ipv4Config, ConfigError> {
        let network = self.network.ok_or_else(|| {
            ConfigError::Invalid(
                "`Network` is missing; set it to the cluster's IPv4 CIDR, e.g. 10.244.0.0/16"
                    .into(),
            )
        })?;
        let plen = network.prefix_len();
        let subnet_len = match self.subnet_len {
            Some(len) => {
                if len > 30 {
                    return Err(ConfigError::Invalid(format!(
                        "SubnetLen /{len} is longer than /30"
                    )));
                }
                if u16::from(len) < u16::from(plen) + 2 {
                    return Err(ConfigError::Invalid(format!(
                        "SubnetLen /{len} leaves fewer than four subnets in Network {network}"
                    )));
                }
                len
            }
            None if plen > 28 => {
                return Err(ConfigError::Invalid(format!(
                    "Network {network} is too small: the smallest useful network is a /28"
                )))
            }
            None if plen <= 22 => 24,
            None => plen + 2,
        };
        let size = 1u64 << (32 - u32::from(subnet_len));
        let start = u64::from(u32::from(network.network()));
        let end = start + (1u64 << (32 - u32::from(plen)));
        let subnet_min = match self.subnet_min {
            Some(a) if !network.contains(&a) => {
                return Err(ConfigError::Invalid(format!(
                    "SubnetMin {a} is not in Network {network}"
                )))
            }
            Some(a) => a,
            None => Ipv4Addr::from(u32::try_from(start + size).unwrap_or(u32::MAX)),
        };
        let subnet_max = match self.subnet_max {
            Some(a) if !network.contains(&a) => {
                return Err(ConfigError::Invalid(format!(
                    "SubnetMax {a} is not in Network {network}"
                )))
            }
            Some(a) => a,
            None => Ipv4Addr::from(u32::try_from(end - size).unwrap_or(u32::MAX)),
        };
        let mask = (u32::MAX << (32 - u32::from(subnet_len))) as u64;
        for (name, a) in [("SubnetMin", subnet_min), ("SubnetMax", subnet_max)] {
            if u64::from(u32::from(a)) & mask != u64::from(u32::from(a)) {
                return Err(ConfigError::Invalid(format!(
                    "{name} {a} is not on a /{subnet_len} boundary"
                )));
            }
        }
        if subnet_min > subnet_max {
            return Err(ConfigError::Invalid(format!(
                "SubnetMin {subnet_min} is above SubnetMax {subnet_max}"
            )));
        }
        Ok(Ipv4Config { network, subnet_len, subnet_min, subnet_max })
    }

    fn validate_v6(&self) -> Result<Ipv6Config, ConfigError> {
        let network = self.ipv6_network.ok_or_else(|| {
            ConfigError::Invalid("EnableIPv6 is set but `IPv6Network` is missing".into())
        })?;
        let plen = network.prefix_len();
        let subnet_len = match self.ipv6_subnet_len {
            Some(len) => {
                if len > 126 {
                    return Err(ConfigError::Invalid(format!(
                        "IPv6SubnetLen /{len} is longer than /126"
                    )));
                }
                if u16::from(len) < u16::from(plen) + 2 {
                    return Err(ConfigError::Invalid(format!(
                        "IPv6SubnetLen /{len} leaves fewer than four subnets in IPv6Network {network}"
                    )));
                }
                len
            }
            None if plen > 124 => {
                return Err(ConfigError::Invalid(format!(
                    "IPv6Network {network} is too small: the smallest useful network is a /124"
                )))
            }
            None if plen <= 62 => 64,
            None => plen + 2,
        };
        let size = 1u128 << (128 - u32::from(subnet_len));
        let start = u128::from(network.network());
        let span = if plen == 0 { u128::MAX } else { (1u128 << (128 - u32::from(plen))) - 1 };
        let last = start + span; // last address of the network
        let subnet_min = match self.ipv6_subnet_min {
            Some(a) if !network.contains(&a) => {
                return Err(ConfigError::Invalid(format!(
                    "IPv6SubnetMin {a} is not in IPv6Network {network}"
                )))
            }
            Some(a) => a,
            None => Ipv6Addr::from(start + size),
        };
        let subnet_max = match self.ipv6_subnet_max {
            Some(a) if !network.contains(&a) => {
                return Err(ConfigError::Invalid(format!(
                    "IPv6SubnetMax {a} is not in IPv6Network {network}"
                )))
            }
            Some(a) => a,
            None => Ipv6Addr::from(last - (size - 1)),
        };
        let host_bits = size - 1;
        for (name, a) in [("IPv6SubnetMin", subnet_min), ("IPv6SubnetMax", subnet_max)] {
            if u128::from(a) & host_bits != 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} {a} is not on a /{subnet_len} boundary"
                )));
            }
        }
        if subnet_min > subnet_max {
            return Err(ConfigError::Invalid(format!(
                "IPv6SubnetMin {subnet_min} is above IPv6SubnetMax {subnet_max}"
            )));
        }
        Ok(Ipv6Config { network, subnet_len, subnet_min, subnet_max })
    }

    /// flannel-format JSON of the fields that are set (defaults stay implicit, so every node
    /// derives them the same way). Keys use flannel's capitalisation.
    pub fn to_json(&self) -> String {
        let mut obj = Map::new();
        let mut put = |k: &str, v: Value| {
            obj.insert(k.to_string(), v);
        };
        if let Some(n) = self.network {
            put("Network", Value::String(n.to_string()));
        }
        if let Some(v) = self.subnet_len {
            put("SubnetLen", v.into());
        }
        if let Some(v) = self.subnet_min {
            put("SubnetMin", Value::String(v.to_string()));
        }
        if let Some(v) = self.subnet_max {
            put("SubnetMax", Value::String(v.to_string()));
        }
        if let Some(v) = self.enable_ipv4 {
            put("EnableIPv4", v.into());
        }
        if let Some(v) = self.enable_ipv6 {
            put("EnableIPv6", v.into());
        }
        if let Some(n) = self.ipv6_network {
            put("IPv6Network", Value::String(n.to_string()));
        }
        if let Some(v) = self.ipv6_subnet_len {
            put("IPv6SubnetLen", v.into());
        }
        if let Some(v) = self.ipv6_subnet_min {
            put("IPv6SubnetMin", Value::String(v.to_string()));
        }
        if let Some(v) = self.ipv6_subnet_max {
            put("IPv6SubnetMax", Value::String(v.to_string()));
        }
        if let Some(b) = &self.backend {
            let mut bo = Map::new();
            if let Some(t) = &b.backend_type {
                bo.insert("Type".into(), Value::String(t.clone()));
            }
            if let Some(v) = b.vni {
                bo.insert("VNI".into(), v.into());
            }
            if let Some(v) = b.port {
                bo.insert("Port".into(), v.into());
            }
            if let Some(v) = b.mtu {
                bo.insert("MTU".into(), v.into());
            }
            if let Some(v) = b.direct_routing {
                bo.insert("DirectRouting".into(), v.into());
            }
            if let Some(v) = b.gbp {
                bo.insert("GBP".into(), v.into());
            }
            if let Some(v) = b.learning {
                bo.insert("Learning".into(), v.into());
            }
            obj.insert("Backend".into(), Value::Object(bo));
        }
        Value::Object(obj).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(json: &str) -> Result<Ipv4Config, ConfigError> {
        NetworkConfig::from_json(json.as_bytes()).map(|c| c.ipv4.expect("ipv4"))
    }

    const VX: &str = r#""Backend":{"Type":"vxlan"}"#;

    #[test]
    fn defaults_for_a_16() {
        let c =
            NetworkConfig::from_json(format!(r#"{{"Network":"10.244.0.0/16",{VX}}}"#).as_bytes())
                .unwrap();
        let v = c.ipv4.unwrap();
        assert_eq!(v.subnet_len, 24);
        assert_eq!(v.subnet_min, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(v.subnet_max, Ipv4Addr::new(10, 244, 255, 0));
        assert_eq!(
            c.backend,
            VxlanBackend {
                vni: 1,
                port: 8472,
                mtu: None,
                direct_routing: false,
                gbp: false,
                learning: false
            }
        );
        assert!(c.ipv6.is_none());
    }

    #[test]
    fn subnet_len_is_24_down_to_a_22_then_prefix_plus_two() {
        assert_eq!(v4(&format!(r#"{{"Network":"10.0.0.0/22",{VX}}}"#)).unwrap().subnet_len, 24);
        assert_eq!(v4(&format!(r#"{{"Network":"10.0.0.0/23",{VX}}}"#)).unwrap().subnet_len, 25);
        let c = v4(&format!(r#"{{"Network":"10.0.0.0/28",{VX}}}"#)).unwrap();
        assert_eq!(
            (c.subnet_len, c.subnet_min, c.subnet_max),
            (30, Ipv4Addr::new(10, 0, 0, 4), Ipv4Addr::new(10, 0, 0, 12))
        );
    }

    #[test]
    fn network_smaller_than_28_is_refused() {
        assert!(
            matches!(v4(&format!(r#"{{"Network":"10.0.0.0/29",{VX}}}"#)), Err(ConfigError::Invalid(m)) if m.contains("/28"))
        );
    }

    #[test]
    fn explicit_subnet_len_limits() {
        assert!(v4(&format!(r#"{{"Network":"10.0.0.0/8","SubnetLen":31,{VX}}}"#)).is_err());
        assert_eq!(
            v4(&format!(r#"{{"Network":"10.0.0.0/8","SubnetLen":30,{VX}}}"#)).unwrap().subnet_len,
            30
        );
        assert!(v4(&format!(r#"{{"Network":"10.0.0.0/16","SubnetLen":17,{VX}}}"#)).is_err());
        assert_eq!(
            v4(&format!(r#"{{"Network":"10.0.0.0/16","SubnetLen":18,{VX}}}"#)).unwrap().subnet_len,
            18
        );
    }

    #[test]
    fn subnet_min_max_checked() {
        let c = v4(&format!(r#"{{"Network":"10.1.0.0/16","SubnetLen":28,"SubnetMin":"10.1.10.0","SubnetMax":"10.1.50.0",{VX}}}"#)).unwrap();
        assert_eq!(
            (c.subnet_min, c.subnet_max),
            (Ipv4Addr::new(10, 1, 10, 0), Ipv4Addr::new(10, 1, 50, 0))
        );
        assert!(v4(&format!(r#"{{"Network":"10.1.0.0/16","SubnetMin":"10.2.0.0",{VX}}}"#))
            .unwrap_err()
            .to_string()
            .contains("SubnetMin"));
        assert!(v4(&format!(r#"{{"Network":"10.1.0.0/16","SubnetMax":"10.2.0.0",{VX}}}"#))
            .unwrap_err()
            .to_string()
            .contains("SubnetMax"));
        assert!(v4(&format!(r#"{{"Network":"10.1.0.0/16","SubnetMin":"10.1.1.5",{VX}}}"#))
            .unwrap_err()
            .to_string()
            .contains("boundary"));
        assert!(v4(&format!(r#"{{"Network":"10.1.0.0/16","SubnetMax":"10.1.1.128",{VX}}}"#))
            .unwrap_err()
            .to_string()
            .contains("boundary"));
    }

    #[test]
    fn network_host_bits_are_cleared_and_missing_network_is_an_error() {
        assert_eq!(
            v4(&format!(r#"{{"Network":"10.244.3.7/16",{VX}}}"#)).unwrap().network.to_string(),
            "10.244.0.0/16"
        );
        assert!(v4(&format!(r#"{{{VX}}}"#)).unwrap_err().to_string().contains("Network"));
    }

    #[test]
    fn keys_are_case_insensitive() {
        let c = NetworkConfig::from_json(br#"{"network":"10.5.0.0/16","subnetlen":26,"backend":{"type":"vxlan","vni":42,"port":4789,"mtu":1400,"directrouting":true,"gbp":true,"learning":true}}"#).unwrap();
        let v = c.ipv4.unwrap();
        assert_eq!((v.network.to_string(), v.subnet_len), ("10.5.0.0/16".to_string(), 26));
        assert_eq!(
            c.backend,
            VxlanBackend {
                vni: 42,
                port: 4789,
                mtu: Some(1400),
                direct_routing: true,
                gbp: true,
                learning: true
            }
        );
    }

    #[test]
    fn exact_case_key_wins() {
        let c = NetworkConfig::from_json(
            br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","vni":7,"VNI":9}}"#,
        )
        .unwrap();
        assert_eq!(c.backend.vni, 9);
    }

    #[test]
    fn backend_rules() {
        assert_eq!(
            NetworkConfig::from_json(br#"{"Network":"10.5.0.0/16"}"#),
            Err(ConfigError::MissingBackend)
        );
        assert_eq!(
            NetworkConfig::from_json(br#"{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}"#),
            Err(ConfigError::UnsupportedBackend("host-gw".into()))
        );
        assert!(NetworkConfig::from_json(br#"{"Network":"10.5.0.0/16","Backend":{}}"#).is_err());
        assert!(NetworkConfig::from_json(
            br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#
        )
        .is_err());
        let c = NetworkConfig::from_json(
            br#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","Port":0,"MTU":0}}"#,
        )
        .unwrap();
        assert_eq!((c.backend.port, c.backend.mtu), (8472, None));
    }

    #[test]
    fn type_errors_name_the_field() {
        assert!(matches!(
            RawConfig::parse(br#"{"Network":16}"#),
            Err(ConfigError::Field { field: "Network", .. })
        ));
        assert!(matches!(
            RawConfig::parse(br#"{"SubnetLen":"24"}"#),
            Err(ConfigError::Field { field: "SubnetLen", .. })
        ));
        assert!(matches!(
            RawConfig::parse(br#"{"SubnetLen":-1}"#),
            Err(ConfigError::Field { field: "SubnetLen", .. })
        ));
        assert!(matches!(
            RawConfig::parse(br#"{"Backend":{"VNI":1.5}}"#),
            Err(ConfigError::Field { field: "VNI", .. })
        ));
        assert!(matches!(
            RawConfig::parse(br#"{"Backend":{"Port":70000}}"#),
            Err(ConfigError::Field { field: "Port", .. })
        ));
        assert!(matches!(RawConfig::parse(b"[1]"), Err(ConfigError::Json(_))));
        assert!(matches!(RawConfig::parse(b"{"), Err(ConfigError::Json(_))));
        assert!(matches!(
            RawConfig::parse(br#"{"Network":"10.0.0.0/33"}"#),
            Err(ConfigError::Field { field: "Network", .. })
        ));
    }

    #[test]
    fn ipv6_defaults_and_limits() {
        let c = NetworkConfig::from_json(br#"{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#).unwrap();
        let v6 = c.ipv6.unwrap();
        assert_eq!(v6.subnet_len, 64);
        assert_eq!(v6.subnet_min, "fc00:0:0:1::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(v6.subnet_max, "fc00:0:0:ffff::".parse::<Ipv6Addr>().unwrap());
        let c = NetworkConfig::from_json(br#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/120","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert!(c.ipv4.is_none());
        assert_eq!(c.ipv6.unwrap().subnet_len, 122);
        assert!(NetworkConfig::from_json(br#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/125","Backend":{"Type":"vxlan"}}"#).is_err());
        assert!(NetworkConfig::from_json(br#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/64","IPv6SubnetLen":127,"Backend":{"Type":"vxlan"}}"#).is_err());
        assert!(NetworkConfig::from_json(
            br#"{"EnableIPv4":false,"EnableIPv6":true,"Backend":{"Type":"vxlan"}}"#
        )
        .is_err());
        assert!(NetworkConfig::from_json(br#"{"EnableIPv4":false,"Backend":{"Type":"vxlan"}}"#)
            .is_err());
        // A range that leaves no subnet is refused, as for IPv4 (found by the flannel_config
        // fuzz target's SubnetMin <= SubnetMax check).
        let e = NetworkConfig::from_json(br#"{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fd00:10:42::/56","IPv6SubnetMin":"fd00:10:42:ff::","IPv6SubnetMax":"fd00:10:42:1::","Backend":{"Type":"vxlan"}}"#).unwrap_err();
        assert!(e.to_string().contains("IPv6SubnetMin fd00:10:42:ff:: is above"), "{e}");
    }

    #[test]
    fn nth_subnet_and_allows() {
        let c = v4(&format!(r#"{{"Network":"10.244.0.0/16",{VX}}}"#)).unwrap();
        assert_eq!(c.nth_subnet(0).unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(c.nth_subnet(254).unwrap().to_string(), "10.244.255.0/24");
        assert!(c.nth_subnet(255).is_none());
        assert!(c.allows("10.244.8.0/24".parse().unwrap()));
        assert!(!c.allows("10.244.0.0/24".parse().unwrap()));
        assert!(!c.allows("10.244.8.0/25".parse().unwrap()));
        assert!(!c.allows("10.245.8.0/24".parse().unwrap()));
    }

    proptest::proptest! {
        #[test]
        fn parse_and_validate_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(raw) = RawConfig::parse(&bytes) {
                let _ = raw.validate();
            }
        }

        #[test]
        fn any_network_and_len_validates_or_errors(a in proptest::prelude::any::<u32>(), plen in 0u8..=32, len in proptest::option::of(0u8..=40)) {
            let raw = RawConfig {
                network: Some(Ipv4Net::new(Ipv4Addr::from(a), plen).unwrap().trunc()),
                subnet_len: len,
                backend: Some(RawBackend { backend_type: Some("vxlan".into()), ..RawBackend::default() }),
                ..RawConfig::default()
            };
            if let Ok(c) = raw.validate() {
                let v = c.ipv4.unwrap();
                proptest::prop_assert!(v.subnet_len <= 30 && v.subnet_len >= plen + 2);
                proptest::prop_assert!(v.network.contains(&v.subnet_min) && v.network.contains(&v.subnet_max));
                proptest::prop_assert!(v.subnet_min <= v.subnet_max);
                proptest::prop_assert!(v.nth_subnet(0).is_some_and(|s| v.allows(s)));
            }
        }
    }

    #[test]
    fn to_json_round_trips() {
        let raw = RawConfig::parse(br#"{"network":"10.5.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan","VNI":3,"Port":4789}}"#).unwrap();
        assert_eq!(RawConfig::parse(raw.to_json().as_bytes()).unwrap(), raw);
        assert!(raw.to_json().contains(r#""Network":"10.5.0.0/16""#));
    }
}
