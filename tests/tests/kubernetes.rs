//! The Kubernetes machinery that runs in the kernel, across linen nodes: Services through
//! kube-proxy (iptables and nftables modes, ClusterIP and NodePort), NetworkPolicy the way Calico
//! enforces it on flannel (canal), sidecar interception the way Istio does it, and flannel's
//! `Backend.DirectRouting` — each rule set written as the real component writes it
//! ([`linen_testbed::kube`]), on one cluster per datapath that all checks share.
//!
//! The cluster: a real etcd and four nodes on a switched underlay `192.168.77.0/24` — `n1` and
//! `n2` run linend, `n4` is a flannel node (the kernel's VXLAN device programmed as flanneld
//! programs it, [`linen_testbed::flannel`]), and `n3` runs linend on a segment of its own
//! (`192.168.78.0/24`) behind a router, so it reaches the others only through a gateway. A host
//! `ext` on the underlay, outside the cluster, is the NodePort client. Pods are attached by the
//! `linen` CNI plugin: `client` and `denied` on n1, `web0`, `web1` and `db` on n2, `web2` and
//! `mesh` on n3, `fpod` on n4. Their processes are `linen-testpod` (this crate's helper): a
//! server answering `<name> <peer IP it saw>`, a client, and the sidecar proxy.
//!
//! Whether a packet crossed the underlay plain or in VXLAN is counted on the switch ports
//! (nftables counters in the switch namespace) for pings of a size nothing else sends — the
//! wire's view, whatever the datapath does inside the node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use linen_testbed::cni::{self, Pod};
use linen_testbed::etcd::EtcdServer;
use linen_testbed::etcd_nodes::{
    attach, attach_behind, parse_leases, reachable, router, spawn_linend, switch, terminate,
    wait_subnet_file,
};
use linen_testbed::flannel;
use linen_testbed::kube::{self, KubeProxy, Service};
use linen_testbed::{wait_for, workspace_bin, Netns, TempDir, Testbed};

const PREFIX: &str = "/coreos.com/network";
const NETWORK: &str = "10.244.0.0/16";
const ETCD_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 250);
const ROUTER_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 254);
const FAR_GW: Ipv4Addr = Ipv4Addr::new(192, 168, 78, 254);
const EXT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 200);
/// The flannel node's subnet and VtepMAC (linen nodes claim among the first 100 subnets).
const FLANNEL_SUBNET: &str = "10.244.240.0/24";
const FLANNEL_MAC: &str = "02:6c:6e:00:00:f0";

const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SERVICE_PORT: u16 = 80;
const NODE_PORT: u16 = 30080;
const WEB_PORT: u16 = 8080;
const DB_PORT: u16 = 5432;

/// ICMP payload of the counted pings: an IP length of 1139 plain, 1189 inside VXLAN.
const PING_PAYLOAD: u32 = 1111;
const PLAIN_LEN: u32 = PING_PAYLOAD + 8 + 20;
const VXLAN_LEN: u32 = PLAIN_LEN + 14 + 8 + 8 + 20;
/// Pings per counted exchange.
const PINGS: u64 = 5;

/// One node of the cluster.
struct Node {
    name: &'static str,
    host: Netns,
    ip: Ipv4Addr,
    subnet_file: PathBuf,
    log: PathBuf,
    /// linend's PID (`None` on the flannel node, and once stopped).
    pid: Option<u32>,
    /// The pod subnet, `10.244.37.0/24`.
    subnet: String,
    /// The CNI plugin's network config on this node.
    cni: serde_json::Value,
}

impl Node {
    /// The subnet's network address, which the overlay device carries (`10.244.37.0`).
    fn network(&self) -> &str {
        self.subnet.split('/').next().unwrap_or_default()
    }

