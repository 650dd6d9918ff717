//! Rule sets written the way the Kubernetes networking components write them, for tests that
//! run them on linen nodes:
//!
//! - [`KubeProxy::iptables_jumps`] and [`KubeProxy::iptables_restore`]: kube-proxy's iptables
//!   mode. The jumps from the built-in chains are what its `EnsureRule` inserts one by one
//!   (`iptables -I`); the service chains (`KUBE-SERVICES` → `KUBE-SVC-…` with `statistic --mode
//!   random --probability 1/n, 1/(n-1), …` → `KUBE-SEP-…` DNAT, `KUBE-NODEPORTS` → `KUBE-EXT-…`,
//!   the 0x4000 mark in `KUBE-MARK-MASQ`, `KUBE-POSTROUTING` masquerade) are one
//!   `iptables-restore --noflush` input, filter table first, as its `syncProxyRules` writes.
//!   [`KubeProxy::iptables_cleanup`] is what it runs to remove them.
//! - [`KubeProxy::nftables`]: kube-proxy's nftables mode, `table ip kube-proxy` with its sets,
//!   verdict maps, base chains and per-service `service-…`, `external-…` and `endpoint-…` chains
//!   (`numgen random mod n vmap` picks the endpoint), one `nft -f` input.
//! - [`calico_ingress`]: Calico's filter chains for an ingress NetworkPolicy on a workload, as
//!   Felix writes them for canal (Calico policy on flannel): `cali-FORWARD` →
//!   `cali-to-wl-dispatch` → `cali-tw-<workload>` → `cali-pi-_<policy>`, the accept (0x10000)
//!   and pass (0x20000) mark bits, and the allowed peers in an `ipset` (`cali40s:…`). Felix
//!   dispatches on Calico's own veth names (`cali*`); linen's pods hang off a bridge, so the
//!   dispatch here keys on the workload's pod IP instead.
//! - [`ISTIO_SIDECAR_NAT`]: the nat table Istio's init container (`istio-iptables`) writes into a
//!   pod: inbound TCP redirected to 15006, outbound to 15001, the proxy's own traffic (uid/gid
//!   1337, source 127.0.0.6) let through.
//!
//! Chain names have the components' shapes (`KUBE-SVC-` + 16 base32 characters, an 8-character
//! hash in nftables chain names, a 22-character suffix for Calico's). The components hash with
//! SHA-256; this module uses FNV-1a, since only the shape and uniqueness matter here.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;

use crate::Netns;

/// A TCP Service with its endpoints, as kube-proxy sees it.
#[derive(Debug, Clone)]
pub struct Service {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The port's name.
    pub port_name: String,
    /// The ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// The NodePort (`type: NodePort`, `externalTrafficPolicy: Cluster`), if any.
    pub node_port: Option<u16>,
    /// The endpoints (pod IP and target port).
    pub endpoints: Vec<SocketAddrV4>,
}

impl Service {
    /// `namespace/name:port`, kube-proxy's comment text.
    fn port_name(&self) -> String {
        format!("{}/{}:{}", self.namespace, self.name, self.port_name)
    }

    /// `namespace/name/tcp/port`, the nftables chain suffix.
    fn nft_name(&self) -> String {
        format!("{}/{}/tcp/{}", self.namespace, self.name, self.port_name)
    }
}

/// kube-proxy's settings that change its rules: the cluster CIDR (`--cluster-cidr`, pod traffic
/// is not masqueraded), the Service CIDR and this node's NodePort addresses.
#[derive(Debug, Clone)]
pub struct KubeProxy {
    /// The pod network, e.g. `10.244.0.0/16`.
    pub cluster_cidr: String,
    /// The Service network, e.g. `10.96.0.0/16` (nftables mode drops unallocated ClusterIPs).
    pub service_cidr: String,
    /// The node's addresses that accept NodePort traffic.
    pub node_ips: Vec<Ipv4Addr>,
    /// The Services.
    pub services: Vec<Service>,
}

