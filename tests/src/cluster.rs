//! A reusable N-node cluster on a [`Testbed`]: nodes on one underlay, pods on a `cni0` bridge per
//! node, and per node an overlay — linend with static peers (any `--datapath`) or the kernel's
//! VXLAN device configured exactly as flannel's vxlan backend configures it.
//!
//! ```text
//!  pod netns n1p0 ─veth─┐                                          ┌─veth─ pod netns n2p0
//!  pod netns n1p1 ─veth─┤ cni0 10.244.1.1/24                        │ ...
//!                node n1: routing ─ linen.1 | flannel.1 ─ eth0 ══ underlay ══ eth0 ─ node n2 ...
//! ```
//!
//! - Node `k` (1-based) has the pod subnet `10.244.k.0/24` (gateway `.1` on `cni0`, pods from `.2`)
//!   and the underlay address `192.168.77.k/24` on `eth0`. Two nodes share one veth pair; three or
//!   more hang off a bridge in a switch namespace. Underlay devices run with `tx off` by default:
//!   a veth with transmit checksum offload hands its peer frames whose checksums are still
//!   unfinished, which a real wire never does.
//! - Pods get the overlay MTU (underlay MTU − 50) as the CNI plugin would give them, unless
//!   [`ClusterBuilder::pod_mtu`] says otherwise.
//! - [`Overlay::Linen`] runs `linend --static-peers` with every other node as a peer, a stats file
//!   rewritten every 100 ms and a log file; [`Overlay::KernelVxlan`] builds `flannel.1` with
//!   flannel's recipe (`dataplane/tests/fixtures/README.md`). Both kinds mix freely: every node
//!   has a fixed VtepMAC that all peers know.
//!
//! - With [`ClusterBuilder::etcd`], linen nodes run `linend` in etcd mode instead: the builder
//!   starts etcd in its own namespace on the (then always switched) underlay at
//!   [`ETCD_IP`], writes the network config, seeds each linen node's subnet file with its subnet
//!   (which linend then claims in etcd) and writes a flanneld-format lease for every kernel-VXLAN
//!   node, so both kinds still mix. A linen node's VtepMAC is then `linen.1`'s own MAC.
//!
//! - With [`ClusterBuilder::service_manager`], each linend runs under [`crate::service::Service`],
//!   a service manager speaking systemd's notification and file-descriptor-store protocol, so
//!   [`Cluster::restart_linend`], [`Cluster::crash_linend`] and [`Cluster::stop_service`] exercise
//!   linend's hand-over as systemd drives it.
//!
//! Everything lives in the testbed's namespaces; nothing touches the root namespace's addresses or
//! routes. Dropping the [`Cluster`] kills linend (by PID) and deletes every namespace, also on
//! panic; its temporary directory (peer files, stats, logs) goes with it.
//!
//! ```no_run
//! use linen_testbed::cluster::{ClusterBuilder, Overlay};
//! let c = ClusterBuilder::new("demo")
//!     .node(Overlay::linen("tap"))
//!     .node(Overlay::KernelVxlan)
//!     .build()
//!     .expect("cluster");
//! let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
//! assert!(c.wait_reachable(&a.pods[0], b.pod_ip(0), std::time::Duration::from_secs(5)));
//! ```

use std::ffi::OsString;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::service::{Ended, ExecStart, Service};
use crate::{flannel, wait_for, workspace_bin, Netns, TempDir, Testbed};

/// The store size the emulated service manager gives linend (the unit's
/// `FileDescriptorStoreMax=`).
pub const FD_STORE_MAX: usize = 256;

/// The cluster network all pod subnets lie in.
pub const CLUSTER_NETWORK: &str = "10.244.0.0/16";
/// The VXLAN UDP port (flannel's default, and linend's).
pub const VXLAN_PORT: u16 = 8472;
/// Bytes VXLAN adds in front of an inner frame over IPv4.
pub const VXLAN_OVERHEAD: u32 = 50;
/// MTU of the underlay veths.
pub const UNDERLAY_MTU: u32 = 1500;
/// Underlay address of the etcd namespace in [`ClusterBuilder::etcd`] clusters.
pub const ETCD_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 250);
/// etcd's client port there (inside its own namespace, so never the host's etcd).
pub const ETCD_PORT: u16 = 2379;
/// flannel's default etcd prefix, used by [`ClusterBuilder::etcd`] clusters.
pub const ETCD_PREFIX: &str = "/coreos.com/network";

/// What runs the overlay on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// `linend --static-peers … --datapath <datapath>` (`tap`, `xdp`, `auto`).
    Linen {
        /// The value passed to `--datapath`.
        datapath: String,
    },
    /// The kernel's VXLAN device (`flannel.1`) in flannel's configuration.
    KernelVxlan,
}

impl Overlay {
    /// linend with the given datapath.
    pub fn linen(datapath: &str) -> Overlay {
        Overlay::Linen { datapath: datapath.to_string() }
    }

    /// A short name: `kernel` or the linen datapath.
    pub fn label(&self) -> &str {
        match self {
            Overlay::Linen { datapath } => datapath,
            Overlay::KernelVxlan => "kernel",
        }
    }
}

