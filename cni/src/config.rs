//! The network configuration the runtime passes on stdin, the node's `subnet.env`, and the
//! `CNI_*` environment — parsed first, then validated, each failure a CNI error with the spec's
//! code. Unknown keys are ignored everywhere, as the spec asks.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{CniError, Code};
use ipnet::Ipv4Net;

/// CNI versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Default path of the node's subnet file (flannel's, also written by linend).
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// Default IPAM data directory (host-local's).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// How a pod is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A veth pair, host end on the bridge.
    Bridge,
    /// A TAP device in the pod namespace for a VM-based sandbox, bridged onto the node bridge.
    Tap,
}

/// One IPAM range, host-local style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet addresses come from.
    pub subnet: Ipv4Net,
    /// First address handed out.
    pub start: Ipv4Addr,
    /// Last address handed out.
    pub end: Ipv4Addr,
    /// The gateway (never handed out).
    pub gateway: Ipv4Addr,
}

/// A route for the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: Ipv4Net,
    /// Next hop (the range's gateway when absent).
    pub gw: Option<Ipv4Addr>,
}

/// The plugin configuration, validated and with every default filled in.
#[derive(Debug, Clone)]
pub struct NetConf {
    /// `cniVersion` as asked by the runtime.
    pub cni_version: String,
    /// Network name (names the IPAM directory).
    pub name: String,
    /// Path of subnet.env.
    pub subnet_file: PathBuf,
    /// Bridge name.
    pub bridge: String,
    /// Wiring mode.
    pub mode: Mode,
    /// IPAM data directory (the store lives in `<dataDir>/<name>`).
    pub data_dir: PathBuf,
    /// Ranges from `ipam.ranges`; empty means "from subnet.env".
    pub ipam_ranges: Vec<Range>,
    /// Routes from `ipam.routes`; `None` means the default route.
    pub ipam_routes: Option<Vec<Route>>,
    /// MTU override; `None` means `FLANNEL_MTU` from subnet.env (else 1500).
    pub mtu: Option<u32>,
    /// `dns`, passed into the result as given.
    pub dns: Option<Value>,
    /// Fixed IPs asked for through `runtimeConfig.ips` or `args.cni.ips`.
    pub requested_ips: Vec<String>,
    /// Chained result of the previous plugin, as raw JSON.
    pub prev_result: Option<Value>,
    /// GC: attachments to keep, `(containerID, ifname)`.
    pub valid_attachments: Option<Vec<(String, String)>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: Option<String>,
    name: Option<String>,
    subnet_file: Option<PathBuf>,
    bridge: Option<String>,
    mode: Option<String>,
    data_dir: Option<PathBuf>,
    mtu: Option<u32>,
    ipam: Option<RawIpam>,
    dns: Option<Value>,
    runtime_config: Option<RawRuntimeConfig>,
    args: Option<Value>,
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<RawAttachment>>,
    #[serde(rename = "cni.dev/attachments")]
    attachments: Option<Vec<RawAttachment>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    ranges: Option<Vec<Vec<RawRange>>>,
    subnet: Option<String>,
    range_start: Option<String>,
    range_end: Option<String>,
    gateway: Option<String>,
    routes: Option<Vec<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: String,
    range_start: Option<String>,
    range_end: Option<String>,
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    gw: Option<String>,
}

