//! Hosts for tests of `linend` in etcd mode: a switched underlay (`192.168.77.0/24`, a bridge in a
//! switch namespace), and nodes that each run `linend --datapath tap`, claim their subnet in etcd
//! and carry one pod on `cni0`, wired from the subnet file linend writes, as the CNI plugin would.
//!
//! Node `k` is the namespace `n<k>` at `192.168.77.k` with the pod namespace `n<k>p0`; etcd runs
//! wherever the test puts it on the same underlay (see [`crate::etcd`]). Everything lives in the
//! testbed's namespaces; processes are started through [`Testbed::spawn`], so they are killed by
//! PID when the testbed drops, also on panic.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cluster::running;
use crate::{wait_for, workspace_bin, Netns, Testbed};

/// The underlay switch: a bridge `br0` in its own namespace.
pub fn switch(tb: &mut Testbed) -> Netns {
    let sw = tb.netns("sw");
    sw.sh("ip link add br0 type bridge && ip link set br0 up");
    sw
}

/// A namespace named `name` with `eth0` at `ip/24` on the switch (switch port `p<name>`), with
/// transmit checksum offload off on both ends, as on a real wire.
pub fn attach(tb: &mut Testbed, sw: &Netns, name: &str, ip: Ipv4Addr) -> Netns {
    let ns = tb.netns(name);
    let port = format!("p{name}");
    tb.veth(&ns, "eth0", sw, &port);
    sw.sh(&format!("ip link set {port} master br0 && ethtool -K {port} tx off >/dev/null"));
    ns.sh(&format!("ip addr add {ip}/24 dev eth0 && ethtool -K eth0 tx off >/dev/null"));
    ns
}

/// One node: host and pod namespaces, where linend writes its subnet file and log, its PID.
pub struct Node {
    /// The node's number (`n<k>`, `192.168.77.k`).
    pub k: u8,
    /// The host namespace (`eth0` on the underlay, `cni0`, linend).
    pub host: Netns,
    /// The pod namespace (`eth0` on `cni0`).
    pub pod: Netns,
    /// The underlay address.
    pub ip: Ipv4Addr,
    /// linend's `--subnet-file`.
    pub subnet_file: PathBuf,
    /// linend's stderr.
    pub log: PathBuf,
    /// linend's PID while it runs.
    pub pid: Option<u32>,
    /// The claimed subnet (`10.244.37.0/24`) once [`wire_pod`] has run.
    pub subnet: String,
}

impl Node {
    /// The pod's address: `.2` of the claimed subnet.
    pub fn pod_ip(&self) -> String {
        let net: Ipv4Addr =
            self.subnet.split('/').next().and_then(|a| a.parse().ok()).expect("subnet");
        Ipv4Addr::from(u32::from(net) + 2).to_string()
    }

    /// Everything linend logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether linend was started and still runs.
    pub fn is_running(&self) -> bool {
        self.pid.is_some_and(running)
    }
}

/// A router on the switch at `ip/24` (namespace `name`, forwarding on) for nodes on segments of
/// their own ([`attach_behind`]), so that some nodes reach others only through a gateway.
pub fn router(tb: &mut Testbed, sw: &Netns, name: &str, ip: Ipv4Addr) -> Netns {
    let r = attach(tb, sw, name, ip);
    r.sh("sysctl -qw net.ipv4.ip_forward=1");
    r
}

/// A namespace `name` on a segment of its own behind `router`: `eth0` at `ip/24`, the router's
/// side `e<name>` at `gw/24`, a default route via `gw`, transmit checksum offload off on both
/// ends.
pub fn attach_behind(
    tb: &mut Testbed,
    router: &Netns,
    name: &str,
    ip: Ipv4Addr,
    gw: Ipv4Addr,
) -> Netns {
    let ns = tb.netns(name);
    let port = format!("e{name}");
    tb.veth(&ns, "eth0", router, &port);
    router.sh(&format!("ip addr add {gw}/24 dev {port} && ethtool -K {port} tx off >/dev/null"));
    ns.sh(&format!(
        "ip addr add {ip}/24 dev eth0 && ethtool -K eth0 tx off >/dev/null
         ip route add default via {gw}"
    ));
    ns
}