/// Why a cluster could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterError {
    /// A setup command inside a namespace failed.
    Setup {
        /// The namespace it ran in.
        netns: String,
        /// The script.
        script: String,
        /// Its stderr and stdout.
        output: String,
    },
    /// linend exited or did not come up in time.
    Linend {
        /// The node's name (`n1`, `n2`, …).
        node: String,
        /// linend's own last error line, or what went wrong.
        reason: String,
        /// The end of its log.
        log_tail: String,
    },
}

impl ClusterError {
    /// A one-line reason, e.g. linend's error message.
    pub fn reason(&self) -> String {
        match self {
            ClusterError::Setup { netns, script, output } => {
                format!("setup in {netns} failed: `{}`: {}", one_line(script), one_line(output))
            }
            ClusterError::Linend { node, reason, .. } => format!("linend on {node}: {reason}"),
        }
    }
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Setup { .. } => write!(f, "{}", self.reason()),
            ClusterError::Linend { log_tail, .. } => {
                write!(f, "{}\n--- log ---\n{log_tail}", self.reason())
            }
        }
    }
}

impl std::error::Error for ClusterError {}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A running linend.
#[derive(Debug, Clone)]
pub struct Linend {
    /// Its PID at start (the `ip netns exec` wrapper execs it, so this is linend itself); see
    /// [`Linend::current_pid`] after a restart.
    pub pid: u32,
    /// Its stderr (tracing logs, no colours).
    pub log: PathBuf,
    /// Its `--stats-file`, rewritten every 100 ms.
    pub stats: PathBuf,
    /// The service manager it runs under ([`ClusterBuilder::service_manager`]).
    pub service: Option<Arc<Service>>,
}

impl Linend {
    /// The PID of the running linend (changes with every restart under a service manager).
    pub fn current_pid(&self) -> u32 {
        self.service.as_ref().and_then(|s| s.main_pid()).unwrap_or(self.pid)
    }

    /// The stats file's first worker object, if the file exists and parses.
    pub fn worker_stats(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(&self.stats).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(v["workers"][0].clone())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One node of a [`Cluster`].
#[derive(Debug, Clone)]
pub struct Node {
    /// `n1`, `n2`, …
    pub name: String,
    /// The node's host namespace.
    pub host: Netns,
    /// Its pods, each with `eth0` on the node's `cni0`.
    pub pods: Vec<Netns>,
    /// Underlay address (`192.168.77.k`).
    pub ip: Ipv4Addr,
    /// `k`: the pod subnet is `10.244.k.0/24`.
    pub index: u8,
    /// The VtepMAC every peer uses for this node (`linen.1`'s or `flannel.1`'s MAC).
    pub vtep_mac: String,
    /// What runs the overlay here.
    pub overlay: Overlay,
    /// linend, when the overlay is [`Overlay::Linen`].
    pub linend: Option<Linend>,
}

impl Node {
    /// The pod subnet, `10.244.k.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }

    /// The address of pod `i` (`10.244.k.(i+2)`).
    pub fn pod_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.index, (i + 2) as u8)
    }

    /// The pod gateway on `cni0` (`10.244.k.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.index, 1)
    }
}

/// Builds a [`Cluster`]: one [`ClusterBuilder::node`] call per node, in order.
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    tag: String,
    overlays: Vec<Overlay>,
    pods_per_node: usize,
    pod_mtu: Option<u32>,
    underlay_tx_off: bool,
    linend: Option<PathBuf>,
    linend_args: Vec<String>,
    linend_cpus: Option<String>,
    up_timeout: Duration,
    etcd: bool,
    direct_routing: bool,
    service_manager: bool,
    fd_store_max: usize,
}

impl ClusterBuilder {
    /// A builder; `tag` (a few `[a-z0-9]`) names the testbed's namespaces.
    pub fn new(tag: &str) -> ClusterBuilder {
        ClusterBuilder {
            tag: tag.to_string(),
            overlays: Vec::new(),
            pods_per_node: 2,
            pod_mtu: None,
            underlay_tx_off: true,
            linend: None,
            linend_args: Vec::new(),
            linend_cpus: None,
            up_timeout: Duration::from_secs(10),
            etcd: false,
            direct_routing: false,
            service_manager: false,
            fd_store_max: FD_STORE_MAX,
        }
    }

    /// Runs every linend under an emulated service manager with a file-descriptor store (see
    /// [`crate::service`]), as the systemd unit runs it.
    pub fn service_manager(mut self, on: bool) -> ClusterBuilder {
        self.service_manager = on;
        self
    }

    /// The size of each service manager's descriptor store (`FileDescriptorStoreMax=`, default
    /// [`FD_STORE_MAX`]); 0 disables it: what is sent to it is closed, as systemd does.
    pub fn fd_store_max(mut self, n: usize) -> ClusterBuilder {
        self.fd_store_max = n;
        self
    }

    /// Adds a node running `overlay`.
    pub fn node(mut self, overlay: Overlay) -> ClusterBuilder {
        self.overlays.push(overlay);
        self
    }

    /// Adds `n` nodes running `overlay`.
    pub fn nodes(mut self, n: usize, overlay: Overlay) -> ClusterBuilder {
        self.overlays.extend(std::iter::repeat_n(overlay, n));
        self
    }

    /// Pods per node (default 2).
    pub fn pods_per_node(mut self, n: usize) -> ClusterBuilder {
        self.pods_per_node = n;
        self
    }