/// The jumps kube-proxy's iptables mode ensures in built-in chains: (table, chain, extra match
/// arguments, comment, target).
const JUMPS: [(&str, &str, &str, &str, &str); 14] = [
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes externally-visible service portals",
        "KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW",
        "kubernetes externally-visible service portals",
        "KUBE-EXTERNAL-SERVICES",
    ),
    ("filter", "INPUT", "", "kubernetes health check service ports", "KUBE-NODEPORTS"),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW",
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    ("filter", "FORWARD", "", "kubernetes forwarding rules", "KUBE-FORWARD"),
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW",
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
    ("nat", "OUTPUT", "", "kubernetes service portals", "KUBE-SERVICES"),
    ("nat", "PREROUTING", "", "kubernetes service portals", "KUBE-SERVICES"),
    ("nat", "POSTROUTING", "", "kubernetes postrouting rules", "KUBE-POSTROUTING"),
    // kubelet's firewall chain, which kube-proxy also keeps.
    ("filter", "INPUT", "", "", "KUBE-FIREWALL"),
    ("filter", "OUTPUT", "", "", "KUBE-FIREWALL"),
];

/// `-t <table> <op> <chain> [extra] [-m comment --comment "…"] -j <target>`: a jump's arguments
/// in kube-proxy's order.
fn jump_args(
    op: &str,
    (table, chain, extra, comment, target): (&str, &str, &str, &str, &str),
) -> String {
    let mut args = format!("-t {table} {op} {chain}");
    if !extra.is_empty() {
        args = format!("{args} {extra}");
    }
    if !comment.is_empty() {
        args = format!(r#"{args} -m comment --comment "{comment}""#);
    }
    format!("{args} -j {target}")
}

/// The filter-table chains of kube-proxy's iptables mode.
const FILTER_CHAINS: [&str; 6] = [
    "KUBE-NODEPORTS",
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FIREWALL",
    "KUBE-FORWARD",
    "KUBE-PROXY-FIREWALL",
];

impl KubeProxy {
    /// The commands that create kube-proxy's top-level chains and insert the jumps to them, as
    /// its `EnsureChain`/`EnsureRule` do (`iptables -N`, then `iptables -I`), one per line.
    pub fn iptables_jumps(&self) -> String {
        let mut out = String::new();
        let mut chains: Vec<(&str, &str)> = JUMPS.iter().map(|j| (j.0, j.4)).collect();
        chains.sort_unstable();
        chains.dedup();
        for (table, chain) in chains {
            let _ = writeln!(out, "iptables -w -t {table} -N {chain} 2>/dev/null || true");
        }
        for jump in JUMPS {
            let _ = writeln!(out, "iptables -w {}", jump_args("-I", jump));
        }
        out
    }

    /// The `iptables-restore --noflush` input of one `syncProxyRules`.
    pub fn iptables_restore(&self) -> String {
        let mut filter = String::from("*filter\n");
        for c in FILTER_CHAINS {
            let _ = writeln!(filter, ":{c} - [0:0]");
        }
        filter.push_str(concat!(
            r#"-A KUBE-FIREWALL -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"#,
            "\n-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n",
            r#"-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT"#,
            "\n",
            r#"-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"#,
            "\nCOMMIT\n"
        ));

        let mut chains = vec![
            "KUBE-NODEPORTS".to_string(),
            "KUBE-SERVICES".to_string(),
            "KUBE-MARK-MASQ".to_string(),
            "KUBE-POSTROUTING".to_string(),
        ];
        let (mut services, mut nodeports, mut rest) = (String::new(), String::new(), String::new());
        for s in &self.services {
            let pn = s.port_name();
            let svc = format!("KUBE-SVC-{}", hash32(&format!("{pn}tcp"), 16));
            chains.push(svc.clone());
            let _ = writeln!(
                services,
                r#"-A KUBE-SERVICES -m comment --comment "{pn} cluster IP" -m tcp -p tcp -d {} --dport {} -j {svc}"#,
                s.cluster_ip, s.port
            );
            if let Some(np) = s.node_port {
                let ext = format!("KUBE-EXT-{}", hash32(&format!("{pn}tcp"), 16));
                chains.push(ext.clone());
                let _ = writeln!(
                    nodeports,
                    "-A KUBE-NODEPORTS -m comment --comment {pn} -m tcp -p tcp --dport {np} -j {ext}"
                );
                let _ = writeln!(
                    rest,
                    r#"-A {ext} -m comment --comment "masquerade traffic for {pn} external destinations" -j KUBE-MARK-MASQ"#
                );
                let _ = writeln!(rest, "-A {ext} -j {svc}");
            }
            let _ = writeln!(
                rest,
                r#"-A {svc} -m comment --comment "{pn} cluster IP" -m tcp -p tcp -d {} --dport {} ! -s {} -j KUBE-MARK-MASQ"#,
                s.cluster_ip, s.port, self.cluster_cidr
            );
            let n = s.endpoints.len();
            for (i, ep) in s.endpoints.iter().enumerate() {
                let sep = format!("KUBE-SEP-{}", hash32(&format!("{pn}tcp{ep}"), 16));
                chains.push(sep.clone());
                let statistic = if i + 1 < n {
                    format!(
                        " -m statistic --mode random --probability {:.10}",
                        1.0 / (n - i) as f64
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    rest,
                    r#"-A {svc} -m comment --comment "{pn} -> {ep}"{statistic} -j {sep}"#
                );
                let _ = writeln!(
                    rest,
                    "-A {sep} -m comment --comment {pn} -s {} -j KUBE-MARK-MASQ",
                    ep.ip()
                );
                let _ = writeln!(
                    rest,
                    "-A {sep} -m comment --comment {pn} -m tcp -p tcp -j DNAT --to-destination {ep}"
                );
            }
        }
        let mut nat = String::from("*nat\n");
        for c in &chains {
            let _ = writeln!(nat, ":{c} - [0:0]");
        }
        nat.push_str(&nodeports);
        nat.push_str(&services);
        nat.push_str(concat!(
            r#"-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"#,
            "\n-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n",
            r#"-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully"#,
            "\n"
        ));
        nat.push_str(&rest);
        nat.push_str("COMMIT\n");
        filter + &nat
    }

    /// What kube-proxy runs to remove its iptables rules (its cleanup of leftovers): the jumps
    /// deleted (`iptables -D`), then one `iptables-restore --noflush` input that flushes and
    /// deletes its chains. Returns (commands, restore input).
    pub fn iptables_cleanup(&self) -> (String, String) {
        let mut cmds = String::new();
        for jump in JUMPS {
            let _ = writeln!(cmds, "iptables -w {} 2>/dev/null || true", jump_args("-D", jump));
        }
        let restore = self.iptables_restore();
        let mut input = String::new();
        for block in restore.split("COMMIT\n").filter(|b| !b.trim().is_empty()) {
            let lines: Vec<&str> = block.lines().collect();
            let declared: Vec<&str> =
                lines.iter().filter(|l| l.starts_with(':')).copied().collect();
            let _ = writeln!(input, "{}", lines[0]);
            for d in &declared {
                let _ = writeln!(input, "{d}");
            }
            for d in &declared {
                let chain = d.trim_start_matches(':').split_whitespace().next().unwrap_or_default();
                let _ = writeln!(input, "-X {chain}");
            }
            input.push_str("COMMIT\n");
        }
        (cmds, input)
    }

    /// The `nft -f` input of one full sync of kube-proxy's nftables mode.
    pub fn nftables(&self) -> String {
        let t = "ip kube-proxy";
        let mut out = format!(
            r#"add table {t} {{ comment "rules for kube-proxy" ; }}
add set {t} cluster-ips {{ type ipv4_addr ; comment "Active ClusterIPs" ; }}
add set {t} nodeport-ips {{ type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }}
add map {t} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }}
add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }}
add map {t} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }}
add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}
add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }}
add chain {t} cluster-ips-check
add chain {t} filter-prerouting-pre-dnat {{ type filter hook prerouting priority -110 ; }}
add chain {t} filter-output-pre-dnat {{ type filter hook output priority -110 ; }}
add chain {t} filter-forward {{ type filter hook forward priority 0 ; }}
add chain {t} filter-input {{ type filter hook input priority 0 ; }}
add chain {t} filter-output {{ type filter hook output priority 0 ; }}
add chain {t} firewall-check
add chain {t} mark-for-masquerade
add chain {t} masquerading
add chain {t} nat-output {{ type nat hook output priority -100 ; }}
add chain {t} nat-postrouting {{ type nat hook postrouting priority 100 ; }}
add chain {t} nat-prerouting {{ type nat hook prerouting priority -100 ; }}
add chain {t} nodeport-endpoints-check
add chain {t} reject-chain {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}
add chain {t} services
add chain {t} service-endpoints-check
add rule {t} cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule {t} cluster-ips-check ip daddr {{ {cidr} }} drop comment "Drop traffic to unallocated ClusterIPs"
add rule {t} filter-prerouting-pre-dnat ct state new jump firewall-check
add rule {t} filter-forward ct state new jump service-endpoints-check
add rule {t} filter-forward ct state new jump cluster-ips-check
add rule {t} filter-input ct state new jump nodeport-endpoints-check
add rule {t} filter-input ct state new jump service-endpoints-check
add rule {t} filter-output ct state new jump service-endpoints-check
add rule {t} filter-output-pre-dnat ct state new jump firewall-check
add rule {t} filter-output ct state new jump cluster-ips-check
add rule {t} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule {t} mark-for-masquerade mark set mark or 0x4000
add rule {t} masquerading mark and 0x4000 == 0 return
add rule {t} masquerading mark set mark xor 0x4000
add rule {t} masquerading masquerade fully-random
add rule {t} nat-output jump services
add rule {t} nat-postrouting jump masquerading
add rule {t} nat-prerouting jump services
add rule {t} nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule {t} reject-chain reject
add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips
add rule {t} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add rule {t} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
"#,
            cidr = self.service_cidr
        );
        let ips: Vec<String> = self.node_ips.iter().map(Ipv4Addr::to_string).collect();
        let _ = writeln!(out, "add element {t} nodeport-ips {{ {} }}", ips.join(", "));
        for s in &self.services {
            let name = s.nft_name();
            let h = hash32(&format!("{}tcp", s.port_name()), 8);
            let svc = format!("service-{h}-{name}");
            let _ = writeln!(out, "add chain {t} {svc}");
            let _ = writeln!(
                out,
                "add rule {t} {svc} ip daddr {} ip saddr != {} jump mark-for-masquerade",
                s.cluster_ip, self.cluster_cidr
            );
            let mut arms = Vec::new();
            for (i, ep) in s.endpoints.iter().enumerate() {
                let ep_chain = format!(
                    "endpoint-{}-{name}__{}/{}",
                    hash32(&format!("{}tcp{ep}", s.port_name()), 8),
                    ep.ip(),
                    ep.port()
                );
                let _ = writeln!(out, "add chain {t} {ep_chain}");
                let _ = writeln!(
                    out,
                    "add rule {t} {ep_chain} ip saddr {} jump mark-for-masquerade",
                    ep.ip()
                );
                let _ = writeln!(out, "add rule {t} {ep_chain} meta l4proto tcp dnat to {ep}");
                arms.push(format!("{i} : goto {ep_chain}"));
            }
            let _ = writeln!(
                out,
                "add rule {t} {svc} numgen random mod {} vmap {{ {} }}",
                s.endpoints.len(),
                arms.join(" , ")
            );
            let _ = writeln!(out, "add element {t} cluster-ips {{ {} }}", s.cluster_ip);
            let _ = writeln!(
                out,
                "add element {t} service-ips {{ {} . tcp . {} : goto {svc} }}",
                s.cluster_ip, s.port
            );
            if let Some(np) = s.node_port {
                let ext = format!("external-{h}-{name}");
                let _ = writeln!(out, "add chain {t} {ext}");
                let _ = writeln!(out, "add rule {t} {ext} jump mark-for-masquerade");
                let _ = writeln!(out, "add rule {t} {ext} goto {svc}");
                let _ = writeln!(
                    out,
                    "add element {t} service-nodeports {{ tcp . {np} : goto {ext} }}"
                );
            }
        }
        out
    }
}