#[derive(Deserialize)]
struct RawRuntimeConfig {
    ips: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAttachment {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

/// Reads only `cniVersion`, for VERSION and for choosing the version errors are written in.
pub fn peek_version(stdin: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    serde_json::from_slice::<V>(stdin).ok().and_then(|v| v.cni_version)
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(Code::InvalidConfig, msg)
}

fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr, CniError> {
    s.parse().map_err(|_| invalid(format!("{what}: {s:?} is not an IPv4 address")))
}

impl NetConf {
    /// Decodes and validates the configuration.
    ///
    /// # Errors
    /// Code 6 when stdin is not a JSON object of the expected shape, 7 when a value is invalid,
    /// 1 when `cniVersion` is not one this plugin speaks.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let raw: RawConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(Code::DecodeFailure, "cannot decode the network configuration")
                .with_details(e.to_string())
        })?;
        let cni_version = raw.cni_version.unwrap_or_else(|| "0.3.0".to_string());
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "cniVersion {cni_version} is not supported; linen speaks {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let name = raw.name.unwrap_or_else(|| "linen".to_string());
        if name.is_empty()
            || name.contains('/')
            || name.starts_with('.')
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(invalid(format!(
                "network name {name:?} is invalid: use letters, digits, '_', '.', '-'"
            )));
        }
        let mode = match raw.mode.as_deref() {
            None | Some("bridge") => Mode::Bridge,
            Some("tap") => Mode::Tap,
            Some(other) => {
                return Err(invalid(format!(
                    "mode {other:?} is invalid: use \"bridge\" or \"tap\""
                )))
            }
        };
        let bridge = raw.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ']) {
            return Err(invalid(format!("bridge name {bridge:?} is invalid (1-15 characters)")));
        }
        if let Some(mtu) = raw.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(invalid(format!("mtu {mtu} is out of range 68-65535")));
            }
        }
        let (ipam_ranges, ipam_routes) = match raw.ipam {
            None => (Vec::new(), None),
            Some(ipam) => parse_ipam(ipam)?,
        };
        let mut requested_ips = Vec::new();
        if let Some(rc) = raw.runtime_config {
            requested_ips.extend(rc.ips.unwrap_or_default());
        }
        if let Some(ips) = raw.args.as_ref().and_then(|a| a.get("cni")).and_then(|c| c.get("ips")) {
            let ips = ips
                .as_array()
                .ok_or_else(|| invalid("args.cni.ips must be a list of addresses"))?;
            for ip in ips {
                let ip = ip.as_str().ok_or_else(|| invalid("args.cni.ips must hold strings"))?;
                requested_ips.push(ip.to_string());
            }
        }
        let valid_attachments = raw
            .valid_attachments
            .or(raw.attachments)
            .map(|list| list.into_iter().map(|a| (a.container_id, a.ifname)).collect::<Vec<_>>());
        Ok(NetConf {
            cni_version,
            name,
            subnet_file: raw.subnet_file.unwrap_or_else(|| DEFAULT_SUBNET_FILE.into()),
            bridge,
            mode,
            data_dir: raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            ipam_ranges,
            ipam_routes,
            mtu: raw.mtu,
            dns: raw.dns,
            requested_ips,
            prev_result: raw.prev_result.filter(|v| !v.is_null()),
            valid_attachments,
        })
    }

    /// Directory of this network's IPAM store.
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }
}

fn parse_ipam(ipam: RawIpam) -> Result<(Vec<Range>, Option<Vec<Route>>), CniError> {
    let mut raw_ranges: Vec<RawRange> = Vec::new();
    if let Some(sets) = ipam.ranges {
        if sets.len() > 1 {
            return Err(invalid("ipam.ranges: linen takes one range set (IPv4 only)"));
        }
        raw_ranges.extend(sets.into_iter().flatten());
    }
    if let Some(subnet) = ipam.subnet {
        raw_ranges.push(RawRange {
            subnet,
            range_start: ipam.range_start,
            range_end: ipam.range_end,
            gateway: ipam.gateway,
        });
    }
    let mut ranges = Vec::new();
    for r in raw_ranges {
        ranges.push(range_from(&r)?);
    }
    let routes = match ipam.routes {
        None => None,
        Some(list) => {
            let mut routes = Vec::new();
            for r in list {
                let dst = parse_prefix(&r.dst).map_err(|e| invalid(format!("ipam.routes: {e}")))?;
                let gw = r.gw.as_deref().map(|g| parse_ip("ipam.routes gw", g)).transpose()?;
                routes.push(Route { dst, gw });
            }
            Some(routes)
        }
    };
    Ok((ranges, routes))
}

fn range_from(r: &RawRange) -> Result<Range, CniError> {
    let subnet = parse_prefix(&r.subnet).map_err(|e| invalid(format!("ipam subnet: {e}")))?;
    if subnet.prefix_len() > 30 {
        return Err(invalid(format!("ipam subnet {subnet} is too small (at most /30)")));
    }
    let gateway = match &r.gateway {
        Some(g) => parse_ip("ipam gateway", g)?,
        None => first_host(&subnet),
    };
    let start = match &r.range_start {
        Some(s) => parse_ip("ipam rangeStart", s)?,
        None => first_host(&subnet),
    };
    let end = match &r.range_end {
        Some(s) => parse_ip("ipam rangeEnd", s)?,
        None => last_host(&subnet),
    };
    for (what, ip) in [("rangeStart", start), ("rangeEnd", end), ("gateway", gateway)] {
        if !subnet.contains(&ip) {
            return Err(invalid(format!("ipam {what} {ip} is outside subnet {subnet}")));
        }
    }
    if u32::from(start) > u32::from(end) {
        return Err(invalid(format!("ipam rangeStart {start} is after rangeEnd {end}")));
    }
    Ok(Range { subnet, start, end, gateway })
}