    /// The pods' MTU (default: the overlay MTU, underlay MTU − 50, as the CNI plugin sets it).
    /// 1500 lets over-MTU packets reach the node's router, which must answer "frag needed".
    pub fn pod_mtu(mut self, mtu: u32) -> ClusterBuilder {
        self.pod_mtu = Some(mtu);
        self
    }

    /// Whether the underlay veths run with transmit checksum offload off (default true: a real
    /// wire). `false` keeps veth's offloads, which let the kernel skip checksums and segment late.
    pub fn underlay_tx_off(mut self, off: bool) -> ClusterBuilder {
        self.underlay_tx_off = off;
        self
    }

    /// The linend binary (default: `linend` beside the running executable).
    pub fn linend(mut self, path: impl Into<PathBuf>) -> ClusterBuilder {
        self.linend = Some(path.into());
        self
    }

    /// An extra argument for every linend.
    pub fn linend_arg(mut self, arg: &str) -> ClusterBuilder {
        self.linend_args.push(arg.to_string());
        self
    }

    /// Runs every linend on these CPUs (a `taskset -c` list such as `1-3`); default: anywhere.
    pub fn linend_cpus(mut self, cpus: &str) -> ClusterBuilder {
        self.linend_cpus = Some(cpus.to_string());
        self
    }

    /// How long linend may take to write its first stats file (default 10 s).
    pub fn up_timeout(mut self, t: Duration) -> ClusterBuilder {
        self.up_timeout = t;
        self
    }

    /// Runs linen nodes in etcd mode against an etcd started by the builder (see the module docs).
    pub fn etcd(mut self) -> ClusterBuilder {
        self.etcd = true;
        self
    }

    /// With [`ClusterBuilder::etcd`]: writes `"DirectRouting": true` into the network config, so
    /// linen nodes (all on one underlay segment) route to each other without VXLAN.
    pub fn direct_routing(mut self, on: bool) -> ClusterBuilder {
        self.direct_routing = on;
        self
    }

    /// Builds the namespaces, links and overlays, and starts linend where asked.
    ///
    /// # Errors
    /// [`ClusterError::Setup`] when a setup command fails; [`ClusterError::Linend`] when a linend
    /// exits during start-up (e.g. it refuses the datapath) or writes no stats file in time. The
    /// partly built testbed is torn down before this returns.
    ///
    /// # Panics
    /// Without root (see [`crate::require_root`]), or when `ip netns`/`ip link` themselves fail.
    pub fn build(self) -> Result<Cluster, ClusterError> {
        assert!(
            (1..=250).contains(&self.overlays.len()),
            "a cluster needs 1 to 250 nodes, got {}",
            self.overlays.len()
        );
        let dir = TempDir::new(&self.tag);
        let mut tb = Testbed::new(&self.tag);
        let pod_mtu = self.pod_mtu.unwrap_or(UNDERLAY_MTU - VXLAN_OVERHEAD);
        let mut nodes = Vec::new();
        for (i, overlay) in self.overlays.iter().enumerate() {
            let index = (i + 1) as u8;
            nodes.push(build_node(&mut tb, index, overlay.clone(), self.pods_per_node, pod_mtu)?);
        }
        self.wire_underlay(&mut tb, &nodes)?;
        if self.etcd {
            let etcd = start_etcd(&mut tb, &dir.0, self.direct_routing)?;
            return self.start_etcd_nodes(tb, nodes, dir, etcd);
        }
        for i in 0..nodes.len() {
            let (me, peers) = split_one(&nodes, i);
            match &me.overlay {
                Overlay::KernelVxlan => start_kernel_vxlan(me, &peers)?,
                Overlay::Linen { datapath } => {
                    let l = self.start_linend(&tb, me, &peers, datapath, &dir.0)?;
                    nodes[i].linend = Some(l);
                }
            }
        }
        Ok(Cluster { tb, nodes, dir, etcd: None })
    }

    /// etcd mode: linen nodes first (their VtepMACs are only known once `linen.1` exists), then
    /// kernel-VXLAN nodes with every peer's MAC and a flanneld-format lease each.
    fn start_etcd_nodes(
        &self,
        tb: Testbed,
        mut nodes: Vec<Node>,
        dir: TempDir,
        etcd: Netns,
    ) -> Result<Cluster, ClusterError> {
        for node in &mut nodes {
            let Overlay::Linen { datapath } = node.overlay.clone() else { continue };
            let subnet_file = dir.0.join(format!("{}.subnet.env", node.name));
            let seed = format!(
                "FLANNEL_NETWORK={CLUSTER_NETWORK}\nFLANNEL_SUBNET={}/24\nFLANNEL_MTU={}\nFLANNEL_IPMASQ=false\n",
                node.gateway(),
                UNDERLAY_MTU - VXLAN_OVERHEAD
            );
            std::fs::write(&subnet_file, seed).map_err(|e| ClusterError::Linend {
                node: node.name.clone(),
                reason: format!("cannot write {}: {e}", subnet_file.display()),
                log_tail: String::new(),
            })?;
            let endpoint = format!("http://{ETCD_IP}:{ETCD_PORT}");
            let args = ["--etcd-endpoints", endpoint.as_str(), "--iface", "eth0"];
            let l = self.spawn_linend(&tb, node, &args, &datapath, &dir.0)?;
            let mac = node.host.sh_output("cat /sys/class/net/linen.1/address");
            node.vtep_mac = String::from_utf8_lossy(&mac.stdout).trim().to_string();
            node.linend = Some(l);
        }
        for i in 0..nodes.len() {
            if nodes[i].overlay != Overlay::KernelVxlan {
                continue;
            }
            let (me, peers) = split_one(&nodes, i);
            start_kernel_vxlan(me, &peers)?;
            let lease = flannel::lease_value(me.ip, &me.vtep_mac);
            let key = format!("{ETCD_PREFIX}/subnets/10.244.{}.0-24", me.index);
            etcdctl(&etcd, &["put", &key, &lease])?;
        }
        Ok(Cluster { tb, nodes, dir, etcd: Some(etcd) })
    }

