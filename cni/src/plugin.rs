//! The CNI operations: ADD, DEL, CHECK, VERSION, GC, STATUS.
//!
//! Host-side state is keyed by container ID + ifname (the host veth's name is derived from
//! them, and the IPAM files record them), so DEL and GC never need the pod's namespace. ADD
//! undoes everything it did when a later step fails.

use std::fs::File;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use linen_dataplane::wire::MacAddr;
use serde_json::{json, Value};

use crate::config::{parse_prefix, Env, Mode, NetConf, Range, SubnetEnv, SUPPORTED_VERSIONS};
use crate::error::{CniError, Code};
use crate::ipam::Store;
use crate::netlink::{self, format_mac, Netlink};
use crate::result::{AddResult, Interface, IpConfig};

/// What an invocation prints and how it exits.
#[derive(Debug)]
pub struct Outcome {
    /// JSON for stdout (`None`: print nothing).
    pub stdout: Option<Value>,
    /// Process exit status.
    pub exit_code: i32,
}

/// Runs one invocation: `env` is the `CNI_*` environment, `stdin` the configuration.
pub fn run(env: &Env, stdin: &[u8]) -> Outcome {
    let asked = crate::config::peek_version(stdin);
    let reply_version = asked
        .clone()
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_string());
    match dispatch(env, stdin, asked) {
        Ok(stdout) => Outcome { stdout, exit_code: 0 },
        Err(e) => Outcome { stdout: Some(e.to_json(&reply_version)), exit_code: 1 },
    }
}

fn dispatch(env: &Env, stdin: &[u8], asked: Option<String>) -> Result<Option<Value>, CniError> {
    match env.command.as_str() {
        "VERSION" => Ok(Some(json!({
            "cniVersion": asked
                .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
                .unwrap_or_else(|| "1.1.0".to_string()),
            "supportedVersions": SUPPORTED_VERSIONS,
        }))),
        "ADD" => {
            env.require_attachment()?;
            require_netns(env)?;
            let conf = NetConf::parse(stdin)?;
            add(env, &conf).map(Some)
        }
        "DEL" => {
            env.require_attachment()?;
            let conf = NetConf::parse(stdin)?;
            del(env, &conf).map(|()| None)
        }
        "CHECK" => {
            env.require_attachment()?;
            require_netns(env)?;
            let conf = NetConf::parse(stdin)?;
            check(env, &conf).map(|()| None)
        }
        "GC" => {
            let conf = NetConf::parse(stdin)?;
            gc(&conf).map(|()| None)
        }
        "STATUS" => {
            let conf = NetConf::parse(stdin)?;
            status(&conf).map(|()| None)
        }
        "" => Err(CniError::new(Code::InvalidEnv, "CNI_COMMAND is not set")),
        other => Err(CniError::new(
            Code::InvalidEnv,
            format!("CNI_COMMAND {other:?} is unknown (ADD, DEL, CHECK, GC, STATUS, VERSION)"),
        )),
    }
}

fn require_netns(env: &Env) -> Result<(), CniError> {
    if env.netns.is_empty() {
        return Err(CniError::new(Code::InvalidEnv, "CNI_NETNS is not set"));
    }
    Ok(())
}

fn open_netns(path: &str) -> Result<File, CniError> {
    File::open(path).map_err(|e| {
        CniError::new(Code::InvalidEnv, format!("CNI_NETNS {path}: cannot open the namespace: {e}"))
    })
}

/// Name of the host end of an attachment's veth: `lnv` and 12 hex digits of a hash of
/// container ID and ifname, so DEL and GC find it without the pod's namespace.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bit: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0u8]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("lnv{:012x}", h >> 16)
}

/// The range, gateway and MTU the node's configuration gives.
struct NodeNet {
    range: Range,
    mtu: u32,
    routes: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
}

fn node_net(conf: &NetConf) -> Result<NodeNet, CniError> {
    let env = SubnetEnv::load(&conf.subnet_file)?;
    let range = match (conf.ipam_ranges.first(), &env) {
        (Some(r), _) => r.clone(),
        (None, Some(env)) => env.range(),
        (None, None) => {
            return Err(CniError::new(
                Code::TryAgainLater,
                format!(
                    "this node has no pod subnet yet: {} does not exist (is linend running?)",
                    conf.subnet_file.display()
                ),
            ))
        }
    };
    let mtu = conf.mtu.or(env.as_ref().and_then(|e| e.mtu)).unwrap_or(1500);
    let routes = match &conf.ipam_routes {
        Some(routes) => routes.iter().map(|r| (r.dst, r.gw.or(Some(range.gateway)))).collect(),
        None => vec![(Ipv4Net::default(), Some(range.gateway))],
    };
    Ok(NodeNet { range, mtu, routes })
}