/// Parses `a.b.c.d/len` (the address may have host bits set, as an interface address does).
pub fn parse_prefix(s: &str) -> Result<Ipv4Net, String> {
    s.parse().map_err(|_| format!("{s:?} is not an IPv4 prefix (a.b.c.d/len, len 0-32)"))
}

/// The first address after the network address.
fn first_host(net: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).wrapping_add(1))
}

/// The last address before the broadcast address.
fn last_host(net: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.broadcast()).wrapping_sub(1))
}

/// The node's subnet, as flannel's and linend's `subnet.env` state it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_NETWORK`: the whole cluster network.
    pub network: Option<Ipv4Net>,
    /// `FLANNEL_SUBNET`: this node's pod subnet, written as `<gateway>/<len>`.
    pub subnet: Ipv4Net,
    /// The gateway address inside that subnet (`FLANNEL_SUBNET`'s address part).
    pub gateway: Ipv4Addr,
    /// `FLANNEL_MTU`.
    pub mtu: Option<u32>,
}

impl SubnetEnv {
    /// Reads and parses the file. `Ok(None)` when it does not exist (the node has no subnet yet).
    ///
    /// # Errors
    /// Code 7 when the file exists but is not valid.
    pub fn load(path: &Path) -> Result<Option<SubnetEnv>, CniError> {
        match std::fs::read_to_string(path) {
            Ok(text) => SubnetEnv::parse(&text)
                .map(Some)
                .map_err(|e| invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(CniError::new(Code::IoFailure, format!("cannot read {}: {e}", path.display())))
            }
        }
    }

    /// Parses `KEY=VALUE` lines.
    ///
    /// # Errors
    /// A message naming the bad key.
    pub fn parse(text: &str) -> Result<SubnetEnv, String> {
        let mut vars = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                vars.insert(k.trim(), v.trim().trim_matches('"'));
            }
        }
        let subnet_s = vars.get("FLANNEL_SUBNET").ok_or("FLANNEL_SUBNET is missing")?;
        let (gw_s, len_s) =
            subnet_s.split_once('/').ok_or(format!("FLANNEL_SUBNET {subnet_s:?} has no /len"))?;
        let gateway: Ipv4Addr =
            gw_s.parse().map_err(|_| format!("FLANNEL_SUBNET {subnet_s:?} is not IPv4/len"))?;
        let len: u8 = len_s
            .parse()
            .ok()
            .filter(|l| *l <= 30)
            .ok_or(format!("FLANNEL_SUBNET {subnet_s:?}: prefix length must be 0-30"))?;
        let subnet = Ipv4Net::new_assert(gateway, len).trunc();
        let network = match vars.get("FLANNEL_NETWORK") {
            Some(n) if !n.is_empty() => {
                Some(parse_prefix(n).map_err(|e| format!("FLANNEL_NETWORK: {e}"))?)
            }
            _ => None,
        };
        let mtu = match vars.get("FLANNEL_MTU") {
            Some(m) if !m.is_empty() => Some(
                m.parse::<u32>()
                    .ok()
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or(format!("FLANNEL_MTU {m:?} is not an MTU"))?,
            ),
            _ => None,
        };
        Ok(SubnetEnv { network, subnet, gateway, mtu })
    }

    /// The range subnet.env implies: the whole subnet but network, gateway and broadcast.
    pub fn range(&self) -> Range {
        Range {
            subnet: self.subnet,
            start: first_host(&self.subnet),
            end: last_host(&self.subnet),
            gateway: self.gateway,
        }
    }
}

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be empty on DEL).
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, split into pairs.
    pub args: Vec<(String, String)>,
}