    fn wire_underlay(&self, tb: &mut Testbed, nodes: &[Node]) -> Result<(), ClusterError> {
        let tx_off =
            if self.underlay_tx_off { "ethtool -K eth0 tx off >/dev/null" } else { "true" };
        if nodes.len() == 2 && !self.etcd {
            tb.veth(&nodes[0].host, "eth0", &nodes[1].host, "eth0");
        } else {
            let sw = tb.netns("sw");
            // A switch forwards frames and nothing more: no netfilter (and no conntrack) on its
            // bridge, which `bridge-nf-call-iptables` would otherwise run for every frame. (No
            // such settings without br_netfilter, and then nothing to switch off.)
            sh(
                &sw,
                "ip link add br0 type bridge && ip link set br0 up
                 if [ -d /proc/sys/net/bridge ]; then
                   sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0
                 fi",
            )?;
            for n in nodes {
                let port = format!("p{}", n.index);
                tb.veth(&n.host, "eth0", &sw, &port);
                let port_tx =
                    if self.underlay_tx_off { "ethtool -K {p} tx off >/dev/null" } else { "true" };
                sh(
                    &sw,
                    &format!("ip link set {port} master br0 && {}", port_tx.replace("{p}", &port)),
                )?;
            }
        }
        for n in nodes {
            sh(&n.host, &format!("ip addr add {}/24 dev eth0 && {tx_off}", n.ip))?;
        }
        Ok(())
    }

    fn start_linend(
        &self,
        tb: &Testbed,
        me: &Node,
        peers: &[&Node],
        datapath: &str,
        dir: &Path,
    ) -> Result<Linend, ClusterError> {
        let peers_file = dir.join(format!("{}.peers.json", me.name));
        let json = serde_json::json!({
            "network": CLUSTER_NETWORK,
            "subnet": me.subnet(),
            "public_ip": me.ip.to_string(),
            "vtep_mac": me.vtep_mac,
            "peers": peers.iter().map(|p| serde_json::json!({
                "subnet": p.subnet(),
                "public_ip": p.ip.to_string(),
                "vtep_mac": p.vtep_mac,
            })).collect::<Vec<_>>(),
        });
        let fail = |reason: String| ClusterError::Linend {
            node: me.name.clone(),
            reason,
            log_tail: String::new(),
        };
        std::fs::write(&peers_file, json.to_string())
            .map_err(|e| fail(format!("cannot write {}: {e}", peers_file.display())))?;
        let args = ["--static-peers".to_string(), peers_file.display().to_string()];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn_linend(tb, me, &args, datapath, dir)
    }

    /// Starts linend on `me` with `mode_args` (static peers or etcd) and waits for its first
    /// stats file.
    fn spawn_linend(
        &self,
        tb: &Testbed,
        me: &Node,
        mode_args: &[&str],
        datapath: &str,
        dir: &Path,
    ) -> Result<Linend, ClusterError> {
        let fail = |reason: String| ClusterError::Linend {
            node: me.name.clone(),
            reason,
            log_tail: String::new(),
        };
        let log = dir.join(format!("{}.linend.log", me.name));
        let stats = dir.join(format!("{}.stats.json", me.name));
        let log_file =
            std::fs::File::create(&log).map_err(|e| fail(format!("cannot create log: {e}")))?;
        let bin = match &self.linend {
            Some(p) => p.clone(),
            None => workspace_bin("linend"),
        };
        let mut args: Vec<OsString> = mode_args.iter().map(OsString::from).collect();
        args.extend(["--datapath".into(), datapath.into(), "--subnet-file".into()]);
        args.push(dir.join(format!("{}.subnet.env", me.name)).into());
        args.extend(["--stats-file".into(), stats.clone().into()]);
        args.extend(["--stats-interval-ms".into(), "100".into()]);
        args.extend(self.linend_args.iter().map(OsString::from));
        if self.service_manager {
            assert!(
                self.linend_cpus.is_none(),
                "linend_cpus is not supported with a service manager"
            );
            let exec = ExecStart {
                netns: me.host.clone(),
                program: bin,
                args,
                env: vec![("RUST_LOG".into(), "info".into()), ("NO_COLOR".into(), "1".into())],
                log: log.clone(),
            };
            drop(log_file);
            let svc = Arc::new(Service::new(dir, &me.name, exec, self.fd_store_max));
            let pid = svc.start(tb);
            let l = Linend { pid, log, stats, service: Some(svc.clone()) };
            if svc.wait_ready(self.up_timeout) {
                return Ok(l);
            }
            let ended = svc.signal_and_wait(tb, "KILL", Duration::from_secs(1));
            let text = l.log_text();
            return Err(ClusterError::Linend {
                node: me.name.clone(),
                reason: last_error(&text).unwrap_or_else(|| match ended {
                    Ended::Exited => "exited during start-up (no READY=1)".to_string(),
                    Ended::Killed => format!("no READY=1 after {:?}", self.up_timeout),
                }),
                log_tail: tail(&text, 20),
            });
        }
        let mut cmd = match &self.linend_cpus {
            // taskset and `ip netns exec` both exec, so the PID stays linend's.
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus, "ip", "netns", "exec", &me.host.name]).arg(&bin);
                c
            }
            None => me.host.command(&bin.to_string_lossy()),
        };
        cmd.args(&args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log_file);
        let pid = tb.spawn(cmd);
        let l = Linend { pid, log, stats, service: None };
        let up = wait_for(self.up_timeout, || {
            if l.stats.exists() {
                Some(true)
            } else if !running(pid) {
                Some(false)
            } else {
                None
            }
        });
        match up {
            Some(true) => Ok(l),
            Some(false) => {
                tb.kill(pid); // reaps it
                let text = l.log_text();
                Err(ClusterError::Linend {
                    node: me.name.clone(),
                    reason: last_error(&text)
                        .unwrap_or_else(|| "exited during start-up".to_string()),
                    log_tail: tail(&text, 20),
                })
            }
            None => {
                tb.kill(pid);
                Err(ClusterError::Linend {
                    node: me.name.clone(),
                    reason: format!("no stats file after {:?}", self.up_timeout),
                    log_tail: tail(&l.log_text(), 20),
                })
            }
        }
    }
}

