//! linend (`--datapath tap`) against a three-member etcd cluster that loses its leader, and
//! against etcd requiring TLS client certificates (Debian's `etcd-server`, `etcdctl`, `openssl`).
//!
//! Every host is a network namespace on one switched underlay (`192.168.77.0/24`, a bridge in a
//! switch namespace). Each etcd member runs in its own namespace at `192.168.77.250…252`
//! ([`linen_testbed::etcd`]), so linend — inside its node namespace — reaches etcd over the
//! underlay. Nodes claim their subnets in etcd; the test wires each node's `cni0` gateway and one
//! pod from the subnet file linend wrote, as the CNI plugin would.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linen_testbed::etcd::{EtcdCluster, EtcdServer, TlsCerts};
use linen_testbed::etcd_nodes::{
    assert_distinct_subnets, assert_full_mesh, attach, lease_key, new_node, parse_leases,
    stop_linend, switch, wire_pod, Node,
};
use linen_testbed::TempDir;
use linen_testbed::{wait_for, workspace_bin, Netns, Testbed};

const PREFIX: &str = "/coreos.com/network";
/// linend's node API inside each node namespace (its default address).
const API: &str = "127.0.0.1:9472";

fn etcd_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 77, 250 + i)
}

/// How a linend or linenctl authenticates to etcd.
#[derive(Clone)]
enum Auth {
    /// Plain HTTP.
    None,
    /// `--etcd-cafile/--etcd-certfile/--etcd-keyfile` (cert and key optional).
    Flags { ca: PathBuf, cert_key: Option<(PathBuf, PathBuf)> },
    /// The same through `LINEN_ETCD_CAFILE/CERTFILE/KEYFILE`.
    Env { ca: PathBuf, cert: PathBuf, key: PathBuf },
}

impl Auth {
    fn flags(certs: &TlsCerts) -> Auth {
        Auth::Flags {
            ca: certs.ca.clone(),
            cert_key: Some((certs.client_cert.clone(), certs.client_key.clone())),
        }
    }

    fn apply(&self, cmd: &mut Command) {
        match self {
            Auth::None => {}
            Auth::Flags { ca, cert_key } => {
                cmd.arg("--etcd-cafile").arg(ca);
                if let Some((cert, key)) = cert_key {
                    cmd.arg("--etcd-certfile").arg(cert).arg("--etcd-keyfile").arg(key);
                }
            }
            Auth::Env { ca, cert, key } => {
                cmd.env("LINEN_ETCD_CAFILE", ca)
                    .env("LINEN_ETCD_CERTFILE", cert)
                    .env("LINEN_ETCD_KEYFILE", key);
            }
        }
    }
}

/// How nodes reach etcd: the client URLs and the credentials.
#[derive(Clone)]
struct Etcd {
    endpoints: String,
    auth: Auth,
}