impl Env {
    /// Reads the variables through `get` (the process environment in the binary).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Env {
        let args = get("CNI_ARGS").unwrap_or_default();
        Env {
            command: get("CNI_COMMAND").unwrap_or_default(),
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args: args
                .split(';')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        }
    }

    /// Value of `CNI_ARGS` key `key`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Fails with code 4 unless the container ID and ifname are valid.
    ///
    /// # Errors
    /// Code 4 naming the variable.
    pub fn require_attachment(&self) -> Result<(), CniError> {
        if self.container_id.is_empty() {
            return Err(CniError::new(Code::InvalidEnv, "CNI_CONTAINERID is not set"));
        }
        if !self.container_id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
            return Err(CniError::new(
                Code::InvalidEnv,
                format!(
                    "CNI_CONTAINERID {:?} has characters other than [A-Za-z0-9_.-]",
                    self.container_id
                ),
            ));
        }
        if self.ifname.is_empty() {
            return Err(CniError::new(Code::InvalidEnv, "CNI_IFNAME is not set"));
        }
        if self.ifname.len() > 15
            || self.ifname == "."
            || self.ifname == ".."
            || self.ifname.contains(['/', ':', ' ', '\t', '\n'])
        {
            return Err(CniError::new(
                Code::InvalidEnv,
                format!("CNI_IFNAME {:?} is not a valid interface name", self.ifname),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_an_almost_empty_config() {
        let c =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"linen","zz":1}"#).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert_eq!(c.mode, Mode::Bridge);
        assert_eq!(c.subnet_file, PathBuf::from(DEFAULT_SUBNET_FILE));
        assert_eq!(c.store_dir(), PathBuf::from("/var/lib/cni/networks/n"));
    }

    #[test]
    fn bad_values_are_code_7_and_bad_json_code_6() {
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","mode":"x"}"#).unwrap_err();
        assert_eq!(e.code, Code::InvalidConfig);
        let e = NetConf::parse(b"{nope").unwrap_err();
        assert_eq!(e.code, Code::DecodeFailure);
        let e = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n"}"#).unwrap_err();
        assert_eq!(e.code, Code::IncompatibleVersion);
    }

    #[test]
    fn fixed_ips_from_runtime_config_and_args() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"ips":["10.1.0.9/24"]},
                "args":{"cni":{"ips":["10.1.0.10"]}}}"#,
        )
        .unwrap();
        assert_eq!(c.requested_ips, vec!["10.1.0.9/24", "10.1.0.10"]);
    }

    #[test]
    fn subnet_env_as_flannel_writes_it() {
        let s = SubnetEnv::parse(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.8.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        assert_eq!(s.subnet.to_string(), "10.244.8.0/24");
        assert_eq!(s.gateway, Ipv4Addr::new(10, 244, 8, 1));
        assert_eq!(s.mtu, Some(1450));
        let r = s.range();
        assert_eq!(r.start, Ipv4Addr::new(10, 244, 8, 1));
        assert_eq!(r.end, Ipv4Addr::new(10, 244, 8, 254));
        assert!(SubnetEnv::parse("FLANNEL_SUBNET=10.244.8.1\n").is_err());
    }

    proptest::proptest! {
        /// Whatever the runtime sends, decoding answers with a config or an error, never a panic.
        #[test]
        fn config_decoding_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = NetConf::parse(&bytes);
            let _ = peek_version(&bytes);
        }

        #[test]
        fn config_with_arbitrary_values_never_panics(
            subnet in "[0-9./]{0,20}", start in "[0-9.]{0,16}", mode in "[a-z]{0,6}", mtu in 0u32..100_000
        ) {
            let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "n", "mode": mode, "mtu": mtu,
                "ipam": {"subnet": subnet, "rangeStart": start}});
            let _ = NetConf::parse(conf.to_string().as_bytes());
        }

        #[test]
        fn subnet_env_and_cni_args_never_panic(text in "[A-Z_=0-9./\n;]{0,120}") {
            let _ = SubnetEnv::parse(&text);
            let env = Env::from_lookup(|_| Some(text.clone()));
            let _ = env.require_attachment();
        }
    }

    #[test]
    fn cni_args_tolerate_unknown_keys() {
        let e = Env::from_lookup(|k| {
            (k == "CNI_ARGS").then(|| "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.1.0.7".to_string())
        });
        assert_eq!(e.arg("IP"), Some("10.1.0.7"));
        assert_eq!(e.arg("nope"), None);
    }
}