/// A built cluster. Dropping it tears everything down (linend killed by PID, namespaces deleted,
/// temporary files removed).
pub struct Cluster {
    // Field order is drop order: processes and namespaces go before the files they use.
    tb: Testbed,
    nodes: Vec<Node>,
    dir: TempDir,
    etcd: Option<Netns>,
}

impl Cluster {
    /// The nodes, in the order they were added (`n1` first).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The testbed, e.g. to spawn more processes that die with the cluster.
    pub fn testbed(&self) -> &Testbed {
        &self.tb
    }

    /// The etcd client URL of a [`ClusterBuilder::etcd`] cluster (reachable from the namespaces
    /// on the underlay only).
    pub fn etcd_endpoint(&self) -> Option<String> {
        self.etcd.as_ref().map(|_| format!("http://{ETCD_IP}:{ETCD_PORT}"))
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the cluster's etcd server, by the PIDs in its
    /// namespace (only the etcd this cluster started runs there): a stopped etcd accepts
    /// connections and answers nothing, like a hung one.
    ///
    /// # Panics
    /// Without [`ClusterBuilder::etcd`].
    pub fn pause_etcd(&self, paused: bool) {
        let ns = self.etcd.as_ref().expect("a cluster with etcd");
        let out =
            Command::new("ip").args(["netns", "pids", &ns.name]).output().expect("ip netns pids");
        let signal = if paused { "-STOP" } else { "-CONT" };
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args([signal, pid]).status();
        }
    }