    fn ip_of_network(&self) -> Ipv4Addr {
        self.network().parse().expect("subnet network address")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `ip route show <subnet>` on this node for another node's subnet.
    fn route_to(&self, other: &Node) -> String {
        self.host.sh(&format!("ip route show {}", other.subnet)).trim().to_string()
    }
}

struct Cluster {
    tb: Testbed,
    etcd: EtcdServer,
    dir: TempDir,
    sw: Netns,
    ext: Netns,
    /// n1, n2, n3 (linen) and n4 (flannel), in that order.
    nodes: Vec<Node>,
    pods: BTreeMap<&'static str, Pod>,
    testpod: PathBuf,
}

impl Cluster {
    fn build(datapath: &str, ip_masq: bool) -> Cluster {
        let tag = if datapath == "xdp" { "k8sx" } else { "k8st" };
        let dir = TempDir::new(tag);
        let mut tb = Testbed::new(tag);
        let sw = switch(&mut tb);
        let etcd_ns = attach(&mut tb, &sw, "etcd", ETCD_IP);
        let r = router(&mut tb, &sw, "r", ROUTER_IP);
        let ext = attach(&mut tb, &sw, "ext", EXT_IP);
        let far = format!("ip route add 192.168.78.0/24 via {ROUTER_IP}");
        etcd_ns.sh(&far);
        let etcd = EtcdServer::start_in(&etcd_ns, ETCD_IP, None);

        let mut nodes = Vec::new();
        for (name, ip) in [
            ("n1", Ipv4Addr::new(192, 168, 77, 1)),
            ("n2", Ipv4Addr::new(192, 168, 77, 2)),
            ("n3", Ipv4Addr::new(192, 168, 78, 3)),
            ("n4", Ipv4Addr::new(192, 168, 77, 4)),
        ] {
            let host = if name == "n3" {
                attach_behind(&mut tb, &r, name, ip, FAR_GW)
            } else {
                let h = attach(&mut tb, &sw, name, ip);
                h.sh(&far);
                h
            };
            host.sh("sysctl -qw net.ipv4.ip_forward=1");
            let subnet_file = dir.0.join(format!("{name}.subnet.env"));
            let cni = cni::network_config(&subnet_file, &dir.0.join(format!("{name}-ipam")));
            nodes.push(Node {
                name,
                host,
                ip,
                subnet_file,
                log: dir.0.join(format!("{name}.linend.log")),
                pid: None,
                subnet: String::new(),
                cni,
            });
        }
        let mut c = Cluster {
            tb,
            etcd,
            dir,
            sw,
            ext,
            nodes,
            pods: BTreeMap::new(),
            testpod: workspace_bin("linen-testpod"),
        };
        c.set_direct_routing(false);

        let endpoint = c.etcd.endpoint();
        for n in &mut c.nodes[..3] {
            n.pid = Some(spawn_linend(
                &c.tb,
                &n.host,
                &endpoint,
                datapath,
                &n.subnet_file,
                &n.log,
                |cmd| {
                    if ip_masq {
                        cmd.arg("--ip-masq");
                    }
                },
            ));
        }
        for n in &mut c.nodes[..3] {
            let (gw, len) = wait_subnet_file(&n.subnet_file, n.pid).unwrap_or_else(|| {
                panic!("linend on {} claimed no subnet; log:\n{}", n.name, n.log_text())
            });
            n.subnet = format!("{}/{len}", Ipv4Addr::from(u32::from(gw) - 1));
        }

        // The flannel node: its device, its lease as flanneld writes it, the subnet file
        // flanneld writes for the CNI plugin, and every linen node's lease programmed.
        let n4 = &mut c.nodes[3];
        n4.subnet = FLANNEL_SUBNET.to_string();
        n4.host.sh(&flannel::device_script(n4.ip, FLANNEL_MAC, 1450, "10.244.240.0"));
        std::fs::write(
            &n4.subnet_file,
            format!("FLANNEL_NETWORK={NETWORK}\nFLANNEL_SUBNET=10.244.240.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"),
        )
        .expect("n4 subnet file");
        let key = format!("{PREFIX}/subnets/{}", FLANNEL_SUBNET.replace('/', "-"));
        c.etcd.etcdctl_ok(&["put", &key, &flannel::lease_value(n4.ip, FLANNEL_MAC)]);
        c.flanneld_sync(false);

        for (name, node) in [
            ("client", 0),
            ("denied", 0),
            ("web0", 1),
            ("web1", 1),
            ("db", 1),
            ("web2", 2),
            ("mesh", 2),
            ("fpod", 3),
        ] {
            let n = &c.nodes[node];
            let pod = cni::pod(&mut c.tb, &n.host, name, &n.cni);
            c.pods.insert(name, pod);
        }
        for (name, port) in [
            ("web0", WEB_PORT),
            ("web1", WEB_PORT),
            ("web2", WEB_PORT),
            ("db", DB_PORT),
            ("mesh", WEB_PORT),
            ("fpod", WEB_PORT),
        ] {
            c.serve(name, port);
        }
        // Every node reaches every other node's pods (linen learned the flannel lease, the
        // flannel node the linen ones).
        for (a, b) in [
            ("client", "web0"),
            ("client", "web2"),
            ("web0", "web2"),
            ("web2", "client"),
            ("client", "fpod"),
            ("fpod", "client"),
            ("fpod", "web2"),
        ] {
            assert!(
                reachable(&c.pods[a].ns, &c.pods[b].ip.to_string(), Duration::from_secs(20)),
                "{a} cannot reach {b} ({}){}",
                c.pods[b].ip,
                c.logs()
            );
        }
        c
    }

