//! Two-node tests of linend's TAP/UDP datapath (`--datapath tap`): every host is a network
//! namespace. Two nodes share an underlay veth (`tx off` on both ends, as a real wire);
//! each node has a `cni0` bridge with two pods (namespaces + veths, wired here with `ip`); each
//! node runs `linend --static-peers` — or, for interop, the kernel's VXLAN device configured
//! exactly as flannel's vxlan backend configures it.
//!
//! Counters come from linend's `--stats-file` (JSON, rewritten every 100 ms here).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linen_testbed::TempDir;
use linen_testbed::{wait_for, workspace_bin, Netns, Testbed};

const NET: &str = "10.244.0.0/16";
const MAC_A: &str = "2a:a9:df:4e:cb:b8";
const MAC_B: &str = "26:69:c7:3a:5b:8c";
const MAC_A_BYTES: [u8; 6] = [0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8];

/// What runs the overlay on a node.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Overlay {
    /// linend with the given datapath.
    Linen(&'static str),
    /// The kernel's VXLAN device in flannel's configuration.
    KernelVxlan,
}

struct Node {
    host: Netns,
    pods: Vec<Netns>,
    /// Underlay address, e.g. 192.168.77.1.
    ip: Ipv4Addr,
    /// Third octet of the pod subnet 10.244.N.0/24.
    n: u8,
    vtep_mac: &'static str,
    /// linend's PID when it runs linen.
    pid: Option<u32>,
    stats: PathBuf,
    log: PathBuf,
}

impl Node {
    fn pod_ip(&self, i: usize) -> String {
        format!("10.244.{}.{}", self.n, i + 2)
    }
}

struct Cluster {
    tb: Testbed,
    a: Node,
    b: Node,
    _dir: TempDir,
}

/// Builds a host with its bridge and two pods. `n` picks the subnet 10.244.n.0/24.
fn host(tb: &mut Testbed, name: &str, n: u8, vtep_mac: &'static str, dir: &Path) -> Node {
    let host = tb.netns(name);
    host.sh(&format!(
        "sysctl -qw net.ipv4.ip_forward=1
         ip link add cni0 type bridge
         ip addr add 10.244.{n}.1/24 dev cni0
         ip link set cni0 up"
    ));
    let mut pods = Vec::new();
    for i in 0..2 {
        let pod = tb.netns(&format!("{name}p{i}"));
        tb.veth(&pod, "eth0", &host, &format!("veth{i}"));
        host.sh(&format!("ip link set veth{i} master cni0"));
        // Pods keep MTU 1500 so that over-MTU packets reach the node's router, which must answer
        // with "fragmentation needed" (the CNI plugin would set the overlay MTU instead).
        pod.sh(&format!(
            "ip addr add 10.244.{n}.{}/24 dev eth0
             ip route add default via 10.244.{n}.1",
            i + 2
        ));
        pods.push(pod);
    }
    Node {
        host,
        pods,
        ip: Ipv4Addr::new(192, 168, 77, n),
        n,
        vtep_mac,
        pid: None,
        stats: dir.join(format!("{name}.stats.json")),
        log: dir.join(format!("{name}.log")),
    }
}

fn static_file(me: &Node, peer: &Node, dir: &Path) -> PathBuf {
    let path = dir.join(format!("{}.peers.json", me.n));
    let json = serde_json::json!({
        "network": NET,
        "subnet": format!("10.244.{}.0/24", me.n),
        "public_ip": me.ip.to_string(),
        "vtep_mac": me.vtep_mac,
        "peers": [{
            "subnet": format!("10.244.{}.0/24", peer.n),
            "public_ip": peer.ip.to_string(),
            "vtep_mac": peer.vtep_mac,
        }],
    });
    std::fs::write(&path, json.to_string()).expect("write static peers");
    path
}