    /// Runs `etcdctl` (API v3) with `args` in the etcd namespace of a [`ClusterBuilder::etcd`]
    /// cluster; returns its stdout.
    ///
    /// # Errors
    /// [`ClusterError::Setup`] when the cluster has no etcd or etcdctl fails.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String, ClusterError> {
        match &self.etcd {
            Some(ns) => etcdctl(ns, args),
            None => Err(ClusterError::Setup {
                netns: String::new(),
                script: format!("etcdctl {}", args.join(" ")),
                output: "the cluster was built without ClusterBuilder::etcd".into(),
            }),
        }
    }

    /// The cluster's temporary directory (peer files, logs, stats), removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Pings `to` from `from` (one echo at a time, 1 s timeout each) until one answer arrives or
    /// `timeout` passes. The first packets may race bridge ports and linend's start.
    pub fn wait_reachable(&self, from: &Netns, to: Ipv4Addr, timeout: Duration) -> bool {
        wait_for(timeout, || {
            from.sh_output(&format!("ping -c 1 -W 1 {to}")).status.success().then_some(())
        })
        .is_some()
    }

    /// Stops every linend with SIGTERM (so it removes `linen.1` itself) and waits up to
    /// `timeout` for each; returns the names of nodes whose linend was still running. Under a
    /// service manager this is `systemctl stop`: the store is emptied after linend exits.
    pub fn stop_linend(&self, timeout: Duration) -> Vec<String> {
        let mut stuck = Vec::new();
        for n in &self.nodes {
            let Some(l) = &n.linend else { continue };
            if let Some(svc) = &l.service {
                if svc.stop(&self.tb, timeout) == Ended::Killed {
                    stuck.push(n.name.clone());
                }
                continue;
            }
            let _ = Command::new("kill").args(["-TERM", &l.pid.to_string()]).status();
            if wait_for(timeout, || (!running(l.pid)).then_some(())).is_none() {
                stuck.push(n.name.clone());
            }
            self.tb.kill(l.pid);
        }
        stuck
    }

    fn service(&self, node: usize) -> &Service {
        self.nodes[node].linend.as_ref().and_then(|l| l.service.as_deref()).expect(
            "the node runs linend under a service manager (ClusterBuilder::service_manager)",
        )
    }

    /// `systemctl restart` of node `node`'s linend (index into [`Cluster::nodes`]): SIGTERM,
    /// wait for the exit (up to 10 s), start again with the store; returns how long the old
    /// process took to exit, once the new one said `READY=1`.
    ///
    /// # Panics
    /// Without a service manager, or when the old process had to be killed or the new one does
    /// not become ready within 20 s (with its log).
    pub fn restart_linend(&self, node: usize) -> Duration {
        let svc = self.service(node);
        let (ended, _, took) = svc.restart(&self.tb, Duration::from_secs(10));
        assert_eq!(ended, Ended::Exited, "{}: linend ignored SIGTERM", self.nodes[node].name);
        self.wait_linend_ready(node);
        took
    }

    /// `systemctl restart --no-block` of node `node`'s linend: SIGTERM, wait for the exit (up to
    /// 10 s), start again with the store; returns without waiting for `READY=1` (see
    /// [`Cluster::linend_ready`]).
    ///
    /// # Panics
    /// Without a service manager, or when the old process had to be killed.
    pub fn restart_linend_no_wait(&self, node: usize) {
        let (ended, _, _) = self.service(node).restart(&self.tb, Duration::from_secs(10));
        assert_eq!(ended, Ended::Exited, "{}: linend ignored SIGTERM", self.nodes[node].name);
    }

    /// Whether node `node`'s current linend has sent `READY=1`.
    pub fn linend_ready(&self, node: usize) -> bool {
        self.service(node).ready()
    }

    /// A crash of node `node`'s linend (SIGKILL) and `Restart=always` after `restart_sec`;
    /// returns once the new process said `READY=1`.
    ///
    /// # Panics
    /// As [`Cluster::restart_linend`].
    pub fn crash_linend(&self, node: usize, restart_sec: Duration) {
        self.service(node).crash_and_restart(&self.tb, restart_sec);
        self.wait_linend_ready(node);
    }

    /// Starts node `node`'s linend again after [`Cluster::stop_service`] (or a restart by hand)
    /// and waits for `READY=1`.
    pub fn start_linend(&self, node: usize) {
        self.service(node).start(&self.tb);
        self.wait_linend_ready(node);
    }

    /// `systemctl stop` of node `node`'s linend: SIGTERM, wait, empty the store.
    pub fn stop_service(&self, node: usize) -> Ended {
        self.service(node).stop(&self.tb, Duration::from_secs(10))
    }

    /// Runs a different linend binary from the next start on (an upgrade).
    pub fn set_linend_program(&self, node: usize, program: PathBuf) {
        self.service(node).set_program(program);
    }

    /// The names of the descriptors node `node`'s service manager holds.
    pub fn stored(&self, node: usize) -> Vec<String> {
        self.service(node).stored()
    }

    fn wait_linend_ready(&self, node: usize) {
        let n = &self.nodes[node];
        let svc = self.service(node);
        if !svc.wait_ready(Duration::from_secs(20)) {
            let log = n.linend.as_ref().map(Linend::log_text).unwrap_or_default();
            panic!("{}: linend did not become ready after a restart\n{}", n.name, tail(&log, 40));
        }
    }
}

fn split_one(nodes: &[Node], i: usize) -> (&Node, Vec<&Node>) {
    let peers = nodes.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, n)| n).collect();
    (&nodes[i], peers)
}

/// The VtepMAC of node `k`: the fixtures' two MACs for nodes 1 and 2 (so captures compare with
/// `kernel-vxlan-flannel.pcap`), locally administered ones after that.
fn vtep_mac(k: u8) -> String {
    match k {
        1 => "2a:a9:df:4e:cb:b8".to_string(),
        2 => "26:69:c7:3a:5b:8c".to_string(),
        k => format!("02:6c:6e:00:00:{k:02x}"),
    }
}

fn build_node(
    tb: &mut Testbed,
    k: u8,
    overlay: Overlay,
    pods: usize,
    pod_mtu: u32,
) -> Result<Node, ClusterError> {
    let name = format!("n{k}");
    let host = tb.netns(&name);
    sh(
        &host,
        &format!(
            "sysctl -qw net.ipv4.ip_forward=1
             ip link add cni0 type bridge
             ip addr add 10.244.{k}.1/24 dev cni0
             ip link set cni0 up"
        ),
    )?;
    let mut pod_ns = Vec::new();
    for i in 0..pods {
        let pod = tb.netns(&format!("{name}p{i}"));
        tb.veth(&pod, "eth0", &host, &format!("veth{i}"));
        sh(&host, &format!("ip link set veth{i} master cni0"))?;
        sh(
            &pod,
            &format!(
                "ip link set eth0 mtu {pod_mtu}
                 ip addr add 10.244.{k}.{}/24 dev eth0
                 ip route add default via 10.244.{k}.1",
                i + 2
            ),
        )?;
        pod_ns.push(pod);
    }
    Ok(Node {
        name,
        host,
        pods: pod_ns,
        ip: Ipv4Addr::new(192, 168, 77, k),
        index: k,
        vtep_mac: vtep_mac(k),
        overlay,
        linend: None,
    })
}