/// The single IPv4 address the runtime asked for, if any.
fn requested_ip(env: &Env, conf: &NetConf) -> Result<Option<Ipv4Addr>, CniError> {
    let mut asked: Vec<String> = conf.requested_ips.clone();
    if let Some(ip) = env.arg("IP") {
        asked.extend(ip.split(',').map(str::to_string));
    }
    let mut v4 = Vec::new();
    for a in &asked {
        let a = a.trim();
        let addr = a.split_once('/').map_or(a, |(ip, _)| ip);
        if addr.contains(':') {
            continue;
        }
        let ip: Ipv4Addr = addr.parse().map_err(|_| {
            CniError::new(Code::InvalidConfig, format!("requested IP {a:?} is not an IPv4 address"))
        })?;
        if !v4.contains(&ip) {
            v4.push(ip);
        }
    }
    match v4.as_slice() {
        [] => Ok(None),
        [ip] => Ok(Some(*ip)),
        _ => Err(CniError::new(
            Code::InvalidConfig,
            format!("several IPv4 addresses requested ({v4:?}); linen gives one per interface"),
        )),
    }
}

/// Everything a failed ADD must take back.
struct Undo<'a> {
    conf: &'a NetConf,
    env: &'a Env,
    reserved: bool,
    host_link: Option<String>,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(name) = &self.host_link {
            if let Ok(mut nl) = Netlink::open() {
                if let Ok(Some(l)) = nl.link_by_name(name) {
                    let _ = nl.del_link(l.index);
                }
            }
        }
        if self.reserved {
            if let Ok(store) = Store::lock(&self.conf.store_dir()) {
                let _ = store.release(&self.env.container_id, &self.env.ifname);
            }
        }
    }
}

fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let net = node_net(conf)?;
    let requested = requested_ip(env, conf)?;
    let netns = open_netns(&env.netns)?;
    let mut undo = Undo { conf, env, reserved: false, host_link: None, armed: true };

    let ip = {
        let store = Store::lock(&conf.store_dir())?;
        let ip = store.allocate(&net.range, &env.container_id, &env.ifname, requested)?;
        undo.reserved = true;
        ip
    };
    let prefix = net.range.subnet.prefix_len();

    let mut nl = Netlink::open()?;
    let bridge = ensure_bridge(&mut nl, &conf.bridge, net.range.gateway, prefix)?;

    let host_name = host_veth_name(&env.container_id, &env.ifname);
    if let Some(stale) = nl.link_by_name(&host_name)? {
        // Left by an earlier attempt of this same attachment.
        nl.del_link(stale.index)?;
    }
    let pod_side = match conf.mode {
        Mode::Bridge => env.ifname.clone(),
        Mode::Tap => crate::tap::veth_name(&env.ifname),
    };
    nl.add_veth(&host_name, &pod_side, &netns, net.mtu).map_err(|e| {
        if netlink::is_exists(&e) {
            CniError::new(
                Code::InvalidConfig,
                format!(
                    "cannot create {pod_side} in {}: an interface of that name exists (or {host_name} does)",
                    env.netns
                ),
            )
        } else {
            e.into()
        }
    })?;
    undo.host_link = Some(host_name.clone());
    let host = nl.link_by_name(&host_name)?.ok_or_else(|| {
        CniError::new(Code::Netlink, format!("{host_name} vanished after creation"))
    })?;
    // Hairpin lets a pod reach itself through the node (service addresses). Not for a TAP
    // attachment: its host end leads to another bridge, which would learn the guest's MAC from
    // its own reflected broadcasts on the wrong port and drop every reply.
    nl.attach_to_bridge(host.index, bridge.index, conf.mode == Mode::Bridge)?;

    let mut pod_nl = Netlink::open_in(&netns)?;
    let pod_if = match conf.mode {
        Mode::Bridge => {
            let pod_if = pod_nl.link_by_name(&env.ifname)?.ok_or_else(|| {
                CniError::new(Code::Netlink, format!("{} not found in {}", env.ifname, env.netns))
            })?;
            pod_nl.add_addr(pod_if.index, ip, prefix)?;
            pod_nl.set_up(pod_if.index)?;
            for (dst, gw) in &net.routes {
                pod_nl.add_route(dst.trunc().addr(), dst.prefix_len(), *gw, pod_if.index)?;
            }
            pod_if
        }
        Mode::Tap => crate::tap::wire(&mut pod_nl, &netns, &env.ifname, &pod_side, net.mtu)?,
    };

    let result = AddResult {
        interfaces: vec![
            Interface {
                name: bridge.name.clone(),
                mac: format_mac(bridge.mac),
                mtu: bridge.mtu,
                sandbox: None,
            },
            Interface {
                name: host.name.clone(),
                mac: format_mac(host.mac),
                mtu: net.mtu,
                sandbox: None,
            },
            Interface {
                name: pod_if.name.clone(),
                mac: format_mac(pod_if.mac),
                mtu: net.mtu,
                sandbox: Some(env.netns.clone()),
            },
        ],
        ips: vec![IpConfig {
            address: Ipv4Net::new_assert(ip, prefix),
            gateway: net.range.gateway,
            interface: 2,
        }],
        routes: net.routes.clone(),
        dns: conf.dns.clone(),
    };
    undo.armed = false;
    Ok(result.to_json(&conf.cni_version, conf.prev_result.as_ref()))
}