/// Calico's filter rules for an ingress policy on the workload `workload` (pod IP `pod_ip`)
/// that allows only sources in `allowed`: (ipset commands, `iptables-restore --noflush` input,
/// the command that inserts the jump from `FORWARD`).
pub fn calico_ingress(
    workload: &str,
    pod_ip: Ipv4Addr,
    policy: &str,
    allowed: &[Ipv4Addr],
) -> (String, String, String) {
    let set = format!("cali40s:{}", hash64(policy, 22));
    let tw = format!("cali-tw-{}", truncate(workload, 20));
    let pi = format!("cali-pi-_{}", hash64(&format!("policy {policy}"), 19));
    let mut ipset = format!("ipset create {set} hash:net family inet -exist\nipset flush {set}\n");
    for ip in allowed {
        let _ = writeln!(ipset, "ipset add {set} {ip}/32 -exist");
    }
    let c = |id: &str| format!(r#"-m comment --comment "cali:{}""#, hash64(id, 16));
    let rules = format!(
        r#"*filter
:cali-FORWARD - [0:0]
:cali-to-wl-dispatch - [0:0]
:{tw} - [0:0]
:{pi} - [0:0]
-A cali-FORWARD {c1} -j MARK --set-xmark 0x0/0xe0000
-A cali-FORWARD {c2} -j cali-to-wl-dispatch
-A cali-FORWARD {c3} -m comment --comment "Policy explicitly accepted packet." -m mark --mark 0x10000/0x10000 -j ACCEPT
-A cali-to-wl-dispatch {c4} -d {pod_ip}/32 -g {tw}
-A {tw} {c5} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A {tw} {c6} -m conntrack --ctstate INVALID -j DROP
-A {tw} {c7} -j MARK --set-xmark 0x0/0x10000
-A {tw} {c8} -m comment --comment "Start of policies" -j MARK --set-xmark 0x0/0x20000
-A {tw} {c9} -m mark --mark 0x0/0x20000 -j {pi}
-A {tw} {c10} -m comment --comment "Return if policy accepted" -m mark --mark 0x10000/0x10000 -j RETURN
-A {tw} {c11} -m comment --comment "Drop if no policies passed packet" -m mark --mark 0x0/0x20000 -j DROP
-A {pi} {c12} -m set --match-set {set} src -j MARK --set-xmark 0x10000/0x10000
-A {pi} {c13} -m mark --mark 0x10000/0x10000 -j RETURN
COMMIT
"#,
        c1 = c("fwd-clear"),
        c2 = c("fwd-dispatch"),
        c3 = c("fwd-accept"),
        c4 = c(&format!("dispatch {workload}")),
        c5 = c(&format!("{workload} est")),
        c6 = c(&format!("{workload} invalid")),
        c7 = c(&format!("{workload} clear")),
        c8 = c(&format!("{workload} start")),
        c9 = c(&format!("{workload} policy")),
        c10 = c(&format!("{workload} return")),
        c11 = c(&format!("{workload} drop")),
        c12 = c(&format!("{policy} allow")),
        c13 = c(&format!("{policy} return")),
    );
    let jump = format!("iptables -w -t filter -I FORWARD {} -j cali-FORWARD\n", c("forward-jump"));
    (ipset, rules, jump)
}

/// The name of the chain [`calico_ingress`] ends its workload's rules with a drop in.
pub fn calico_workload_chain(workload: &str) -> String {
    format!("cali-tw-{}", truncate(workload, 20))
}

/// The nat table `istio-iptables` writes into a pod with a sidecar (`iptables-restore` input).
pub const ISTIO_SIDECAR_NAT: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
";

/// Istio's proxy user and group.
pub const ISTIO_PROXY_UID: u32 = 1337;
/// Where Istio's proxy accepts redirected inbound connections.
pub const ISTIO_INBOUND_PORT: u16 = 15006;
/// Where Istio's proxy accepts redirected outbound connections.
pub const ISTIO_OUTBOUND_PORT: u16 = 15001;

/// Runs `program args…` in `ns` with `input` on stdin (`iptables-restore`, `nft -f -`).
///
/// # Errors
/// The program's stderr when it fails.
pub fn feed(ns: &Netns, program: &str, args: &[&str], input: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(|e| format!("{program} stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} in {} failed: {}{}\n--- input ---\n{input}",
            args.join(" "),
            ns.name,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ))
    }
}