/// `flannel.1` exactly as flannel's vxlan backend builds it, with every peer through VXLAN (see
/// [`crate::flannel`]).
fn start_kernel_vxlan(me: &Node, peers: &[&Node]) -> Result<(), ClusterError> {
    let mut script = flannel::device_script(
        me.ip,
        &me.vtep_mac,
        UNDERLAY_MTU - VXLAN_OVERHEAD,
        &format!("10.244.{}.0", me.index),
    );
    for p in peers {
        let lease =
            flannel::Lease { subnet: p.subnet(), public_ip: p.ip, vtep_mac: p.vtep_mac.clone() };
        script.push_str(&flannel::peer_script(&lease, false));
    }
    sh(&me.host, &script)
}

/// Starts etcd in namespace `etcd` on the underlay switch (`sw`), waits until it is healthy and
/// writes the network config (with `DirectRouting` when `direct_routing`).
fn start_etcd(tb: &mut Testbed, dir: &Path, direct_routing: bool) -> Result<Netns, ClusterError> {
    let ns = tb.netns("etcd");
    let base = ns.name.strip_suffix("-etcd").expect("etcd namespace name");
    let sw = Netns { name: format!("{base}-sw") };
    tb.veth(&ns, "eth0", &sw, "pe");
    sh(&sw, "ip link set pe master br0")?;
    sh(&ns, &format!("ip addr add {ETCD_IP}/24 dev eth0"))?;
    let client = format!("http://{ETCD_IP}:{ETCD_PORT}");
    let peer = format!("http://{ETCD_IP}:2380");
    let log = std::fs::File::create(dir.join("etcd.log")).map_err(|e| ClusterError::Setup {
        netns: ns.name.clone(),
        script: "etcd".into(),
        output: format!("cannot create the etcd log: {e}"),
    })?;
    let mut cmd = ns.command("etcd");
    cmd.args(["--name", "e0", "--data-dir"])
        .arg(dir.join("etcd-data"))
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("e0={peer}")])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .stdout(log.try_clone().expect("dup etcd log"))
        .stderr(log);
    tb.spawn(cmd);
    if wait_for(Duration::from_secs(20), || etcdctl(&ns, &["endpoint", "health"]).ok()).is_none() {
        return Err(ClusterError::Setup {
            netns: ns.name.clone(),
            script: "etcd".into(),
            output: tail(&std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default(), 20),
        });
    }
    let backend = if direct_routing {
        r#"{"Type":"vxlan","DirectRouting":true}"#
    } else {
        r#"{"Type":"vxlan"}"#
    };
    let config = format!(r#"{{"Network":"{CLUSTER_NETWORK}","Backend":{backend}}}"#);
    etcdctl(&ns, &["put", &format!("{ETCD_PREFIX}/config"), &config])?;
    Ok(ns)
}

fn etcdctl(ns: &Netns, args: &[&str]) -> Result<String, ClusterError> {
    let out = ns
        .command("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://{ETCD_IP}:{ETCD_PORT}"))
        .arg("--dial-timeout=2s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ClusterError::Setup {
            netns: ns.name.clone(),
            script: format!("etcdctl {}", args.join(" ")),
            output: format!("spawn etcdctl (install etcd-client): {e}"),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ClusterError::Setup {
            netns: ns.name.clone(),
            script: format!("etcdctl {}", args.join(" ")),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn sh(ns: &Netns, script: &str) -> Result<(), ClusterError> {
    let out = ns.sh_output(script);
    if out.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Setup {
            netns: ns.name.clone(),
            script: script.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ),
        })
    }
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()).unwrap_or("");
    !state.is_empty() && state != "Z" && state != "X"
}