/// Node `k` at `192.168.77.k`: namespaces, underlay link, `cni0` and one pod, without linend.
pub fn new_node(tb: &mut Testbed, sw: &Netns, k: u8, dir: &Path) -> Node {
    let ip = Ipv4Addr::new(192, 168, 77, k);
    let host = attach(tb, sw, &format!("n{k}"), ip);
    host.sh(
        "sysctl -qw net.ipv4.ip_forward=1 && ip link add cni0 type bridge && ip link set cni0 up",
    );
    let pod = tb.netns(&format!("n{k}p0"));
    tb.veth(&pod, "eth0", &host, "veth0");
    host.sh("ip link set veth0 master cni0");
    pod.sh("ip link set eth0 mtu 1450");
    Node {
        k,
        host,
        pod,
        ip,
        subnet_file: dir.join(format!("n{k}.subnet.env")),
        log: dir.join(format!("n{k}.linend.log")),
        pid: None,
        subnet: String::new(),
    }
}

/// Starts `linend --etcd-endpoints <endpoints> --datapath tap --iface eth0` in the node's host
/// namespace, its log appended to [`Node::log`]; `configure` adds flags or environment (TLS).
pub fn start_linend(
    tb: &Testbed,
    n: &mut Node,
    endpoints: &str,
    configure: impl FnOnce(&mut Command),
) {
    n.pid = Some(spawn_linend(tb, &n.host, endpoints, "tap", &n.subnet_file, &n.log, configure));
}

/// Starts `linend --etcd-endpoints <endpoints> --datapath <datapath> --iface eth0
/// --subnet-file <subnet_file>` in `host`, its log appended to `log`; `configure` adds flags or
/// environment. Returns its PID; the testbed kills it when it drops.
pub fn spawn_linend(
    tb: &Testbed,
    host: &Netns,
    endpoints: &str,
    datapath: &str,
    subnet_file: &Path,
    log: &Path,
    configure: impl FnOnce(&mut Command),
) -> u32 {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("linend log");
    let mut cmd = host.command(&workspace_bin("linend").to_string_lossy());
    cmd.args(["--etcd-endpoints", endpoints, "--datapath", datapath, "--iface", "eth0"])
        .arg("--subnet-file")
        .arg(subnet_file)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log);
    configure(&mut cmd);
    tb.spawn(cmd)
}

/// Sends SIGTERM to the node's linend and waits up to 5 s for it to exit (then kills it and
/// fails the test: linend must honour SIGTERM). Does nothing when linend is not running.
pub fn stop_linend(tb: &Testbed, n: &mut Node) {
    let Some(pid) = n.pid.take() else { return };
    assert!(terminate(tb, pid), "linend on n{} ignored SIGTERM", n.k);
}

/// Sends SIGTERM to `pid` (started with [`Testbed::spawn`]) and waits up to 5 s for it to exit;
/// kills it after that. Whether it exited on SIGTERM.
pub fn terminate(tb: &Testbed, pid: u32) -> bool {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let gone = wait_for(Duration::from_secs(5), || (!running(pid)).then_some(()));
    tb.kill(pid);
    gone.is_some()
}

/// Waits up to 20 s for linend's subnet file and returns FLANNEL_SUBNET as (gateway, prefix
/// length); fails the test with linend's log if it exits or writes none.
pub fn read_subnet(n: &Node) -> (Ipv4Addr, String) {
    wait_subnet_file(&n.subnet_file, n.pid).unwrap_or_else(|| {
        panic!("n{} wrote no subnet file (or exited); log:\n{}", n.k, n.log_text())
    })
}