/// Finds or creates the bridge, makes sure it carries the gateway address and is up.
fn ensure_bridge(
    nl: &mut Netlink,
    name: &str,
    gateway: Ipv4Addr,
    prefix: u8,
) -> Result<netlink::Link, CniError> {
    let bridge = match nl.link_by_name(name)? {
        Some(b) => b,
        None => {
            let created = match nl.add_bridge(name) {
                Ok(()) => true,
                Err(e) if netlink::is_exists(&e) => false, // a concurrent ADD made it
                Err(e) => return Err(e.into()),
            };
            let bridge = nl.link_by_name(name)?.ok_or_else(|| {
                CniError::new(Code::Netlink, format!("bridge {name} vanished after creation"))
            })?;
            if created {
                // Pin the bridge's MAC so it does not change as ports come and go (results
                // report it, and neighbours cache it).
                if let Some(mac) = bridge.mac {
                    nl.set_mac(bridge.index, mac)?;
                }
            }
            bridge
        }
    };
    if bridge.kind.as_deref() != Some("bridge") {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("{name} exists but is not a bridge; set \"bridge\" to another name"),
        ));
    }
    if !nl.addrs(bridge.index)?.iter().any(|(a, _)| *a == gateway) {
        match nl.add_addr(bridge.index, gateway, prefix) {
            Ok(()) => {}
            Err(e) if netlink::is_exists(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !bridge.up {
        nl.set_up(bridge.index)?;
    }
    enable_forwarding()?;
    Ok(bridge)
}

/// The node forwards pod traffic between cni0 and the overlay: turn on IPv4 forwarding in the
/// node namespace (`/proc/sys/net` shows the namespace of the process that opens it, and this
/// process never leaves the node namespace), as the reference bridge plugin's `isGateway` does.
fn enable_forwarding() -> Result<(), CniError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(PATH, "1").map_err(|e| {
        CniError::new(Code::IoFailure, format!("cannot enable IPv4 forwarding ({PATH}): {e}"))
    })
}

fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let mut nl = Netlink::open()?;
    remove_host_link(&mut nl, &host_veth_name(&env.container_id, &env.ifname))?;
    if conf.mode == Mode::Tap && !env.netns.is_empty() {
        // The TAP device lives only in the pod; remove it when the pod still exists.
        if let Ok(netns) = File::open(&env.netns) {
            crate::tap::unwire(&netns, &env.ifname);
        }
    }
    let store = Store::lock(&conf.store_dir())?;
    store.release(&env.container_id, &env.ifname)?;
    Ok(())
}