fn start_linen(tb: &Testbed, me: &mut Node, peer: &Node, datapath: &str, dir: &Path) {
    let peers = static_file(me, peer, dir);
    let log = std::fs::File::create(&me.log).expect("log file");
    let mut cmd = me.host.command(workspace_bin("linend").to_str().expect("utf-8 path"));
    cmd.args(["--static-peers", peers.to_str().unwrap(), "--datapath", datapath])
        .args(["--subnet-file", dir.join(format!("{}.subnet.env", me.n)).to_str().unwrap()])
        .args(["--stats-file", me.stats.to_str().unwrap(), "--stats-interval-ms", "100"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    me.pid = Some(tb.spawn(cmd));
    let up = wait_for(Duration::from_secs(10), || me.stats.exists().then_some(()));
    assert!(
        up.is_some(),
        "linend did not come up:\n{}",
        std::fs::read_to_string(&me.log).unwrap_or_default()
    );
}

/// The kernel's VXLAN device exactly as flannel's vxlan backend sets it up (see
/// dataplane/tests/fixtures/README.md).
fn start_kernel_vxlan(me: &Node, peer: &Node) {
    let (n, p) = (me.n, peer.n);
    me.host.sh(&format!(
        "ip link add flannel.1 type vxlan id 1 dstport 8472 local {ip} dev eth0 nolearning
         ip link set flannel.1 mtu 1450 address {mac}
         ip link set flannel.1 up
         ip addr add 10.244.{n}.0/32 dev flannel.1
         ip neigh replace 10.244.{p}.0 lladdr {pmac} dev flannel.1 nud permanent
         bridge fdb append {pmac} dev flannel.1 dst {pip} self permanent
         ip route add 10.244.{p}.0/24 via 10.244.{p}.0 dev flannel.1 onlink",
        ip = me.ip,
        mac = me.vtep_mac,
        pmac = peer.vtep_mac,
        pip = peer.ip,
    ));
}

/// Two nodes on one underlay: A always runs linen, B runs `b`.
fn cluster(tag: &str, datapath: &'static str, b_overlay: Overlay) -> Cluster {
    let dir = TempDir::new(tag);
    let mut tb = Testbed::new(tag);
    let mut a = host(&mut tb, "a", 1, MAC_A, &dir.0);
    let mut b = host(&mut tb, "b", 2, MAC_B, &dir.0);
    tb.veth(&a.host, "eth0", &b.host, "eth0");
    a.host.sh("ip addr add 192.168.77.1/24 dev eth0 && ethtool -K eth0 tx off >/dev/null");
    b.host.sh("ip addr add 192.168.77.2/24 dev eth0 && ethtool -K eth0 tx off >/dev/null");
    start_linen(&tb, &mut a, &b, datapath, &dir.0);
    match b_overlay {
        Overlay::Linen(dp) => start_linen(&tb, &mut b, &a, dp, &dir.0),
        Overlay::KernelVxlan => start_kernel_vxlan(&b, &a),
    }
    Cluster { tb, a, b, _dir: dir }
}

fn stats(node: &Node) -> serde_json::Value {
    let text = std::fs::read_to_string(&node.stats).expect("stats file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("stats JSON");
    v["workers"][0].clone()
}

fn counter(node: &Node, path: &[&str]) -> u64 {
    let mut v = stats(node);
    for p in path {
        v = v[*p].clone();
    }
    v.as_u64().unwrap_or_else(|| panic!("counter {path:?} missing in {}", stats(node)))
}

/// Whether `pid` runs (exists and is not a zombie).
fn running(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()).unwrap_or("gone");
    state != "gone" && state != "Z"
}

fn assert_alive(node: &Node) {
    assert!(
        running(node.pid.expect("linen node")),
        "linend on {} died:\n{}",
        node.host.name,
        std::fs::read_to_string(&node.log).unwrap_or_default()
    );
}

fn ping(from: &Netns, to: &str) {
    // The first packet may race the bridge's port coming up: allow a few tries, then insist.
    let ok = wait_for(Duration::from_secs(5), || {
        from.sh_output(&format!("ping -c 1 -W 1 {to}")).status.success().then_some(())
    });
    assert!(ok.is_some(), "{} cannot reach {to}", from.name);
    from.sh(&format!("ping -c 3 -i 0.2 -W 2 {to}"));
}

/// One UDP datagram from `from` to `to`:7000 arrives with its payload.
fn udp_exchange(from: &Netns, to: &Netns, to_ip: &str) {
    let rx = to
        .command("socat")
        .args(["-u", "UDP-RECV:7000", "STDOUT"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("socat receiver");
    let listening = wait_for(Duration::from_secs(5), || {
        to.sh("ss -Hlun sport = :7000").contains("7000").then_some(())
    });
    assert!(listening.is_some(), "UDP receiver did not start");
    for _ in 0..5 {
        from.sh(&format!("echo linen-udp-payload | socat -u STDIN UDP-SENDTO:{to_ip}:7000"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = rx.id();
    // socat -u UDP-RECV keeps reading; stop it (our own child, by PID) and read what it got.
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let out = rx.wait_with_output().expect("socat output");
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(got.contains("linen-udp-payload"), "UDP payload not delivered to {to_ip}: {got:?}");
}

/// Sends 100 MiB (a 1 MiB pseudo-random block, 100 times) over TCP from `from` to `to_ip` and
/// checks size and SHA-256 on both ends.
fn tcp_transfer(from: &Netns, to: &Netns, to_ip: &str, dir: &Path) {
    let block = dir.join("block.bin");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&block, bytes).expect("write block");
    let b = block.display();
    let stream = format!("for i in $(seq 100); do cat {b}; done");
    let want = linen_testbed::run("sh", &["-c", &format!("{stream} | sha256sum")]);

    let rx = to
        .command("sh")
        .args(["-c", "timeout 120 socat -u TCP-LISTEN:5002,reuseaddr STDOUT | sha256sum"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("receiver");
    let listening = wait_for(Duration::from_secs(5), || {
        to.sh("ss -Hltn sport = :5002").contains("5002").then_some(())
    });
    assert!(listening.is_some(), "TCP receiver did not start");
    let t = Instant::now();
    from.sh(&format!("{stream} | timeout 120 socat -u STDIN TCP:{to_ip}:5002"));
    let out = rx.wait_with_output().expect("receiver output");
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        got.split_whitespace().next(),
        want.split_whitespace().next(),
        "100 MiB over TCP to {to_ip} arrived altered or incomplete ({:?})",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("100 MiB TCP to {to_ip} verified in {:.1} s", t.elapsed().as_secs_f64());
}

/// CPU time (user + system, all threads) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after = stat.rsplit(')').next().expect("stat format");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state(0) ... utime is field 14 of the line, index 11 here.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn assert_idle(node: &Node) {
    let pid = node.pid.expect("linen node");
    // Let any last packets drain and the idle spell pass.
    std::thread::sleep(Duration::from_millis(300));
    let hz = 100u64; // USER_HZ on Linux
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    assert!(
        used * 100 < 20 * 3 * hz,
        "idle linend used {used} ticks of CPU in 3 s (≥ 20% of a core): the workers did not block"
    );
    eprintln!("idle linend on {}: {used} ticks in 3 s", node.host.name);
}

#[test]
fn tap_two_nodes_ping_udp_tcp_mtu_idle() {
    let c = cluster("ntap", "tap", Overlay::Linen("tap"));
    let (a, b) = (&c.a, &c.b);

    // The flannel-format subnet file the CNI plugin reads.
    let env = std::fs::read_to_string(c._dir.0.join("1.subnet.env")).expect("subnet file");
    assert_eq!(
        env,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
    );
    let link = a.host.sh("ip -d link show linen.1");
    assert!(
        link.contains("mtu 1450") && link.contains(MAC_A) && link.contains("tun type tap"),
        "{link}"
    );
    // The underlay veth runs without GRO (veth's default): linend says UDP_GRO cannot merge.
    let log = std::fs::read_to_string(&a.log).expect("linend log");
    assert!(log.contains("GRO is off on eth0"), "{log}");

    // Cross-node, every pod pair, both directions.
    for (i, pa) in a.pods.iter().enumerate() {
        for j in 0..2 {
            ping(pa, &b.pod_ip(j));
        }
        ping(&b.pods[i], &a.pod_ip(i));
    }
    // Same-node pod traffic keeps working.
    ping(&a.pods[0], &a.pod_ip(1));
    ping(&b.pods[1], &b.pod_ip(0));

    udp_exchange(&a.pods[0], &b.pods[1], &b.pod_ip(1));
    udp_exchange(&b.pods[0], &a.pods[0], &a.pod_ip(0));

    // Outer UDP source ports are the pipeline's flow hash (raw-socket send), not the bound 8472.
    let cap = a
        .host
        .command("timeout")
        .args(["5", "tcpdump", "-lni", "eth0", "-c", "4", "src 192.168.77.1 and udp dst port 8472"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(Duration::from_millis(500));
    a.pods[0].sh(&format!("ping -c 2 -i 0.2 {}", b.pod_ip(0)));
    a.pods[1].sh(&format!("ping -c 2 -i 0.2 {}", b.pod_ip(1)));
    let cap =
        String::from_utf8_lossy(&cap.wait_with_output().expect("tcpdump").stdout).into_owned();
    let ports: Vec<u16> = cap
        .lines()
        .filter_map(|l| l.split("192.168.77.1.").nth(1)?.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(ports.len() >= 2, "no VXLAN captured on the underlay: {cap}");
    assert!(ports.iter().all(|p| (32768..=60999).contains(p)), "outer source ports {ports:?}");

    // MTU: 1450 overlay MTU → 1422 bytes of ICMP payload fit with DF, 1423 do not.
    a.pods[0].sh(&format!("ping -c 2 -W 2 -M do -s 1422 {}", b.pod_ip(0)));
    let big = a.pods[0].sh_output(&format!("ping -c 2 -W 2 -M do -s 1472 {}", b.pod_ip(0)));
    let text =
        format!("{}{}", String::from_utf8_lossy(&big.stdout), String::from_utf8_lossy(&big.stderr));
    assert!(!big.status.success(), "an over-MTU DF ping got through: {text}");
    assert!(
        text.contains("Frag needed") || text.contains("message too long"),
        "no fragmentation-needed error reached the sender: {text}"
    );

    tcp_transfer(&a.pods[0], &b.pods[0], &b.pod_ip(0), &c._dir.0);
    // TCP crossed as super-packets: A read whole bursts from linen.1 and cut them, B merged the
    // segments it decapsulated before writing them to linen.1.
    let merged = wait_for(Duration::from_secs(3), || {
        (counter(a, &["io", "super_rx"]) > 0 && counter(b, &["io", "coalesced_tx"]) > 0)
            .then_some(())
    });
    assert!(merged.is_some(), "A: {}\nB: {}", stats(a), stats(b));
    // UDP segmentation offload from a pod: 20 datagrams leave it as one super-packet, go out as
    // one UDP_SEGMENT message and arrive as 20 intact datagrams.
    let before = counter(a, &["io", "super_rx"]);
    let got = linen_testbed::cluster::udp_gso_through(
        &a.pods[1],
        &b.pods[1],
        b.pod_ip(1).parse().expect("pod address"),
        9200,
        1000,
        20,
    );
    assert_eq!(got, (20, 20), "datagrams (received, intact)");
    let cut = wait_for(Duration::from_secs(3), || {
        (counter(a, &["io", "super_rx"]) > before).then_some(())
    });
    assert!(cut.is_some(), "the UDP run did not reach linen as one super-packet: {}", stats(a));

    // Counters moved on both nodes, and nothing was lost to I/O failures.
    // 100 MiB is ≥ 72,000 segments of ≤ 1450 bytes: A encapsulated them, B decapsulated them.
    let wait_count = |n: &Node, what: &str| {
        wait_for(Duration::from_secs(3), || (counter(n, &[what]) > 72_000).then_some(()))
    };
    assert!(wait_count(a, "tx").is_some(), "A: {}", stats(a));
    assert!(wait_count(b, "rx").is_some(), "B: {}", stats(b));
    for n in [a, b] {
        assert_eq!(counter(n, &["io", "errors"]), 0, "{}: {}", n.host.name, stats(n));
    }

    assert_alive(a);
    assert_alive(b);
    assert_idle(a);
    assert_idle(b);

    // SIGHUP reloads the peers: a third node appears; a broken file changes nothing.
    let pid = a.pid.unwrap();
    let peers_a = c._dir.0.join("1.peers.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&peers_a).unwrap()).unwrap();
    doc["peers"].as_array_mut().unwrap().push(serde_json::json!({
        "subnet": "10.244.3.0/24", "public_ip": "192.168.77.9", "vtep_mac": "02:00:00:00:00:03"
    }));
    std::fs::write(&peers_a, doc.to_string()).unwrap();
    linen_testbed::run("kill", &["-HUP", &pid.to_string()]);
    let added = wait_for(Duration::from_secs(5), || {
        a.host
            .sh("ip route show dev linen.1")
            .contains("10.244.3.0/24 via 10.244.3.0")
            .then_some(())
    });
    assert!(added.is_some(), "SIGHUP did not add the new peer's route: {}", a.host.sh("ip route"));
    assert!(a
        .host
        .sh("ip neigh show dev linen.1")
        .contains("10.244.3.0 lladdr 02:00:00:00:00:03 PERMANENT"));
    std::fs::write(&peers_a, "{ not json").unwrap();
    linen_testbed::run("kill", &["-HUP", &pid.to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    assert_alive(a);
    assert!(a.host.sh("ip route show dev linen.1").contains("10.244.3.0/24"));
    ping(&a.pods[0], &b.pod_ip(0));

    // Clean shutdown: SIGTERM removes linen.1.
    linen_testbed::run("kill", &["-TERM", &pid.to_string()]);
    let gone = wait_for(Duration::from_secs(5), || {
        (!a.host.sh_output("ip link show linen.1").status.success()).then_some(())
    });
    assert!(gone.is_some(), "linen.1 still exists after SIGTERM");
    let exited = wait_for(Duration::from_secs(5), || (!running(pid)).then_some(()));
    assert!(exited.is_some(), "linend did not exit after SIGTERM");
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(log.contains("stopped"), "no clean shutdown in the log:\n{log}");
    let routes = a.host.sh("ip route");
    assert!(!routes.contains("10.244.2.0"), "route to the peer left behind: {routes}");
    drop(c.tb);
}

#[test]
fn tap_interop_with_kernel_vxlan() {
    let c = cluster("ntapk", "tap", Overlay::KernelVxlan);
    let (a, b) = (&c.a, &c.b);
    // Both directions, both pods.
    ping(&a.pods[0], &b.pod_ip(0));
    ping(&b.pods[1], &a.pod_ip(1));
    ping(&b.pods[0], &a.pod_ip(0));
    udp_exchange(&a.pods[1], &b.pods[0], &b.pod_ip(0));
    udp_exchange(&b.pods[1], &a.pods[0], &a.pod_ip(0));
    a.pods[0].sh(&format!("ping -c 2 -W 2 -M do -s 1422 {}", b.pod_ip(0)));
    b.pods[0].sh(&format!("ping -c 2 -W 2 -M do -s 1422 {}", a.pod_ip(0)));
    // Bulk TCP both ways: inner checksums and segmentation survive both implementations.
    tcp_transfer(&b.pods[1], &a.pods[1], &a.pod_ip(1), &c._dir.0);
    tcp_transfer(&a.pods[0], &b.pods[0], &b.pod_ip(0), &c._dir.0);
    // Nothing the kernel peer sent was refused.
    let drops = stats(a)["drops"].clone();
    for reason in
        ["unknown_vtep", "wrong_vni", "bad_vxlan_flags", "inner_mac_mismatch", "truncated"]
    {
        assert_eq!(drops[reason], 0, "kernel frames dropped as {reason}: {drops}");
    }
    assert!(counter(a, &["tx"]) >= 20);
    // linen cut its pod's TCP bursts into segments the kernel's VXLAN device took, and merged the
    // kernel's segments before handing them to its pod; UDP segmentation offload both ways.
    // (The I/O counters reach the stats file when the worker goes idle.)
    let both = wait_for(Duration::from_secs(3), || {
        (counter(a, &["io", "super_rx"]) > 0 && counter(a, &["io", "coalesced_tx"]) > 0)
            .then_some(())
    });
    assert!(both.is_some(), "{}", stats(a));
    let gso = |from: &Netns, to: &Netns, ip: &str, port| {
        let ip = ip.parse().expect("pod address");
        linen_testbed::cluster::udp_gso_through(from, to, ip, port, 1000, 20)
    };
    assert_eq!(gso(&a.pods[0], &b.pods[0], &b.pod_ip(0), 9200), (20, 20));
    assert_eq!(gso(&b.pods[1], &a.pods[1], &a.pod_ip(1), 9201), (20, 20));
    assert_alive(a);
}

/// Builds the i-th hostile UDP payload of a wave.
type MakeFrame = Box<dyn Fn(usize) -> Vec<u8> + Sync>;

/// A tiny deterministic generator for the random-bytes frames.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A VXLAN payload: header with `flags`/`vni`, then an inner IPv4 frame to `dst_mac`.
fn vxlan(flags: u8, vni: u32, dst_mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![flags, 0, 0, 0];
    p.extend_from_slice(&vni.to_be_bytes()[1..]);
    p.push(0);
    p.extend_from_slice(&dst_mac);
    p.extend_from_slice(&[0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c, 0x08, 0x00]);
    // IPv4 10.244.2.9 → 10.244.1.2, UDP to a closed port: harmless if it ever got through.
    p.extend_from_slice(&[
        0x45, 0, 0, 28, 0, 0, 0x40, 0, 63, 17, 0, 0, 10, 244, 2, 9, 10, 244, 1, 2,
    ]);
    p.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 8, 0, 0]);
    p
}

/// Sends `count` frames built by `make` from `from` (an address in `ns`) to A's VTEP, from a
/// thread that enters `ns`. Flow control keeps at most `WINDOW` frames unaccounted for
/// (`counted()` says how many of this wave linen has counted so far), so a slow (debug, loaded)
/// linend never loses frames to a full socket buffer and the counts can be exact.
fn inject(
    ns: &Netns,
    from: Ipv4Addr,
    count: usize,
    make: &(dyn Fn(usize) -> Vec<u8> + Sync),
    counted: &(dyn Fn() -> u64 + Sync),
    diag: &(dyn Fn() -> String + Sync),
) {
    const WINDOW: usize = 1000;
    let path = ns.path();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let f = std::fs::File::open(&path).expect("open netns");
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                let s = UdpSocket::bind(SocketAddrV4::new(from, 0)).expect("bind injector");
                let to = SocketAddrV4::new(Ipv4Addr::new(192, 168, 77, 1), 8472);
                for i in 0..count {
                    if i % WINDOW == 0 && i > 0 {
                        let caught_up = wait_for(Duration::from_secs(20), || {
                            (counted() + WINDOW as u64 >= i as u64).then_some(())
                        });
                        assert!(
                            caught_up.is_some(),
                            "linend counted {} of {i} frames sent: {}",
                            counted(),
                            diag()
                        );
                    }
                    s.send_to(&make(i), to).expect("send hostile frame");
                }
            })
            .join()
            .expect("injector thread");
    });
}

#[test]
fn tap_hostile_frames_are_counted_and_forwarding_goes_on() {
    // B runs `--datapath auto`, which picks a datapath (AF_XDP works here) and says why.
    let c = cluster("ntaph", "tap", Overlay::Linen("auto"));
    let (a, b) = (&c.a, &c.b);
    ping(&a.pods[0], &b.pod_ip(0));
    let log_b = std::fs::read_to_string(&b.log).unwrap_or_default();
    assert!(log_b.contains("datapath auto:"), "{log_b}");
    // A second address on B's underlay that is no cluster node.
    b.host.sh("ip addr add 192.168.77.3/24 dev eth0");

    const N: usize = 15_000;
    let known = b.ip;
    let stranger = Ipv4Addr::new(192, 168, 77, 3);
    let other_mac = [0x02, 0, 0, 0, 0, 0x01];
    let before = stats(a);
    let d0 = |r: &str| before["drops"][r].as_u64().unwrap_or(0);
    let total0: u64 =
        before["drops"].as_object().expect("drops").values().filter_map(|v| v.as_u64()).sum();

    let kinds: Vec<(&str, Ipv4Addr, MakeFrame)> = vec![
        ("truncated", known, Box::new(|i| vec![0x08; i % 8])),
        ("wrong_vni", known, Box::new(move |_| vxlan(0x08, 2, MAC_A_BYTES))),
        ("unknown_vtep", stranger, Box::new(move |_| vxlan(0x08, 1, MAC_A_BYTES))),
        (
            "bad_vxlan_flags",
            known,
            Box::new(move |i| vxlan(if i % 2 == 0 { 0x0c } else { 0x00 }, 1, MAC_A_BYTES)),
        ),
        ("inner_mac_mismatch", known, Box::new(move |_| vxlan(0x08, 1, other_mac))),
        (
            "inner_truncated",
            known,
            Box::new(move |_| vxlan(0x08, 1, MAC_A_BYTES)[..8 + 10].to_vec()),
        ),
    ];
    // On failure: linen's counters and the kernel's UDP counters on A (RcvbufErrors = socket full).
    let diag = || format!("{} / {}", stats(a), a.host.sh("grep Udp: /proc/net/snmp"));
    let mut sent = 0u64;
    for (reason, from, make) in kinds {
        let base = d0(reason);
        let now = |r: &str| stats(a)["drops"][r].as_u64().unwrap_or(0);
        inject(&b.host, from, N, &*make, &|| now(reason) - base, &diag);
        sent += N as u64;
        let want = d0(reason) + N as u64;
        let got = wait_for(Duration::from_secs(10), || {
            let now = stats(a)["drops"][reason].as_u64().unwrap_or(0);
            (now >= want).then_some(now)
        });
        let now = stats(a)["drops"][reason].as_u64().unwrap_or(0);
        assert_eq!(got, Some(want), "{N} frames injected as {reason}, counted {now}: {}", stats(a));
        // Forwarding goes on between the waves.
        a.pods[0].sh(&format!("ping -c 1 -W 2 {}", b.pod_ip(0)));
    }
    // Random bytes of random lengths from the known peer: every one dropped, none forwarded.
    let total_now = || -> u64 {
        stats(a)["drops"].as_object().map_or(0, |d| d.values().filter_map(|v| v.as_u64()).sum())
    };
    let base = total_now();
    let random = |i: usize| -> Vec<u8> {
        let mut r =
            XorShift(0x1234_5678_9abc_def0 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let len = (r.next() % 200) as usize;
        (0..len).map(|_| r.next() as u8).collect()
    };
    inject(&b.host, known, N, &random, &|| total_now().saturating_sub(base), &diag);
    sent += N as u64;
    let total = wait_for(Duration::from_secs(10), || {
        let t: u64 = stats(a)["drops"].as_object()?.values().filter_map(|v| v.as_u64()).sum();
        (t - total0 >= sent).then_some(t - total0)
    });
    // Pings between waves are forwarded traffic, not drops; a few IPv6 router solicitations from
    // linen.1 count as no_route. Allow exactly those.
    let extra = total.unwrap_or(0).saturating_sub(sent);
    assert!(
        total.is_some() && extra < 50,
        "sent {sent} hostile frames, dropped {total:?}: {}",
        stats(a)
    );
    assert!(sent >= 100_000);

    assert_alive(a);
    ping(&a.pods[0], &b.pod_ip(0));
    ping(&b.pods[1], &a.pod_ip(1));
    assert_idle(a);
}

#[test]
fn linend_refuses_what_it_cannot_do_with_a_clear_message() {
    let dir = TempDir::new("ntapr");
    let mut tb = Testbed::new("ntapr");
    let ns = tb.netns("n");
    ns.sh("ip link add eth0 type veth peer name eth0p && ip link set eth0 up && ip addr add 192.168.77.1/24 dev eth0");
    let good = dir.0.join("good.json");
    std::fs::write(
        &good,
        r#"{"network":"10.244.0.0/16","subnet":"10.244.1.0/24","public_ip":"192.168.77.1","peers":[]}"#,
    )
    .unwrap();
    let bad = dir.0.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"network":"10.244.0.0/16","subnet":"10.244.1.0/24","peers":[{"subnet":"10.244.1.0/24","public_ip":"192.168.77.2","vtep_mac":"26:69:c7:3a:5b:8c"}]}"#,
    )
    .unwrap();
    let linend = workspace_bin("linend");
    let run = |args: &[&str]| {
        let out = ns
            .command(linend.to_str().unwrap())
            .args(args)
            .args(["--subnet-file", dir.0.join("subnet.env").to_str().unwrap()])
            .output()
            .expect("run linend");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) =
        run(&["--static-peers", good.to_str().unwrap(), "--datapath", "xdp", "--queues", "0"]);
    assert!(!ok && err.contains("--queues 0 is not in 1..=64"), "{err}");
    let (ok, err) = run(&["--static-peers", bad.to_str().unwrap(), "--datapath", "tap"]);
    assert!(!ok && err.contains("overlaps this node's subnet"), "{err}");
    let (ok, err) = run(&["--static-peers", dir.0.join("missing.json").to_str().unwrap()]);
    assert!(!ok && err.contains("cannot read static-peers file"), "{err}");
    let (ok, err) = run(&["--static-peers", good.to_str().unwrap(), "--iface", "nosuch0"]);
    assert!(!ok && err.contains("interface nosuch0 does not exist"), "{err}");
    // Nothing was left behind by the failed starts.
    assert!(!ns.sh_output("ip link show linen.1").status.success());
}