/// Waits up to 20 s for the subnet file at `path` and returns FLANNEL_SUBNET as (gateway, prefix
/// length); `None` when none appears or the writer `pid` exits first.
pub fn wait_subnet_file(path: &Path, pid: Option<u32>) -> Option<(Ipv4Addr, String)> {
    let got = wait_for(Duration::from_secs(20), || {
        if pid.is_some_and(|p| !running(p)) {
            return Some(None);
        }
        let text = std::fs::read_to_string(path).ok()?;
        let line = text.lines().find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))?;
        let (gw, len) = line.split_once('/')?;
        Some(Some((gw.parse::<Ipv4Addr>().ok()?, len.to_string())))
    });
    got.flatten()
}

/// The subnet (`net/len`) in the node's subnet file, once there.
pub fn subnet_from_file(n: &Node) -> String {
    let (gw, len) = read_subnet(n);
    format!("{}/{len}", Ipv4Addr::from(u32::from(gw) - 1))
}

/// Waits for the subnet file, then puts the gateway on `cni0` and the pod at `.2`, and records
/// the subnet in [`Node::subnet`].
pub fn wire_pod(n: &mut Node) {
    let (gw, len) = read_subnet(n);
    n.subnet = format!("{}/{len}", Ipv4Addr::from(u32::from(gw) - 1));
    let pod = Ipv4Addr::from(u32::from(gw) + 1);
    n.host.sh(&format!("ip addr flush dev cni0 && ip addr add {gw}/{len} dev cni0"));
    n.pod.sh(&format!(
        "ip addr flush dev eth0 && ip addr add {pod}/{len} dev eth0 && ip route add default via {gw}"
    ));
}

/// Whether a ping from `from` to `to` gets an answer within `timeout`.
pub fn reachable(from: &Netns, to: &str, timeout: Duration) -> bool {
    wait_for(timeout, || {
        from.sh_output(&format!("ping -c 1 -W 1 {to}")).status.success().then_some(())
    })
    .is_some()
}

/// Fails the test (with both linend logs) unless every node's pod reaches every other node's pod
/// within 10 s.
pub fn assert_full_mesh(nodes: &[Node]) {
    for a in nodes {
        for b in nodes {
            if a.k != b.k {
                assert!(
                    reachable(&a.pod, &b.pod_ip(), Duration::from_secs(10)),
                    "pod on n{} cannot reach pod {} on n{}\n--- n{} log ---\n{}\n--- n{} log ---\n{}",
                    a.k,
                    b.pod_ip(),
                    b.k,
                    a.k,
                    a.log_text(),
                    b.k,
                    b.log_text()
                );
            }
        }
    }
}

/// Fails the test unless the nodes' subnets are distinct.
pub fn assert_distinct_subnets(nodes: &[Node]) {
    let subnets: std::collections::HashSet<&str> =
        nodes.iter().map(|n| n.subnet.as_str()).collect();
    assert_eq!(subnets.len(), nodes.len(), "subnets not distinct: {subnets:?}");
}

/// The etcd key of `subnet`'s lease under `prefix` (`10.244.3.0/24` → `…/subnets/10.244.3.0-24`).
pub fn lease_key(prefix: &str, subnet: &str) -> String {
    format!("{prefix}/subnets/{}", subnet.replace('/', "-"))
}

/// The leases in the output of `etcdctl get --prefix <prefix>/subnets/` (key and value lines in
/// turn) as (key, value JSON); fails the test on a value that is not JSON.
pub fn parse_leases(etcdctl_output: &str) -> Vec<(String, serde_json::Value)> {
    let lines: Vec<&str> = etcdctl_output.lines().collect();
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| {
            let v = serde_json::from_str(c[1])
                .unwrap_or_else(|e| panic!("lease {} is not JSON ({e}): {}", c[0], c[1]));
            (c[0].to_string(), v)
        })
        .collect()
}