/// The message of the last `ERROR` line of a tracing log, without timestamp and target; else
/// a command-line parser's `error: …` line.
fn last_error(log: &str) -> Option<String> {
    let Some(line) = log.lines().rev().find(|l| l.contains(" ERROR ")) else {
        return log.lines().find(|l| l.starts_with("error:")).map(|l| l.trim().to_string());
    };
    let msg = line.split_once(" ERROR ")?.1.trim();
    // Drop the `target: ` prefix tracing puts first.
    let msg = match msg.split_once(": ") {
        Some((target, rest)) if !target.contains(' ') => rest,
        _ => msg,
    };
    Some(msg.to_string())
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Sends `count` datagrams of `size` bytes from `from` to `to_ip:port` (a process in `to`) in one
/// `sendmsg` with UDP segmentation offload, so they leave `from` as one super-packet, and returns
/// how many arrived and how many of those intact (`linen-testpod udp-gso-send` / `udp-recv`).
pub fn udp_gso_through(
    from: &Netns,
    to: &Netns,
    to_ip: Ipv4Addr,
    port: u16,
    size: usize,
    count: usize,
) -> (usize, usize) {
    use std::io::BufRead;
    let testpod = workspace_bin("linen-testpod");
    let mut rx = to
        .command(&testpod.display().to_string())
        .args(["udp-recv", &port.to_string(), &count.to_string(), "5000"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn udp-recv");
    let mut lines = std::io::BufReader::new(rx.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("listening"));
    let out = from
        .command(&testpod.display().to_string())
        .args(["udp-gso-send", &format!("{to_ip}:{port}"), &size.to_string(), &count.to_string()])
        .output()
        .expect("run udp-gso-send");
    assert!(out.status.success(), "udp-gso-send: {}", String::from_utf8_lossy(&out.stderr));
    let last = lines.next().and_then(Result::ok).unwrap_or_default();
    let _ = rx.wait();
    let field = |name: &str| -> usize {
        let mut words = last.split_whitespace();
        words
            .find(|w| *w == name)
            .and_then(|_| words.next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("got"), field("intact"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_takes_linends_message() {
        let log = "2026-11-22T02:00:00Z  INFO linend: starting\n\
                   2026-11-22T02:00:00Z ERROR linend: --datapath xdp: not available; use tap\n";
        assert_eq!(last_error(log).as_deref(), Some("--datapath xdp: not available; use tap"));
        assert_eq!(last_error("INFO only"), None);
        let clap = "error: invalid value 'x' for '--datapath <DATAPATH>'\n\nFor more information";
        assert_eq!(
            last_error(clap).as_deref(),
            Some("error: invalid value 'x' for '--datapath <DATAPATH>'")
        );
    }

    #[test]
    fn vtep_macs_are_distinct() {
        let macs: std::collections::HashSet<String> = (1..=250).map(vtep_mac).collect();
        assert_eq!(macs.len(), 250);
    }

    /// Three nodes on a switched underlay, mixing linen (TAP) and the kernel's VXLAN: every
    /// pod reaches every other pod, and a linend that refuses its datapath is a clear error.
    #[test]
    fn three_mixed_nodes_reach_each_other() {
        let linend = workspace_bin("linend");
        let c = ClusterBuilder::new("clu3")
            .node(Overlay::linen("tap"))
            .node(Overlay::KernelVxlan)
            .node(Overlay::linen("tap"))
            .pods_per_node(1)
            .linend(&linend)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let nodes = c.nodes();
        assert_eq!(nodes.len(), 3);
        for a in nodes {
            for b in nodes {
                if a.index != b.index {
                    assert!(
                        c.wait_reachable(&a.pods[0], b.pod_ip(0), Duration::from_secs(5)),
                        "{} cannot reach {} ({})",
                        a.pods[0].name,
                        b.pod_ip(0),
                        b.name
                    );
                }
            }
        }
        // The stats file is rewritten every 100 ms: give it a few rounds to show the pings.
        let l = nodes[0].linend.as_ref().expect("n1 runs linend");
        let tx = wait_for(Duration::from_secs(3), || {
            l.worker_stats()?["tx"].as_u64().filter(|t| *t > 0)
        });
        assert!(tx.is_some(), "linend on n1 forwarded nothing: {:?}", l.worker_stats());
        assert!(c.stop_linend(Duration::from_secs(5)).is_empty(), "linend ignored SIGTERM");
        let names: Vec<String> = c.testbed().namespaces().iter().map(|n| n.name.clone()).collect();
        drop(c);
        let left = crate::run("ip", &["netns", "list"]);
        for n in names {
            assert!(!left.contains(&n), "namespace {n} left behind");
        }
    }

    /// etcd mode: two linen nodes and one kernel-VXLAN node (announced by a flanneld-format
    /// lease) learn each other from etcd; every pod reaches every other pod, and each linen
    /// node holds the lease for the subnet the builder seeded.
    #[test]
    fn etcd_mode_mixes_linen_and_kernel_vxlan() {
        let linend = workspace_bin("linend");
        let c = ClusterBuilder::new("clue")
            .node(Overlay::linen("tap"))
            .node(Overlay::KernelVxlan)
            .node(Overlay::linen("tap"))
            .pods_per_node(1)
            .linend(&linend)
            .etcd()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let nodes = c.nodes();
        for a in nodes {
            for b in nodes {
                if a.index != b.index {
                    assert!(
                        c.wait_reachable(&a.pods[0], b.pod_ip(0), Duration::from_secs(10)),
                        "{} cannot reach {} ({})",
                        a.pods[0].name,
                        b.pod_ip(0),
                        b.name
                    );
                }
            }
        }
        let leases = c.etcdctl(&["get", "--prefix", &format!("{ETCD_PREFIX}/subnets/")]).unwrap();
        for n in nodes {
            let key = format!("{ETCD_PREFIX}/subnets/10.244.{}.0-24", n.index);
            let mut lines = leases.lines();
            assert!(lines.any(|l| l == key), "no lease {key}: {leases}");
            let value = lines.next().unwrap_or_default();
            assert!(value.contains(&format!("\"PublicIP\":\"{}\"", n.ip)), "{value}");
            assert!(value.contains(&n.vtep_mac), "{value}");
        }
        assert_eq!(c.etcd_endpoint().as_deref(), Some("http://192.168.77.250:2379"));
        assert!(c.stop_linend(Duration::from_secs(5)).is_empty(), "linend ignored SIGTERM");
    }

    /// A datapath linend refuses comes back as `ClusterError::Linend` with linend's reason.
    #[test]
    fn refused_datapath_is_reported() {
        let linend = workspace_bin("linend");
        let err = ClusterBuilder::new("clurf")
            .nodes(2, Overlay::linen("no-such-datapath"))
            .pods_per_node(0)
            .linend(&linend)
            .build()
            .err()
            .expect("linend accepted an unknown datapath");
        match &err {
            ClusterError::Linend { node, reason, .. } => {
                assert_eq!(node, "n1");
                assert!(reason.contains("no-such-datapath"), "{err}");
            }
            other => panic!("unexpected error {other}"),
        }
    }
}