fn remove_host_link(nl: &mut Netlink, name: &str) -> Result<(), CniError> {
    if let Some(l) = nl.link_by_name(name)? {
        match nl.del_link(l.index) {
            Ok(()) => {}
            Err(e) if netlink::is_no_device(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn check_failed(msg: String) -> CniError {
    CniError::new(Code::CheckFailed, msg)
}

fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(Code::InvalidConfig, "CHECK needs prevResult (the result of ADD)")
    })?;
    let interfaces = prev.get("interfaces").and_then(Value::as_array).cloned().unwrap_or_default();
    let index = interfaces
        .iter()
        .position(|i| {
            i.get("name").and_then(Value::as_str) == Some(env.ifname.as_str())
                && i.get("sandbox").and_then(Value::as_str).is_some()
        })
        .ok_or_else(|| {
            check_failed(format!("prevResult has no interface {} in a sandbox", env.ifname))
        })?;
    let mut want = Vec::new();
    for ip in prev.get("ips").and_then(Value::as_array).cloned().unwrap_or_default() {
        if ip.get("interface").and_then(Value::as_u64) != Some(index as u64) {
            continue;
        }
        let Some(addr) = ip.get("address").and_then(Value::as_str) else { continue };
        let net = parse_prefix(addr)
            .map_err(|e| CniError::new(Code::DecodeFailure, format!("prevResult ips: {e}")))?;
        want.push(net);
    }

    let netns = open_netns(&env.netns)?;
    let mut pod_nl = Netlink::open_in(&netns)?;
    let pod_if = match conf.mode {
        Mode::Tap => crate::tap::check(&mut pod_nl, &env.ifname)?,
        Mode::Bridge => {
            let pod_if = pod_nl.link_by_name(&env.ifname)?.ok_or_else(|| {
                check_failed(format!("interface {} is missing from {}", env.ifname, env.netns))
            })?;
            check_pod_addressing(&mut pod_nl, &pod_if, &want, prev, &env.ifname)?;
            pod_if
        }
    };
    if let Some(mac) = interfaces[index].get("mac").and_then(Value::as_str) {
        if pod_if.mac.is_none() || mac.parse::<MacAddr>().ok() != pod_if.mac {
            return Err(check_failed(format!(
                "{} has MAC {} but ADD reported {mac}",
                env.ifname,
                format_mac(pod_if.mac)
            )));
        }
    }

    let mut nl = Netlink::open()?;
    let host_name = host_veth_name(&env.container_id, &env.ifname);
    let host = nl
        .link_by_name(&host_name)?
        .ok_or_else(|| check_failed(format!("host interface {host_name} is missing")))?;
    let bridge = nl
        .link_by_name(&conf.bridge)?
        .ok_or_else(|| check_failed(format!("bridge {} is missing", conf.bridge)))?;
    if host.master != Some(bridge.index) {
        return Err(check_failed(format!("{host_name} is not attached to {}", conf.bridge)));
    }
    let store = Store::lock(&conf.store_dir())?;
    let held = store.held_by(&env.container_id, &env.ifname)?;
    for net in &want {
        if !held.contains(&net.addr()) {
            return Err(check_failed(format!(
                "IPAM holds no reservation of {} for this container",
                net.addr()
            )));
        }
    }
    Ok(())
}

fn check_pod_addressing(
    pod_nl: &mut Netlink,
    pod_if: &netlink::Link,
    want: &[Ipv4Net],
    prev: &Value,
    ifname: &str,
) -> Result<(), CniError> {
    let have = pod_nl.addrs(pod_if.index)?;
    for net in want {
        if !have.contains(&(net.addr(), net.prefix_len())) {
            return Err(check_failed(format!("{ifname} lacks its address {net}")));
        }
    }
    let routes = pod_nl.routes(pod_if.index)?;
    for r in prev.get("routes").and_then(Value::as_array).cloned().unwrap_or_default() {
        let Some(dst) = r.get("dst").and_then(Value::as_str) else { continue };
        let Ok(dst) = parse_prefix(dst) else { continue };
        if !routes.iter().any(|(d, l, _)| *d == dst.trunc().addr() && *l == dst.prefix_len()) {
            return Err(check_failed(format!("route to {dst} is missing in the pod")));
        }
    }
    Ok(())
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    // Without the list nothing can be known to be stale: refuse rather than release everything.
    let valid = conf.valid_attachments.clone().ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "GC needs cni.dev/valid-attachments (or cni.dev/attachments); nothing was released",
        )
    })?;
    let keep: Vec<String> = valid.iter().map(|(c, i)| host_veth_name(c, i)).collect();
    let store = Store::lock(&conf.store_dir())?;
    for r in store.reservations()? {
        let kept = valid
            .iter()
            .any(|(c, i)| *c == r.container_id && (r.ifname.is_empty() || *i == r.ifname));
        if !kept {
            store.release_ip(r.ip)?;
        }
    }
    drop(store);
    // Host ends on our bridge that belong to no valid attachment (also ones a crashed ADD left).
    let mut nl = Netlink::open()?;
    let Some(bridge) = nl.link_by_name(&conf.bridge)? else { return Ok(()) };
    for l in nl.links()? {
        if l.master == Some(bridge.index) && l.name.starts_with("lnv") && !keep.contains(&l.name) {
            match nl.del_link(l.index) {
                Ok(()) => {}
                Err(e) if netlink::is_no_device(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    if !conf.ipam_ranges.is_empty() {
        return Ok(());
    }
    match SubnetEnv::load(&conf.subnet_file) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(CniError::new(
            Code::NotAvailable,
            format!(
                "this node has no pod subnet yet: {} does not exist (is linend running?)",
                conf.subnet_file.display()
            ),
        )),
        Err(e) => Err(CniError::new(Code::NotAvailable, e.msg)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_eq!(a.len(), 15);
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(a, host_veth_name("abd", "eth0"));
    }
}