impl Etcd {
    /// Runs `linenctl --etcd-endpoints … <args>` in `ns`; returns (success, stdout, stderr).
    fn linenctl(&self, ns: &Netns, args: &[&str]) -> (bool, String, String) {
        let mut cmd = ns.command(&workspace_bin("linenctl").to_string_lossy());
        cmd.args(["--etcd-endpoints", &self.endpoints]);
        self.auth.apply(&mut cmd);
        let out = cmd.args(args).stdin(Stdio::null()).output().expect("spawn linenctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn write_config(&self, ns: &Netns) {
        let (ok, _, err) = self.linenctl(ns, &["config", "set", "--network", "10.244.0.0/16"]);
        assert!(ok, "linenctl config set: {err}");
    }
}

/// Starts the node's linend against `etcd` with its credentials.
/// Starts linend with the lease manager's debug log on: it says when the watch on its own key
/// breaks (see `watch_breaks`).
fn start_linend(tb: &Testbed, n: &mut Node, etcd: &Etcd) {
    linen_testbed::etcd_nodes::start_linend(tb, n, &etcd.endpoints, |cmd| {
        cmd.env("RUST_LOG", "info,linen_controlplane::manager=debug");
        etcd.auth.apply(cmd);
    });
}

/// Broken etcd watches in the node's log. A linend holds two: the peer watch over every lease
/// ("etcd unreachable", a warning) and the lease manager's watch on its own key ("watch on our
/// key broke", debug); either may be on the member that dies.
fn watch_breaks(n: &Node) -> usize {
    let log = n.log_text();
    log.matches("etcd unreachable").count() + log.matches("watch on our key broke").count()
}

fn add_node(tb: &mut Testbed, sw: &Netns, k: u8, dir: &Path, etcd: &Etcd) -> Node {
    let mut n = new_node(tb, sw, k, dir);
    start_linend(tb, &mut n, etcd);
    wire_pod(&mut n);
    n
}

/// Every lease as (key, value JSON), read through `member`.
fn leases(member: &EtcdServer) -> Vec<(String, serde_json::Value)> {
    let out = member.etcdctl_ok(&["get", "--prefix", &format!("{PREFIX}/subnets/")]);
    parse_leases(&out)
}

/// The HTTP status of the node's `/readyz` (`None` when the API does not answer).
fn readyz(host: &Netns) -> Option<u16> {
    let out = host.sh_output(&format!(
        "printf 'GET /readyz HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' | socat -t 2 - TCP:{API}"
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next()?.split_whitespace().nth(1)?.parse().ok()
}

/// The etcd members (client addresses) the node's linend holds established TCP connections to.
fn etcd_peers_of(n: &Node) -> Vec<String> {
    let pid = n.pid.expect("linend runs");
    let out = n.host.sh("ss -tnpH state established '( dport = :2379 )'");
    let mut got: Vec<String> = out
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| l.split_whitespace().nth(3)?.rsplit_once(':').map(|(a, _)| a.to_string()))
        .collect();
    got.sort();
    got.dedup();
    got
}

/// Three etcd members in three namespaces; three linends with all three endpoints claim subnets
/// and their pods talk. The member serving the most watches is made raft leader and killed (every
/// linend holds a connection to it): pod traffic flows on without a lost packet, the linends whose
/// watch broke say so, `/readyz` is 200 again within seconds, a fourth node
/// (given the dead member's endpoint too) joins with a distinct subnet and everyone reaches it, a
/// lease deleted through a surviving member takes that node's route off every other node, and
/// no linend exits.
#[test]
fn three_member_cluster_loses_its_leader() {
    let dir = TempDir::new("netcdha");
    let mut tb = Testbed::new("netcdha");
    let sw = switch(&mut tb);
    let members: Vec<(Netns, Ipv4Addr)> =
        (0..3).map(|i| (attach(&mut tb, &sw, &format!("e{i}"), etcd_ip(i)), etcd_ip(i))).collect();
    let mut cluster = EtcdCluster::start_in(&members, None);
    let etcd = Etcd { endpoints: cluster.endpoints().join(","), auth: Auth::None };
    etcd.write_config(&members[0].0);

    let mut nodes: Vec<Node> = (1..=3).map(|k| add_node(&mut tb, &sw, k, &dir.0, &etcd)).collect();
    assert_distinct_subnets(&nodes);
    assert_eq!(leases(&cluster.members[0]).len(), 3);
    assert_full_mesh(&nodes);

    // The member to kill: the one serving the most of the linends' watches, made raft leader
    // first, so the kill takes out the leader and watch streams in use at once.
    const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";
    let watches: Vec<f64> =
        cluster.members.iter().map(|m| m.metric(WATCHERS).unwrap_or(0.0)).collect();
    let total: f64 = watches.iter().sum();
    assert!(total >= nodes.len() as f64, "fewer watches than linends on etcd: {watches:?}");
    let leader = (0..3).max_by(|a, b| watches[*a].total_cmp(&watches[*b])).expect("members");
    cluster.move_leader(leader);
    let leader_ip = cluster.members[leader].host.to_string();
    // Every linend's client holds a connection to it too (the client connects to every
    // endpoint), so each loses a connection it was using.
    for n in &nodes {
        let connected = wait_for(Duration::from_secs(10), || {
            etcd_peers_of(n).contains(&leader_ip).then_some(())
        });
        assert!(
            connected.is_some(),
            "n{} holds no connection to the leader {leader_ip}: {:?}",
            n.k,
            etcd_peers_of(n)
        );
    }
    let outages_before: Vec<usize> = nodes.iter().map(watch_breaks).collect();

    // Pod traffic n1 → n2 during the kill: 60 pings over 6 s, none may be lost.
    let ping_out = dir.0.join("ping.out");
    let mut ping = nodes[0].pod.command("ping");
    ping.args(["-c", "60", "-i", "0.1", "-W", "1", &nodes[1].pod_ip()])
        .stdout(std::fs::File::create(&ping_out).expect("ping output"))
        .stderr(Stdio::null());
    let ping_pid = tb.spawn(ping);
    std::thread::sleep(Duration::from_secs(1));

    let killed_at = Instant::now();
    cluster.members[leader].stop();
    let survivor = (leader + 1) % 3;
    let new_leader =
        wait_for(Duration::from_secs(10), || cluster.leader()).expect("no new etcd leader");
    assert_ne!(new_leader, leader);
    eprintln!(
        "killed leader m{leader} ({leader_ip}, {} of {total} watches); m{new_leader} leads after {:?}",
        watches[leader],
        killed_at.elapsed()
    );
    // The watches it served broke: their linends say so (and reconnect to a survivor). A closed
    // connection shows at once; one that vanished silently shows when the client's HTTP/2
    // keep-alive (5 s, 3 s to answer) gives up, hence the margin.
    let broke = wait_for(Duration::from_secs(20), || {
        let hit: Vec<u8> = nodes
            .iter()
            .zip(&outages_before)
            .filter(|(n, before)| watch_breaks(n) > **before)
            .map(|(n, _)| n.k)
            .collect();
        (!hit.is_empty()).then_some(hit)
    });
    let broke = broke.unwrap_or_else(|| {
        let logs: Vec<String> =
            nodes.iter().map(|n| format!("n{} log:\n{}", n.k, n.log_text())).collect();
        panic!(
            "no linend noticed its watch on the killed member end (watches per member before \
             the kill: {watches:?}); etcd peers now: {:?}\n{}",
            nodes.iter().map(etcd_peers_of).collect::<Vec<_>>(),
            logs.join("\n")
        )
    });
    eprintln!("linends whose etcd watch broke: {broke:?}");

    // /readyz while the cluster runs on two members: sampled for 4 s, then it must be 200.
    let mut unready: Vec<(u8, Duration, Option<u16>)> = Vec::new();
    while killed_at.elapsed() < Duration::from_secs(4) {
        for n in &nodes {
            let code = readyz(&n.host);
            if code != Some(200) {
                unready.push((n.k, killed_at.elapsed(), code));
            }
        }
    }
    for n in &nodes {
        let mine: Vec<&(u8, Duration, Option<u16>)> =
            unready.iter().filter(|(k, _, _)| *k == n.k).collect();
        match (mine.first(), mine.last()) {
            (Some(first), Some(last)) => eprintln!(
                "n{}: /readyz not 200 in {} samples from {:?} to {:?} after the kill ({:?})",
                n.k,
                mine.len(),
                first.1,
                last.1,
                last.2
            ),
            _ => eprintln!("n{}: /readyz 200 in every sample after the kill", n.k),
        }
    }
    for n in &nodes {
        let ready =
            wait_for(Duration::from_secs(10), || (readyz(&n.host) == Some(200)).then_some(()));
        assert!(
            ready.is_some(),
            "n{} /readyz is {:?} 10 s after the leader died; log:\n{}",
            n.k,
            readyz(&n.host),
            n.log_text()
        );
    }

    let done = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&ping_out).unwrap_or_default();
        text.contains("packets transmitted").then_some(text)
    });
    tb.kill(ping_pid);
    let text = done.expect("ping did not finish");
    assert!(
        text.contains("60 packets transmitted, 60 received"),
        "pod traffic lost packets while the etcd leader died: {text}"
    );

    // A fourth node joins the degraded cluster — its endpoint list still names the dead member.
    let t = Instant::now();
    nodes.push(add_node(&mut tb, &sw, 4, &dir.0, &etcd));
    assert_distinct_subnets(&nodes);
    assert_eq!(leases(&cluster.members[survivor]).len(), 4);
    assert_full_mesh(&nodes);
    eprintln!("fourth node joined and reachable from all in {:?}", t.elapsed());

    // n3's lease deleted through a surviving member: its route goes away on n1, n2 and n4 (seen
    // by `ip monitor`, since n3 claims again at once); then n3 holds a lease again and all talk.
    let victim = nodes[2].subnet.clone();
    let watchers: Vec<(&Node, PathBuf, u32)> = nodes
        .iter()
        .filter(|n| n.k != 3)
        .map(|n| {
            let out = dir.0.join(format!("n{}.monitor", n.k));
            let mut mon = n.host.command("ip");
            mon.args(["-o", "monitor", "route"])
                .stdout(std::fs::File::create(&out).expect("monitor file"))
                .stderr(Stdio::null());
            (n, out, tb.spawn(mon))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300)); // let the monitors subscribe
    cluster.members[survivor].etcdctl_ok(&["del", &lease_key(PREFIX, &victim)]);
    for (n, out, pid) in &watchers {
        let deleted = wait_for(Duration::from_secs(5), || {
            let text = std::fs::read_to_string(out).unwrap_or_default();
            text.lines().any(|l| l.starts_with("Deleted") && l.contains(&victim)).then_some(())
        });
        tb.kill(*pid);
        assert!(
            deleted.is_some(),
            "n{} kept its route to {victim} after the lease was deleted; monitor:\n{}\nlog:\n{}",
            n.k,
            std::fs::read_to_string(out).unwrap_or_default(),
            n.log_text()
        );
    }
    let n3_ip = nodes[2].ip.to_string();
    let back = wait_for(Duration::from_secs(10), || {
        leases(&cluster.members[survivor])
            .iter()
            .any(|(k, v)| *k == lease_key(PREFIX, &victim) && v["PublicIP"] == n3_ip)
            .then_some(())
    });
    assert!(back.is_some(), "n3 did not claim {victim} again; log:\n{}", nodes[2].log_text());
    assert_full_mesh(&nodes);

    for n in &nodes {
        assert!(n.is_running(), "linend on n{} exited; log:\n{}", n.k, n.log_text());
    }
    for n in &mut nodes {
        stop_linend(&tb, n);
    }
}