    /// Every linend log, for failure messages.
    fn logs(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes[..3] {
            s.push_str(&format!("\n--- {} ({}) ---\n{}", n.name, n.subnet, n.log_text()));
        }
        s
    }

    fn pod(&self, name: &str) -> &Pod {
        &self.pods[name]
    }

    /// `linenctl config set --network 10.244.0.0/16 [--direct-routing]`, as an operator runs it.
    fn set_direct_routing(&self, on: bool) {
        let ns = self.etcd.netns.as_ref().expect("etcd runs in a namespace");
        let mut cmd = ns.command(&workspace_bin("linenctl").to_string_lossy());
        cmd.args([
            "--etcd-endpoints",
            &self.etcd.endpoint(),
            "config",
            "set",
            "--network",
            NETWORK,
        ]);
        if on {
            cmd.arg("--direct-routing");
        }
        let out = cmd.output().expect("spawn linenctl");
        assert!(
            out.status.success(),
            "linenctl config set: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A flanneld (re)start on n4 with `direct_routing`: every lease in etcd programmed.
    fn flanneld_sync(&self, direct_routing: bool) -> Vec<String> {
        let out = self.etcd.etcdctl_ok(&["get", "--prefix", &format!("{PREFIX}/subnets/")]);
        let leases: Vec<flannel::Lease> = parse_leases(&out)
            .iter()
            .filter_map(|(k, v)| flannel::Lease::from_etcd(k, v))
            .collect();
        assert_eq!(leases.len(), 4, "{out}");
        let n4 = &self.nodes[3];
        flannel::sync(&n4.host, n4.ip, &leases, direct_routing).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `linen-testpod serve <port> <pod name>` in the pod.
    fn serve(&self, pod: &str, port: u16) {
        let mut cmd = self.pod(pod).ns.command(&self.testpod.to_string_lossy());
        cmd.args(["serve", &port.to_string(), pod]).stdout(Stdio::null());
        self.tb.spawn(cmd);
        let p = self.pod(pod);
        let up = wait_for(Duration::from_secs(5), || {
            p.ns.sh(&format!("ss -Hltn sport = :{port}"))
                .contains(&format!(":{port}"))
                .then_some(())
        });
        assert!(up.is_some(), "server in {pod} did not start");
    }

    /// `count` connections from `ns` to `to`, one line each: the answer or `ERR …`.
    fn get(&self, ns: &Netns, to: &str, count: usize, timeout_ms: u64) -> Vec<String> {
        let out = ns
            .command(&self.testpod.to_string_lossy())
            .args(["get", to, &count.to_string(), &timeout_ms.to_string()])
            .output()
            .expect("spawn linen-testpod");
        assert!(
            out.status.success(),
            "linen-testpod get: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }

    // ---- A: the pod network model ---------------------------------------------------------

    /// Pod to pod across nodes without NAT: a server sees the client pod's own address, which is
    /// the address the client has on its `eth0` — with `--ip-masq` on or off.
    fn check_pod_network(&self) {
        for (from, to, port) in
            [("client", "db", DB_PORT), ("web2", "db", DB_PORT), ("fpod", "web2", WEB_PORT)]
        {
            let (f, t) = (self.pod(from), self.pod(to));
            let got = self.get(&f.ns, &format!("{}:{port}", t.ip), 1, 3000);
            assert_eq!(got, [format!("{to} {}", f.ip)], "{from} -> {to}{}", self.logs());
            let own = f.ns.sh("ip -4 -o addr show dev eth0");
            assert!(own.contains(&format!("inet {}/", f.ip)), "{from}'s eth0: {own}");
        }
    }

    // ---- B, C: Services through kube-proxy -----------------------------------------------

    fn kube_proxy(&self, node: &Node) -> KubeProxy {
        let ep = |p: &str| std::net::SocketAddrV4::new(self.pod(p).ip, WEB_PORT);
        KubeProxy {
            cluster_cidr: NETWORK.into(),
            service_cidr: "10.96.0.0/16".into(),
            node_ips: vec![node.ip],
            services: vec![Service {
                namespace: "default".into(),
                name: "web".into(),
                port_name: "http".into(),
                cluster_ip: CLUSTER_IP,
                port: SERVICE_PORT,
                node_port: Some(NODE_PORT),
                endpoints: vec![ep("web0"), ep("web1"), ep("web2")],
            }],
        }
    }

    /// The Service from a pod on n1 (every backend on another node) and its NodePort on n1 from
    /// `ext`: every connection answered, every backend chosen, the backend sees the client pod
    /// (ClusterIP from a pod: no masquerade) or n1's overlay address (NodePort: masqueraded out
    /// of `linen.1`).
    fn check_service(&self, mode: &str) {
        let client = self.pod("client");
        let service = format!("{CLUSTER_IP}:{SERVICE_PORT}");
        let answers = self.get(&client.ns, &service, 60, 3000);
        let backends = tally(&answers, |_| client.ip.to_string(), mode, "ClusterIP", &self.logs());
        assert_eq!(backends.len(), 3, "{mode}: ClusterIP reached only {backends:?}");
        eprintln!("{mode}: ClusterIP from a pod, 60 connections: {backends:?}");

        let n1 = &self.nodes[0];
        let answers = self.get(&self.ext, &format!("{}:{NODE_PORT}", n1.ip), 45, 3000);
        let backends =
            tally(&answers, |_| n1.network().to_string(), mode, "NodePort", &self.logs());
        assert_eq!(backends.len(), 3, "{mode}: NodePort reached only {backends:?}");
        eprintln!("{mode}: NodePort from outside the cluster, 45 connections: {backends:?}");

        // From a backend itself: to itself (hairpin, masqueraded out of cni0, so it sees the
        // gateway), to the other backend on its node (bridged back, no NAT) and across nodes.
        let web0 = self.pod("web0");
        let gateway = Ipv4Addr::from(u32::from(self.nodes[1].ip_of_network()) + 1).to_string();
        let answers = self.get(&web0.ns, &service, 45, 3000);
        let expect = |b: &str| if b == "web0" { gateway.clone() } else { web0.ip.to_string() };
        let backends = tally(&answers, expect, mode, "ClusterIP from a backend", &self.logs());
        assert_eq!(backends.len(), 3, "{mode}: ClusterIP from web0 reached only {backends:?}");
        eprintln!(
            "{mode}: ClusterIP from backend web0 (hairpin included), 45 connections: {backends:?}"
        );
    }

    fn check_kube_proxy_iptables(&self) {
        for n in &self.nodes {
            let kp = self.kube_proxy(n);
            n.host.sh(&kp.iptables_jumps());
            kube::feed(
                &n.host,
                "iptables-restore",
                &["-w", "--noflush", "--counters"],
                &kp.iptables_restore(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        self.check_service("iptables");
        // The DNATs went through the statistic rules on n1; masquerade marked NodePort traffic.
        let nat = self.nodes[0].host.sh("iptables -t nat -L KUBE-POSTROUTING -v -x -n");
        let masqueraded = nat
            .lines()
            .find(|l| l.contains("MASQUERADE"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(masqueraded >= 45, "KUBE-POSTROUTING masqueraded {masqueraded} packets:\n{nat}");
        // kube-proxy's cleanup, as when it moves to nftables mode.
        for n in &self.nodes {
            let (cmds, input) = self.kube_proxy(n).iptables_cleanup();
            n.host.sh(&cmds);
            kube::feed(&n.host, "iptables-restore", &["-w", "--noflush"], &input)
                .unwrap_or_else(|e| panic!("{e}"));
            let left = n.host.sh("iptables-save");
            assert!(!left.contains("KUBE-"), "{}: kube-proxy chains left:\n{left}", n.name);
        }
    }

    fn check_kube_proxy_nftables(&self) {
        for n in &self.nodes {
            kube::feed(&n.host, "nft", &["-f", "-"], &self.kube_proxy(n).nftables())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        self.check_service("nftables");
        // The rules stay for the checks that follow: policy and sidecars coexist with them.
    }

    // ---- D: NetworkPolicy, the way Calico enforces it on flannel --------------------------

    /// Ingress to `db` (n2) denied except from `client` (n1): `client` connects and the policy
    /// saw its own pod IP; `denied` (n1) and `web2` (n3) do not get through.
    fn check_network_policy(&self) {
        let db = self.pod("db");
        let to = format!("{}:{DB_PORT}", db.ip);
        for from in ["client", "denied", "web2"] {
            let f = self.pod(from);
            assert_eq!(
                self.get(&f.ns, &to, 1, 3000),
                [format!("db {}", f.ip)],
                "{from} before the policy"
            );
        }
        let n2 = &self.nodes[1];
        let (ipset, rules, jump) =
            kube::calico_ingress("db", db.ip, "default.allow-client", &[self.pod("client").ip]);
        n2.host.sh(&ipset);
        kube::feed(&n2.host, "iptables-restore", &["-w", "--noflush"], &rules)
            .unwrap_or_else(|e| panic!("{e}"));
        n2.host.sh(&jump);

        let client = self.pod("client");
        assert_eq!(
            self.get(&client.ns, &to, 3, 3000),
            vec![format!("db {}", client.ip); 3],
            "the allowed pod was not let through"
        );
        for from in ["denied", "web2"] {
            let got = self.get(&self.pod(from).ns, &to, 1, 1500);
            assert!(got[0].starts_with("ERR"), "{from} got through the policy: {got:?}");
        }
        let chain = kube::calico_workload_chain("db");
        let listed = n2.host.sh(&format!("iptables -L {chain} -v -x -n"));
        let dropped = listed
            .lines()
            .find(|l| l.contains("Drop if no policies passed packet"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(dropped >= 2, "the policy's drop rule counted {dropped}:\n{listed}");
    }

    // ---- E: sidecar interception, the way Istio does it -----------------------------------

    /// `mesh` (n3) carries Istio's nat rules and a sidecar (uid 1337): a connection from
    /// `client` (n1) to mesh's application port reaches the sidecar, which reads the original
    /// destination and forwards to the application (which sees the sidecar's 127.0.0.6); the
    /// application's own connection to `web0` (n2) is redirected to the sidecar too, which
    /// forwards it across the overlay.
    fn check_sidecar(&self) {
        let mesh = self.pod("mesh");
        kube::feed(&mesh.ns, "iptables-restore", &["-w"], kube::ISTIO_SIDECAR_NAT)
            .unwrap_or_else(|e| panic!("{e}"));
        let log = self.dir.0.join("sidecar.log");
        let mut cmd = mesh.ns.command(&self.testpod.to_string_lossy());
        cmd.arg("sidecar")
            .args([kube::ISTIO_INBOUND_PORT, kube::ISTIO_OUTBOUND_PORT].map(|p| p.to_string()))
            .arg(kube::ISTIO_PROXY_UID.to_string())
            .arg(&log)
            .stdout(Stdio::null());
        self.tb.spawn(cmd);
        let up = wait_for(Duration::from_secs(5), || {
            let ss = mesh.ns.sh("ss -Hltn");
            (ss.contains(":15006") && ss.contains(":15001")).then_some(())
        });
        assert!(up.is_some(), "the sidecar did not start");
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

        let client = self.pod("client");
        let got = self.get(&client.ns, &format!("{}:{WEB_PORT}", mesh.ip), 1, 3000);
        assert_eq!(got, ["mesh 127.0.0.6"], "inbound through the sidecar; log:\n{}", read_log());
        let inbound = format!("inbound orig={}:{WEB_PORT} peer={}:", mesh.ip, client.ip);
        assert!(read_log().contains(&inbound), "sidecar log lacks `{inbound}`:\n{}", read_log());

        let web0 = self.pod("web0");
        let got = self.get(&mesh.ns, &format!("{}:{WEB_PORT}", web0.ip), 1, 3000);
        assert_eq!(
            got,
            [format!("web0 {}", mesh.ip)],
            "outbound through the sidecar; log:\n{}",
            read_log()
        );
        let outbound = format!("outbound orig={}:{WEB_PORT} peer={}:", web0.ip, mesh.ip);
        assert!(read_log().contains(&outbound), "sidecar log lacks `{outbound}`:\n{}", read_log());
    }

    // ---- F: flannel's DirectRouting ------------------------------------------------------

    /// Counters of counted-size frames entering the switch from n1, n2, n4 and the router (n3).
    fn install_wire_counters(&self) {
        let mut nft = String::from("add table netdev wire\n");
        for port in ["pn1", "pn2", "pn4", "pr"] {
            nft.push_str(&format!(
                "add counter netdev wire plain_{port}
add counter netdev wire vxlan_{port}
add chain netdev wire {port} {{ type filter hook ingress device \"{port}\" priority 0 ; }}
add rule netdev wire {port} ip length {PLAIN_LEN} ip saddr {NETWORK} counter name \"plain_{port}\"
add rule netdev wire {port} ip length {VXLAN_LEN} udp dport 8472 counter name \"vxlan_{port}\"
"
            ));
        }
        kube::feed(&self.sw, "nft", &["-f", "-"], &nft).unwrap_or_else(|e| panic!("{e}"));
    }

    fn wire(&self) -> BTreeMap<String, u64> {
        let text = self.sw.sh("nft list counters table netdev wire");
        let mut out = BTreeMap::new();
        let mut name = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("counter ") {
                name = rest.split_whitespace().next().map(str::to_string);
            } else if let (Some(n), Some(rest)) = (&name, line.strip_prefix("packets ")) {
                let packets = rest.split_whitespace().next().and_then(|p| p.parse().ok());
                out.insert(n.clone(), packets.unwrap_or(0));
                name = None;
            }
        }
        out
    }

    /// [`PINGS`] counted pings from pod `from` to pod `to`, all answered; returns how many
    /// counted frames each port saw plain and in VXLAN meanwhile.
    fn ping(&self, from: &str, to: &str) -> BTreeMap<String, u64> {
        let before = self.wire();
        let out = self.pod(from).ns.sh_output(&format!(
            "ping -c {PINGS} -i 0.2 -W 2 -s {PING_PAYLOAD} {}",
            self.pod(to).ip
        ));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("{PINGS} received")),
            "{from} -> {to}: {text}{}",
            self.logs()
        );
        let after = self.wire();
        after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).collect()
    }

    /// Asserts that the requests of a [`Cluster::ping`] left `req` (a port) as `req_kind`
    /// (`plain` or `vxlan`) and the replies left `rep` as `rep_kind`, none the other way.
    fn assert_wire(&self, what: &str, d: &BTreeMap<String, u64>, hops: [(&str, &str); 2]) {
        for (port, kind) in hops {
            let other = if kind == "plain" { "vxlan" } else { "plain" };
            let (got, stray) = (d[&format!("{kind}_{port}")], d[&format!("{other}_{port}")]);
            assert!(
                got >= PINGS && stray == 0,
                "{what}: expected {PINGS} {kind} frames from {port}, saw {got} {kind} and {stray} {other}: {d:?}"
            );
        }
    }

    /// Waits until `node`'s route to `other`'s subnet goes `via <other's public IP> dev eth0`
    /// (`direct`) or through `linen.1`.
    fn wait_route(&self, node: usize, other: usize, direct: bool) {
        let (n, o) = (&self.nodes[node], &self.nodes[other]);
        let want = if direct { format!("via {} dev eth0", o.ip) } else { "dev linen.1".into() };
        let ok = wait_for(Duration::from_secs(20), || n.route_to(o).contains(&want).then_some(()));
        assert!(
            ok.is_some(),
            "{}'s route to {} ({}): `{}`, expected `{want}`{}",
            n.name,
            o.name,
            o.subnet,
            n.route_to(o),
            self.logs()
        );
    }

    fn check_direct_routing(&self) {
        self.install_wire_counters();
        // VXLAN everywhere to begin with.
        let d = self.ping("client", "web0");
        self.assert_wire(
            "n1 -> n2 without DirectRouting",
            &d,
            [("pn1", "vxlan"), ("pn2", "vxlan")],
        );

        // On: n1 and n2 route to each other and to the flannel node directly; n3 sits behind a
        // gateway, so it and its peers keep VXLAN.
        let t = Instant::now();
        self.set_direct_routing(true);
        for (a, b) in [(0, 1), (0, 3), (1, 0), (1, 3)] {
            self.wait_route(a, b, true);
        }
        eprintln!("DirectRouting on: followed within {:?}", t.elapsed());
        for (a, b) in [(0, 2), (2, 0), (2, 1), (2, 3)] {
            self.wait_route(a, b, false);
        }
        let n3_eth0 = self.nodes[2].host.sh("ip route show dev eth0");
        assert!(!n3_eth0.contains("10.244."), "n3 routes pods over its underlay: {n3_eth0}");
        let d = self.ping("client", "web0");
        self.assert_wire("n1 -> n2 direct", &d, [("pn1", "plain"), ("pn2", "plain")]);
        let d = self.ping("client", "web2");
        self.assert_wire("n1 -> n3 behind a gateway", &d, [("pn1", "vxlan"), ("pr", "vxlan")]);
        // The flannel node has not restarted yet: it still sends VXLAN, which n1 decapsulates,
        // and n1 answers directly.
        let d = self.ping("fpod", "client");
        self.assert_wire(
            "flannel (VXLAN) -> n1 (direct)",
            &d,
            [("pn4", "vxlan"), ("pn1", "plain")],
        );

        // flanneld restarted with DirectRouting: plain both ways between n1 and n4; n3 behind
        // the gateway stays VXLAN for flannel too.
        let direct = self.flanneld_sync(true);
        let mut want = vec![self.nodes[0].subnet.clone(), self.nodes[1].subnet.clone()];
        want.sort();
        let mut got = direct.clone();
        got.sort();
        assert_eq!(got, want, "flanneld's direct peers");
        let d = self.ping("fpod", "client");
        self.assert_wire("flannel <-> n1 direct", &d, [("pn4", "plain"), ("pn1", "plain")]);
        let d = self.ping("client", "fpod");
        self.assert_wire("n1 <-> flannel direct", &d, [("pn1", "plain"), ("pn4", "plain")]);
        let d = self.ping("fpod", "web2");
        self.assert_wire("flannel -> n3 behind a gateway", &d, [("pn4", "vxlan"), ("pr", "vxlan")]);

        // Off again in etcd: the linen nodes go back to VXLAN while the flannel node (not
        // restarted) still routes directly: n4's plain packets are forwarded by n1's kernel, n1
        // answers through VXLAN, and the flannel device accepts it.
        self.set_direct_routing(false);
        for (a, b) in [(0, 1), (0, 3), (1, 0), (1, 3)] {
            self.wait_route(a, b, false);
        }
        let d = self.ping("client", "web0");
        self.assert_wire(
            "n1 -> n2 DirectRouting off again",
            &d,
            [("pn1", "vxlan"), ("pn2", "vxlan")],
        );
        let d = self.ping("fpod", "client");
        self.assert_wire(
            "flannel (direct) -> n1 (VXLAN)",
            &d,
            [("pn4", "plain"), ("pn1", "vxlan")],
        );

        // And on once more, for the shutdown check.
        self.set_direct_routing(true);
        for (a, b) in [(0, 1), (0, 3), (1, 0), (1, 3)] {
            self.wait_route(a, b, true);
        }
        let d = self.ping("web0", "client");
        self.assert_wire("n2 -> n1 direct again", &d, [("pn2", "plain"), ("pn1", "plain")]);
    }

    /// SIGTERM ends every linend, which removes `linen.1` and its direct routes.
    fn check_shutdown(&mut self) {
        for i in 0..3 {
            let pid = self.nodes[i].pid.take().expect("linend runs");
            assert!(terminate(&self.tb, pid), "linend on {} ignored SIGTERM", self.nodes[i].name);
            let n = &self.nodes[i];
            let routes = n.host.sh("ip route show dev eth0");
            assert!(
                !routes.contains("10.244."),
                "{} kept direct routes after SIGTERM:\n{routes}",
                n.name
            );
            assert!(
                n.host.sh_output("ip link show linen.1").stdout.is_empty(),
                "{} kept linen.1",
                n.name
            );
        }
    }
}

/// Counts the backends in `answers` (`<backend> <peer>` lines); fails on an error line or a
/// backend that saw a source other than `peer(backend)`.
fn tally(
    answers: &[String],
    peer: impl Fn(&str) -> String,
    mode: &str,
    what: &str,
    logs: &str,
) -> BTreeMap<String, usize> {
    let mut backends = BTreeMap::new();
    for a in answers {
        let (backend, seen) = a.split_once(' ').unwrap_or((a, ""));
        let want = peer(backend);
        assert!(
            backend.starts_with("web") && seen == want,
            "{mode} {what}: answer `{a}`, expected `{backend} {want}`{logs}"
        );
        *backends.entry(backend.to_string()).or_insert(0) += 1;
    }
    backends
}

fn kubernetes_paths(datapath: &str, ip_masq: bool) {
    let t0 = Instant::now();
    let mut c = Cluster::build(datapath, ip_masq);
    let lap = |what: &str, t: &mut Instant| {
        eprintln!("{datapath}: {what} in {:?}", t.elapsed());
        *t = Instant::now();
    };
    let mut t = t0;
    lap("cluster up", &mut t);
    c.check_pod_network();
    lap("pod network model", &mut t);
    c.check_kube_proxy_iptables();
    lap("kube-proxy iptables mode", &mut t);
    c.check_kube_proxy_nftables();
    lap("kube-proxy nftables mode", &mut t);
    c.check_network_policy();
    lap("NetworkPolicy", &mut t);
    c.check_sidecar();
    lap("sidecar", &mut t);
    c.check_direct_routing();
    lap("DirectRouting", &mut t);
    c.check_shutdown();
    eprintln!("{datapath}: all checks in {:?}", t0.elapsed());
}

/// The AF_XDP datapath, with `--ip-masq`.
#[test]
fn kubernetes_paths_over_linen_xdp() {
    kubernetes_paths("xdp", true);
}

/// The TAP/UDP datapath, without `--ip-masq`.
#[test]
fn kubernetes_paths_over_linen_tap() {
    kubernetes_paths("tap", false);
}