fn fnv1a(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `len` characters of RFC 4648 base32 of a hash of `s` (kube-proxy's chain-name alphabet).
fn hash32(s: &str, len: usize) -> String {
    encode(s, len, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
}

/// `len` characters of URL-safe base64 of a hash of `s` (Calico's chain-name alphabet).
fn hash64(s: &str, len: usize) -> String {
    encode(s, len, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}

fn encode(s: &str, len: usize, alphabet: &[u8]) -> String {
    let bits = alphabet.len().trailing_zeros() as usize;
    let mut out = String::with_capacity(len);
    let mut seed = 0u64;
    while out.len() < len {
        let mut h = fnv1a(s.as_bytes(), seed);
        for _ in 0..(64 / bits) {
            if out.len() == len {
                break;
            }
            out.push(alphabet[(h as usize) & (alphabet.len() - 1)] as char);
            h >>= bits;
        }
        seed += 1;
    }
    out
}

fn truncate(s: &str, n: usize) -> &str {
    &s[..s.len().min(n)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> KubeProxy {
        KubeProxy {
            cluster_cidr: "10.244.0.0/16".into(),
            service_cidr: "10.96.0.0/16".into(),
            node_ips: vec![Ipv4Addr::new(192, 168, 77, 1)],
            services: vec![Service {
                namespace: "default".into(),
                name: "web".into(),
                port_name: "http".into(),
                cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
                port: 80,
                node_port: Some(30080),
                endpoints: vec![
                    "10.244.2.2:8080".parse().unwrap(),
                    "10.244.2.3:8080".parse().unwrap(),
                    "10.244.3.2:8080".parse().unwrap(),
                ],
            }],
        }
    }

    #[test]
    fn iptables_rules_have_kube_proxys_shape() {
        let text = proxy().iptables_restore();
        let svc: Vec<&str> = text.lines().filter(|l| l.starts_with("-A KUBE-SVC-")).collect();
        assert_eq!(svc.len(), 4, "{text}");
        assert!(svc[0].ends_with("! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"), "{}", svc[0]);
        assert!(svc[1].contains("--probability 0.3333333333"), "{}", svc[1]);
        assert!(svc[2].contains("--probability 0.5000000000"), "{}", svc[2]);
        assert!(!svc[3].contains("statistic"), "{}", svc[3]);
        let chain = svc[0].split_whitespace().nth(1).unwrap();
        assert_eq!(chain.len(), "KUBE-SVC-".len() + 16);
        assert!(text.contains("-j DNAT --to-destination 10.244.3.2:8080"));
        assert!(text.contains("-A KUBE-NODEPORTS -m comment --comment default/web:http -m tcp -p tcp --dport 30080 -j KUBE-EXT-"));
        assert!(text.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000"));
        assert_eq!(text.matches("COMMIT").count(), 2);
        // The last KUBE-SERVICES rule sends local destinations to the NodePorts.
        let last = text.lines().rfind(|l| l.starts_with("-A KUBE-SERVICES")).unwrap();
        assert!(last.ends_with("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"), "{last}");
        let (cmds, restore) = proxy().iptables_cleanup();
        assert!(cmds.contains(
            "-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        ));
        assert!(restore.contains("-X KUBE-MARK-MASQ") && restore.contains("-X KUBE-FORWARD"));
    }

    #[test]
    fn nftables_rules_have_kube_proxys_shape() {
        let text = proxy().nftables();
        assert!(text.starts_with("add table ip kube-proxy"));
        assert!(text.contains("add element ip kube-proxy nodeport-ips { 192.168.77.1 }"));
        let pick = text.lines().find(|l| l.contains("numgen random mod 3 vmap")).unwrap();
        assert_eq!(pick.matches("goto endpoint-").count(), 3, "{pick}");
        assert!(
            text.contains("ip daddr 10.96.0.10 ip saddr != 10.244.0.0/16 jump mark-for-masquerade")
        );
        assert!(text.contains("service-ips { 10.96.0.10 . tcp . 80 : goto service-"));
        assert!(text.contains("service-nodeports { tcp . 30080 : goto external-"));
        assert!(text.contains("__10.244.2.3/8080 meta l4proto tcp dnat to 10.244.2.3:8080"));
    }

    /// Every rule set loads into this kernel (iptables-nft, nftables, ipset) and the cleanup
    /// removes kube-proxy's iptables chains again.
    #[test]
    fn rules_load_into_the_kernel() {
        let mut tb = crate::Testbed::new("kube");
        let ns = tb.netns("n");
        let p = proxy();
        ns.sh(&p.iptables_jumps());
        feed(&ns, "iptables-restore", &["-w", "--noflush", "--counters"], &p.iptables_restore())
            .unwrap();
        let saved = ns.sh("iptables-save -t nat");
        assert!(saved.contains("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"), "{saved}");
        assert!(saved.contains("--probability 0.33333333349"), "{saved}");
        let (cmds, input) = p.iptables_cleanup();
        ns.sh(&cmds);
        feed(&ns, "iptables-restore", &["-w", "--noflush"], &input).unwrap();
        let left = ns.sh("iptables-save");
        assert!(!left.contains("KUBE-"), "{left}");

        feed(&ns, "nft", &["-f", "-"], &p.nftables()).unwrap();
        let listed = ns.sh("nft list table ip kube-proxy");
        assert!(listed.contains("numgen random mod 3 vmap"), "{listed}");

        let (ipset, rules, jump) = calico_ingress(
            "db",
            Ipv4Addr::new(10, 244, 2, 4),
            "default.db",
            &[Ipv4Addr::new(10, 244, 1, 2)],
        );
        ns.sh(&ipset);
        feed(&ns, "iptables-restore", &["-w", "--noflush"], &rules).unwrap();
        ns.sh(&jump);
        assert!(ns.sh("iptables -S FORWARD").contains("-j cali-FORWARD"));

        feed(&ns, "iptables-restore", &["-w"], ISTIO_SIDECAR_NAT).unwrap();
        assert!(ns.sh("iptables -t nat -S ISTIO_REDIRECT").contains("--to-ports 15001"));
    }

    #[test]
    fn calico_names_fit_iptables_and_ipset_limits() {
        let (ipset, rules, jump) = calico_ingress(
            "db-0123456789abcdefghij",
            Ipv4Addr::new(10, 244, 2, 4),
            "default.db",
            &[Ipv4Addr::new(10, 244, 1, 2)],
        );
        let set = ipset.split_whitespace().nth(2).unwrap();
        assert!(set.starts_with("cali40s:") && set.len() <= 31, "{set}");
        assert!(ipset.contains("ipset add cali40s:") && ipset.contains(" 10.244.1.2/32"));
        for chain in rules.lines().filter_map(|l| l.strip_prefix(':')) {
            let name = chain.split_whitespace().next().unwrap();
            assert!(name.len() <= 28, "{name}");
        }
        assert!(rules.contains("-d 10.244.2.4/32 -g cali-tw-db-0123456789abcdef"));
        assert!(jump.contains("-I FORWARD") && jump.contains("-j cali-FORWARD"));
    }
}