/// etcd serving HTTPS and requiring client certificates signed by its CA: linends given the CA,
/// certificate and key (as flags on n1, as `LINEN_ETCD_*` variables on n2) claim subnets and their
/// pods talk; `linenctl leases` works with the same flags; a linend without a client certificate
/// and one whose certificate comes from another CA claim nothing and say why.
#[test]
fn tls_client_certificates() {
    let dir = TempDir::new("netcdtls");
    let mut tb = Testbed::new("netcdtls");
    let sw = switch(&mut tb);
    let ip = etcd_ip(0);
    let ens = attach(&mut tb, &sw, "e0", ip);
    let certs = TlsCerts::generate_for(&[ip]);
    let foreign = TlsCerts::generate_for(&[ip]);
    let server = EtcdServer::start_in(&ens, ip, Some(&certs));
    let endpoints = server.endpoint();
    assert!(endpoints.starts_with("https://"), "{endpoints}");
    let with_flags = Etcd { endpoints: endpoints.clone(), auth: Auth::flags(&certs) };
    with_flags.write_config(&ens);
    // Through the environment, and with a bare host:port, which becomes https:// with TLS files.
    let with_env = Etcd {
        endpoints: format!("{ip}:2379"),
        auth: Auth::Env {
            ca: certs.ca.clone(),
            cert: certs.client_cert.clone(),
            key: certs.client_key.clone(),
        },
    };
    let mut nodes = vec![
        add_node(&mut tb, &sw, 1, &dir.0, &with_flags),
        add_node(&mut tb, &sw, 2, &dir.0, &with_env),
    ];
    assert_distinct_subnets(&nodes);
    let held = leases(&server);
    for n in &nodes {
        assert!(
            held.iter()
                .any(|(k, v)| *k == lease_key(PREFIX, &n.subnet)
                    && v["PublicIP"] == n.ip.to_string()),
            "no lease for n{} at {}: {held:?}",
            n.k,
            n.subnet
        );
    }
    assert_full_mesh(&nodes);

    let (ok, out, err) = with_flags.linenctl(&nodes[0].host, &["leases"]);
    assert!(ok, "linenctl leases over TLS: {err}");
    for n in &nodes {
        assert!(out.contains(&n.subnet) && out.contains(&n.ip.to_string()), "{out}");
    }

    let no_cert = Etcd {
        endpoints: endpoints.clone(),
        auth: Auth::Flags { ca: certs.ca.clone(), cert_key: None },
    };
    let other_ca = Etcd {
        endpoints: endpoints.clone(),
        auth: Auth::Flags {
            ca: certs.ca.clone(),
            cert_key: Some((foreign.client_cert.clone(), foreign.client_key.clone())),
        },
    };
    let wrong_ca = Etcd {
        endpoints: endpoints.clone(),
        auth: Auth::Flags {
            ca: foreign.ca.clone(),
            cert_key: Some((certs.client_cert.clone(), certs.client_key.clone())),
        },
    };
    // linenctl fails at once, saying what to check.
    for (what, etcd, expect) in [
        ("without a client certificate", &no_cert, "--etcd-certfile"),
        ("with a certificate from another CA", &other_ca, "--trusted-ca-file"),
        ("trusting another CA than the server's", &wrong_ca, "--etcd-cafile"),
    ] {
        let (ok, out, err) = etcd.linenctl(&nodes[0].host, &["leases"]);
        assert!(!ok, "linenctl leases {what} succeeded: {out}");
        assert!(
            err.contains("TLS/certificate") && err.contains("certificate") && err.contains(expect),
            "linenctl leases {what}: unclear error: {err}"
        );
    }

    // linend keeps retrying (a certificate may be fixed without restarting it), says why on each
    // try, claims nothing and writes no subnet file; its node API starts only once the network
    // config was read, so /readyz does not answer meanwhile.
    let mut bad = vec![new_node(&mut tb, &sw, 3, &dir.0), new_node(&mut tb, &sw, 4, &dir.0)];
    start_linend(&tb, &mut bad[0], &no_cert);
    start_linend(&tb, &mut bad[1], &other_ca);
    for (n, expect) in bad.iter().zip(["--etcd-certfile", "--trusted-ca-file"]) {
        let said = wait_for(Duration::from_secs(20), || {
            n.log_text()
                .lines()
                .any(|l| {
                    l.contains("WARN")
                        && l.contains("TLS/certificate")
                        && l.contains(expect)
                        && l.contains(&endpoints)
                })
                .then_some(())
        });
        assert!(said.is_some(), "n{} did not say why etcd refused it; log:\n{}", n.k, n.log_text());
    }
    std::thread::sleep(Duration::from_secs(1));
    for n in &bad {
        assert!(n.is_running(), "n{} exited; log:\n{}", n.k, n.log_text());
        assert!(!n.subnet_file.exists(), "n{} wrote a subnet file without etcd", n.k);
        assert_eq!(readyz(&n.host), None, "n{} serves /readyz before reading the config", n.k);
    }
    let held = leases(&server);
    assert_eq!(held.len(), 2, "{held:?}");
    for n in &bad {
        assert!(held.iter().all(|(_, v)| v["PublicIP"] != n.ip.to_string()), "{held:?}");
    }

    for n in nodes.iter_mut().chain(bad.iter_mut()) {
        stop_linend(&tb, n);
    }
}
