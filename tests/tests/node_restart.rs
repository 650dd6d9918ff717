//! Restarts, upgrades and crashes of linend under a service manager (root), for both datapaths:
//! linend runs as the systemd unit runs it — `Type=notify` with a file-descriptor store — under
//! the emulation in `linen_testbed::service`, which speaks the same protocol, so these tests
//! drive linend's real hand-over path.
//!
//! Traffic during each scenario: a ping every 10 ms from a pod on one node to a pod on the
//! other, and one TCP connection carrying a checked byte pattern (`linen-testpod stream`/`sink`).
//! A lost ping is a sequence number missing below the last one answered; late answers (queued
//! while no linend ran) count as answered, as they do for ping itself.
//!
//! Run alone with `cargo build --workspace --bins && cargo test -p linen-testbed --test node_restart`.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linen_testbed::cluster::{Cluster, ClusterBuilder, Node, Overlay, ETCD_PREFIX};
use linen_testbed::{wait_for, workspace_bin, Netns};

fn build(b: ClusterBuilder) -> Cluster {
    b.build().unwrap_or_else(|e| panic!("cluster: {e}"))
}

/// `ping -i 0.01` in the background, every reply's sequence number and RTT recorded.
struct Pinger {
    child: Child,
    replies: Arc<Mutex<Vec<(u32, f64)>>>,
    reader: std::thread::JoinHandle<()>,
}

/// What a ping run saw.
#[derive(Debug, Clone, Copy)]
struct PingResult {
    /// Sequence numbers up to the last one answered.
    sent: u32,
    /// Of those, the ones never answered.
    lost: u32,
    /// The slowest answer (ms): how long packets waited while no linend forwarded.
    max_rtt_ms: f64,
}

impl Pinger {
    fn start(from: &Netns, to: Ipv4Addr) -> Pinger {
        let mut child = from
            .command("ping")
            .args(["-n", "-i", "0.01", "-W", "3"])
            .arg(to.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ping");
        let out = child.stdout.take().expect("ping stdout");
        let replies = Arc::new(Mutex::new(Vec::new()));
        let r = replies.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let field = |k: &str| {
                    line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string)
                };
                let (Some(seq), Some(rtt)) = (field("icmp_seq="), field("time=")) else {
                    continue;
                };
                if let (Ok(seq), Ok(rtt)) = (seq.parse::<u32>(), rtt.parse::<f64>()) {
                    r.lock().unwrap().push((seq, rtt));
                }
            }
        });
        Pinger { child, replies, reader }
    }

    /// Stops ping (SIGINT to its PID: `ip netns exec` execs it) and counts.
    fn finish(mut self) -> PingResult {
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let _ = self.reader.join();
        let replies = self.replies.lock().unwrap();
        let seqs: BTreeSet<u32> = replies.iter().map(|(s, _)| *s).collect();
        let sent = seqs.iter().next_back().copied().unwrap_or(0);
        assert!(sent > 100, "ping got {} replies only", seqs.len());
        let lost = (1..=sent).filter(|s| !seqs.contains(s)).count() as u32;
        let max_rtt_ms = replies.iter().map(|(_, r)| *r).fold(0.0, f64::max);
        PingResult { sent, lost, max_rtt_ms }
    }
}

/// One TCP connection from a pod to another carrying a checked byte pattern.
struct Stream {
    sink: Child,
    stream: Child,
    stop: PathBuf,
}

/// What the receiving end of a [`Stream`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StreamResult {
    bytes: u64,
    intact: bool,
    /// The longest time between two reads that returned data (ms).
    max_gap_ms: u64,
}

impl Stream {
    fn start(from: &Netns, to: &Netns, to_ip: Ipv4Addr, port: u16, dir: &Path) -> Stream {
        let testpod = workspace_bin("linen-testpod").display().to_string();
        let sink = to
            .command(&testpod)
            .args(["sink", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sink");
        let listening = wait_for(Duration::from_secs(5), || {
            to.sh(&format!("ss -Hltn sport = :{port}")).contains(&port.to_string()).then_some(())
        });
        assert!(listening.is_some(), "the sink in {} does not listen", to.name);
        let stop = dir.join(format!("stream-{port}.stop"));
        let _ = std::fs::remove_file(&stop);
        let stream = from
            .command(&testpod)
            .args(["stream", &format!("{to_ip}:{port}"), "600"])
            .arg(&stop)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stream");
        Stream { sink, stream, stop }
    }

    fn finish(mut self) -> StreamResult {
        assert!(
            self.stream.try_wait().ok().flatten().is_none(),
            "the TCP stream ended during the scenario"
        );
        std::fs::write(&self.stop, b"").expect("stop file");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.sink.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let stream = self.stream.wait_with_output().expect("stream output");
        let sink = self.sink.wait_with_output().expect("sink output");
        let text = String::from_utf8_lossy(&sink.stdout).to_string();
        assert!(
            stream.status.success() && sink.status.success(),
            "TCP stream failed: stream {} / sink {} {text}",
            String::from_utf8_lossy(&stream.stderr),
            String::from_utf8_lossy(&sink.stderr),
        );
        let field = |k: &str| -> String {
            text.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or("").to_string()
        };
        StreamResult {
            bytes: field("bytes=").parse().unwrap_or(0),
            intact: field("ok=") == "true",
            max_gap_ms: field("max_gap_ms=").parse().unwrap_or(u64::MAX),
        }
    }
}

/// Ping and a TCP stream from node 0's first pod to node 1's.
struct Traffic {
    ping: Pinger,
    stream: Stream,
}

impl Traffic {
    fn start(c: &Cluster, port: u16) -> Traffic {
        let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
        assert!(
            c.wait_reachable(&a.pods[0], b.pod_ip(0), Duration::from_secs(10)),
            "{} cannot reach {}\n{}",
            a.name,
            b.pod_ip(0),
            logs(c)
        );
        let stream = Stream::start(&a.pods[0], &b.pods[0], b.pod_ip(0), port, c.dir());
        let ping = Pinger::start(&a.pods[0], b.pod_ip(0));
        // Both flowing before anything happens.
        std::thread::sleep(Duration::from_millis(1000));
        Traffic { ping, stream }
    }

    fn finish(self) -> (PingResult, StreamResult) {
        // Everything is back: a second more of traffic shows it (and ends a loss as a hole).
        std::thread::sleep(Duration::from_millis(1000));
        let stream = self.stream.finish();
        (self.ping.finish(), stream)
    }
}

fn logs(c: &Cluster) -> String {
    c.nodes()
        .iter()
        .filter_map(|n| n.linend.as_ref().map(|l| format!("--- {}\n{}", n.name, l.log_text())))
        .collect()
}

fn linend_log(n: &Node) -> String {
    n.linend.as_ref().expect("linend").log_text()
}

/// `(ifindex, MAC)` of `linen.1` on `n`, `None` when it does not exist.
fn overlay_device(n: &Node) -> Option<(u32, String)> {
    let out = n.host.sh_output("ip -o link show dev linen.1");
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let index = line.split(':').next()?.trim().parse().ok()?;
    let mac = line.split_whitespace().skip_while(|w| *w != "link/ether").nth(1)?.to_string();
    Some((index, mac))
}

/// Devices of `n` whose name starts with `linen`.
fn linen_devices(n: &Node) -> Vec<String> {
    n.host
        .sh("ip -o link show")
        .lines()
        .filter_map(|l| {
            l.split(':').nth(1).map(|s| s.trim().split('@').next().unwrap_or("").to_string())
        })
        .filter(|name| name.starts_with("linen"))
        .collect()
}

/// The id of the XDP program on `n`'s `eth0`, if one is attached.
fn xdp_prog(n: &Node) -> Option<u32> {
    let text = n.host.sh("ip -d link show dev eth0");
    let mut words = text.split_whitespace().skip_while(|w| *w != "prog/xdp");
    words.next()?;
    match (words.next(), words.next()) {
        (Some("id"), Some(id)) => id.parse().ok(),
        _ => None,
    }
}

/// Whether the kernel still has the BPF program `id` (loaded anywhere).
fn prog_exists(id: u32) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("bpftool (Debian package bpftool)")
        .success()
}

/// AF_XDP sockets open in `n`'s namespace: the `sockets` column of the `XDP` line of
/// `/proc/net/protocols`, which counts per namespace (`ss --xdp` needs `CONFIG_XDP_SOCKETS_DIAG`,
/// which the test kernel lacks).
fn xdp_sockets(n: &Node) -> usize {
    let text = n.host.sh("cat /proc/net/protocols");
    let line =
        text.lines().find(|l| l.starts_with("XDP ")).expect("an XDP line in /proc/net/protocols");
    line.split_whitespace().nth(2).and_then(|v| v.parse().ok()).expect("XDP socket count")
}

/// nftables tables in `n`'s namespace.
fn nft_tables(n: &Node) -> Vec<String> {
    n.host
        .sh("nft list tables")
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The path of the program the PID runs.
fn exe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("read /proc/PID/exe")
}

fn current_pid(n: &Node) -> u32 {
    n.linend.as_ref().expect("linend").current_pid()
}

/// How often the log says the datapath was taken over from a previous run.
fn takeovers(n: &Node) -> usize {
    linend_log(n).matches("datapath taken over from the previous run").count()
}

fn report(what: &str, ping: &PingResult, tcp: &StreamResult) {
    eprintln!(
        "{what}: ping {} sent, {} lost, slowest answer {:.1} ms; TCP {} bytes intact={} longest stall {} ms",
        ping.sent, ping.lost, ping.max_rtt_ms, tcp.bytes, tcp.intact, tcp.max_gap_ms
    );
}

/// `systemctl restart` of both nodes in turn, then an upgrade of node 0 (the unit's binary
/// replaced by another file): 0 pings lost, the TCP stream intact, `linen.1` the same device
/// with the same MAC throughout, the XDP program replaced by the new binary's.
fn restart_and_upgrade_lose_nothing(tag: &str, datapath: &str) {
    let c =
        build(ClusterBuilder::new(tag).nodes(2, Overlay::linen(datapath)).service_manager(true));
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    let before =
        (overlay_device(a).expect("linen.1 on n1"), overlay_device(b).expect("linen.1 on n2"));
    let stored = c.stored(0);
    assert!(
        stored.iter().any(|n| n == "handover") && stored.iter().any(|n| n == "tap-0"),
        "{stored:?}"
    );
    let prog_before = xdp_prog(a);
    assert_eq!(prog_before.is_some(), datapath == "xdp", "XDP program on eth0: {prog_before:?}");

    let t = Traffic::start(&c, 7100);
    let took = c.restart_linend(0);
    std::thread::sleep(Duration::from_millis(500));
    c.restart_linend(1);
    std::thread::sleep(Duration::from_millis(500));
    let upgraded = c.dir().join("linend-upgraded");
    std::fs::copy(workspace_bin("linend"), &upgraded).expect("copy linend");
    c.set_linend_program(0, upgraded.clone());
    let t0 = Instant::now();
    c.restart_linend(0);
    let upgrade_took = t0.elapsed();
    let (ping, tcp) = t.finish();
    report(&format!("{datapath} restart n1, restart n2, upgrade n1"), &ping, &tcp);
    eprintln!("old linend exited {took:?} after SIGTERM; upgrade to READY=1 took {upgrade_took:?}");

    assert_eq!(exe(current_pid(a)), upgraded, "n1 runs the upgraded binary");
    assert_eq!(takeovers(a), 2, "n1 took the datapath over twice\n{}", linend_log(a));
    assert_eq!(takeovers(b), 1, "n2 took the datapath over once\n{}", linend_log(b));
    assert_eq!(ping.lost, 0, "pings lost across restarts: {ping:?}\n{}", logs(&c));
    assert!(tcp.intact && tcp.bytes > 0, "TCP stream damaged: {tcp:?}");
    let after =
        (overlay_device(a).expect("linen.1 on n1"), overlay_device(b).expect("linen.1 on n2"));
    assert_eq!(before, after, "linen.1 (ifindex, MAC) changed across restarts");
    if let Some(old) = prog_before {
        let now = xdp_prog(a).expect("an XDP program on n1's eth0");
        assert_ne!(now, old, "the upgrade runs its own program");
        assert!(!prog_exists(old), "the replaced program {old} is still loaded");
    }
    assert_eq!(linen_devices(a), vec!["linen.1".to_string()]);
}

#[test]
fn xdp_restart_and_upgrade_lose_nothing() {
    restart_and_upgrade_lose_nothing("rsux", "xdp");
}

#[test]
fn tap_restart_and_upgrade_lose_nothing() {
    restart_and_upgrade_lose_nothing("rsut", "tap");
}

/// SIGKILL and `Restart=always` twice in a row: forwarding comes back by itself, the gap is
/// measured, and nothing is left behind — one `linen.1` (the same device), one XDP program (the
/// crashed runs' programs freed), one AF_XDP socket per queue, one masquerade table. Then
/// `systemctl stop` releases the datapath, and `linend --cleanup` the table.
fn crash_twice_then_stop(tag: &str, datapath: &str) {
    let c = build(
        ClusterBuilder::new(tag)
            .nodes(2, Overlay::linen(datapath))
            .linend_arg("--ip-masq")
            .service_manager(true),
    );
    let a = &c.nodes()[0];
    let device = overlay_device(a).expect("linen.1");
    let xdp = datapath == "xdp";
    let mut progs = Vec::new();
    progs.extend(xdp_prog(a));

    let t = Traffic::start(&c, 7200);
    for _ in 0..2 {
        c.crash_linend(0, Duration::from_millis(100));
        progs.extend(xdp_prog(a));
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ping, tcp) = t.finish();
    report(&format!("{datapath} two crashes (SIGKILL, start 100 ms later)"), &ping, &tcp);

    assert!(tcp.intact && tcp.bytes > 0, "TCP stream damaged: {tcp:?}");
    // Generous: 2 s of pings per crash. The figure to look at is printed above.
    assert!(ping.lost <= 400, "{} pings lost over two crashes\n{}", ping.lost, logs(&c));
    assert_eq!(takeovers(a), 2, "{}", linend_log(a));
    assert_eq!(overlay_device(a), Some(device.clone()), "linen.1 is the same device");
    assert_eq!(linen_devices(a), vec!["linen.1".to_string()]);
    assert_eq!(nft_tables(a), vec!["table ip linen".to_string()]);
    if xdp {
        assert_eq!(progs.len(), 3, "an XDP program after every start: {progs:?}");
        let now = xdp_prog(a).expect("XDP program");
        for old in progs.iter().filter(|p| **p != now) {
            assert!(!prog_exists(*old), "program {old} of a crashed run is still loaded");
        }
        assert_eq!(xdp_sockets(a), 1, "one AF_XDP socket (one queue)");
    } else {
        assert_eq!(xdp_sockets(a), 0);
    }

    // `systemctl stop`: the store is emptied, and the datapath goes with it.
    let prog = xdp_prog(a);
    c.stop_service(0);
    let gone = wait_for(Duration::from_secs(5), || overlay_device(a).is_none().then_some(()));
    assert!(gone.is_some(), "linen.1 survived the stop");
    assert!(linen_devices(a).is_empty());
    assert_eq!(xdp_prog(a), None, "an XDP program survived the stop");
    if let Some(p) = prog {
        let freed = wait_for(Duration::from_secs(5), || (!prog_exists(p)).then_some(()));
        assert!(freed.is_some(), "program {p} survived the stop");
    }
    assert_eq!(xdp_sockets(a), 0, "an AF_XDP socket survived the stop");
    assert!(c.stored(0).is_empty());
    // Left for the next start, as flanneld leaves its rules: the masquerade table. `--cleanup`
    // takes linen off the node.
    assert_eq!(nft_tables(a), vec!["table ip linen".to_string()]);
    let subnet_file = c.dir().join(format!("{}.subnet.env", a.name));
    let out = a
        .host
        .command(&workspace_bin("linend").display().to_string())
        .arg("--cleanup")
        .arg("--subnet-file")
        .arg(&subnet_file)
        .args(["--iface", "eth0"])
        .output()
        .expect("linend --cleanup");
    assert!(out.status.success(), "linend --cleanup: {}", String::from_utf8_lossy(&out.stderr));
    assert!(nft_tables(a).is_empty(), "{:?}", nft_tables(a));

    // A fresh start builds everything anew and forwards.
    c.start_linend(0);
    assert!(
        c.wait_reachable(&a.pods[0], c.nodes()[1].pod_ip(0), Duration::from_secs(10)),
        "no forwarding after a fresh start\n{}",
        logs(&c)
    );
    assert_ne!(overlay_device(a).map(|d| d.0), Some(device.0), "a new linen.1");
}

#[test]
fn xdp_crash_twice_then_stop_leaves_nothing() {
    crash_twice_then_stop("rscx", "xdp");
}

#[test]
fn tap_crash_twice_then_stop_leaves_nothing() {
    crash_twice_then_stop("rsct", "tap");
}

/// A service manager whose store keeps `store` descriptors only: none (`FileDescriptorStoreMax=0`,
/// the same as linend without systemd), or too few for a hand-over (the rest is closed, as
/// systemd closes what does not fit). A restart then rebuilds the datapath — after releasing a
/// partial set from the store, so the old `linen.1` goes first. Forwarding comes back and nothing
/// is left twice; the pings lost meanwhile are printed, as the cost the hand-over saves.
fn restart_without_a_full_store(tag: &str, datapath: &str, store: usize) {
    let c = build(
        ClusterBuilder::new(tag)
            .nodes(2, Overlay::linen(datapath))
            .service_manager(true)
            .fd_store_max(store),
    );
    let a = &c.nodes()[0];
    let device = overlay_device(a).expect("linen.1");
    assert_eq!(c.stored(0).len(), store, "{:?}", c.stored(0));
    let t = Traffic::start(&c, 7300);
    c.restart_linend(0);
    let (ping, tcp) = t.finish();
    report(&format!("{datapath} restart with a store of {store} descriptor(s)"), &ping, &tcp);
    assert!(tcp.intact && tcp.bytes > 0, "TCP stream damaged: {tcp:?}");
    assert!(ping.lost <= 300, "{} pings lost\n{}", ping.lost, logs(&c));
    assert_eq!(takeovers(a), 0, "{}", linend_log(a));
    if store > 0 {
        assert!(
            linend_log(a).contains("make no usable hand-over"),
            "the partial store was not refused\n{}",
            linend_log(a)
        );
    }
    let now = overlay_device(a).expect("linen.1 after the restart");
    assert_ne!(now.0, device.0, "a new linen.1");
    assert_eq!(now.1, device.1, "the VtepMAC of the static peers file");
    assert_eq!(linen_devices(a), vec!["linen.1".to_string()]);
    assert_eq!(xdp_sockets(a), usize::from(datapath == "xdp"));
}

#[test]
fn xdp_restart_without_a_store_rebuilds() {
    restart_without_a_full_store("rsnx", "xdp", 0);
}

#[test]
fn tap_restart_without_a_store_rebuilds() {
    restart_without_a_full_store("rsnt", "tap", 0);
}

#[test]
fn xdp_restart_with_a_store_too_small_rebuilds() {
    restart_without_a_full_store("rspx", "xdp", 2);
}

#[test]
fn tap_restart_with_a_store_too_small_rebuilds() {
    restart_without_a_full_store("rspt", "tap", 2);
}

/// A mixed cluster in etcd mode — a linen node per datapath and a flannel-configured kernel node
/// whose neighbour and FDB entries were written once, from the leases at its start — across
/// restarts of both linen nodes: no ping lost between any two of them, every lease value
/// unchanged byte for byte (no peer has anything to relearn); the same after a crash of each. Then a stop and a fresh
/// start (a new `linen.1`, as after a reboot): the derived VtepMAC comes back the same, and the
/// kernel node reaches the linen nodes with the entries it already has.
#[test]
fn etcd_mixed_cluster_restart_keeps_mac_and_lease() {
    let c = build(
        ClusterBuilder::new("rsmx")
            .node(Overlay::linen("xdp"))
            .node(Overlay::linen("tap"))
            .node(Overlay::KernelVxlan)
            .etcd()
            .service_manager(true),
    );
    let nodes = c.nodes();
    let (x, t, k) = (&nodes[0], &nodes[1], &nodes[2]);
    let lease = |n: &Node| {
        let key = format!("{ETCD_PREFIX}/subnets/10.244.{}.0-24", n.index);
        c.etcdctl(&["get", &key, "--print-value-only"]).expect("etcdctl get").trim().to_string()
    };
    let leases = (lease(x), lease(t));
    let macs = (overlay_device(x).expect("n1 linen.1").1, overlay_device(t).expect("n2 linen.1").1);
    assert!(leases.0.contains(&macs.0) && leases.1.contains(&macs.1), "{leases:?} {macs:?}");
    for (from, to) in [(k, x), (k, t), (x, t), (t, k)] {
        assert!(
            c.wait_reachable(&from.pods[0], to.pod_ip(0), Duration::from_secs(15)),
            "{} -> {}\n{}",
            from.name,
            to.name,
            logs(&c)
        );
    }

    let pings: Vec<Pinger> = [(k, x), (k, t), (x, t)]
        .iter()
        .map(|(f, to)| Pinger::start(&f.pods[0], to.pod_ip(0)))
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    c.restart_linend(0);
    std::thread::sleep(Duration::from_millis(300));
    c.restart_linend(1);
    std::thread::sleep(Duration::from_millis(1000));
    for (p, what) in pings.into_iter().zip(["n3 -> n1 (xdp)", "n3 -> n2 (tap)", "n1 -> n2"]) {
        let r = p.finish();
        eprintln!("mixed cluster, {what}: {r:?}");
        assert_eq!(r.lost, 0, "{what} across two restarts: {r:?}\n{}", logs(&c));
    }
    assert_eq!((lease(x), lease(t)), leases, "a lease value changed across restarts");

    // A crash of each: the lease stays as it is too.
    c.crash_linend(0, Duration::from_millis(100));
    c.crash_linend(1, Duration::from_millis(100));
    assert!(c.wait_reachable(&k.pods[0], x.pod_ip(0), Duration::from_secs(10)), "{}", logs(&c));
    assert!(c.wait_reachable(&k.pods[0], t.pod_ip(0), Duration::from_secs(10)), "{}", logs(&c));
    assert_eq!((lease(x), lease(t)), leases, "a lease value changed across a crash");

    // Stop and start anew: a new device, the same derived MAC, the same lease value.
    for (i, n) in nodes.iter().enumerate().take(2) {
        let before = overlay_device(n).expect("linen.1");
        c.stop_service(i);
        c.start_linend(i);
        let after = overlay_device(n).expect("linen.1");
        assert_ne!(after.0, before.0, "{}: a fresh start makes a new linen.1", n.name);
        assert_eq!(after.1, before.1, "{}: the VtepMAC is derived, not random", n.name);
    }
    assert_eq!((lease(x), lease(t)), leases, "a lease value changed across a fresh start");
    for to in [x, t] {
        assert!(
            c.wait_reachable(&k.pods[0], to.pod_ip(0), Duration::from_secs(15)),
            "the kernel node cannot reach {} after its fresh start\n{}",
            to.name,
            logs(&c)
        );
    }
}

/// etcd hangs (stopped) while both linen nodes of an etcd-mode cluster restart: each new linend
/// takes its datapath over and forwards on the peers the previous one stored, without waiting
/// for etcd; no ping is lost. Once etcd answers again, each claims its subnet (the same lease
/// value) and says `READY=1`.
#[test]
fn etcd_unreachable_during_restarts_keeps_forwarding() {
    let c = build(
        ClusterBuilder::new("rsex")
            .node(Overlay::linen("xdp"))
            .node(Overlay::linen("tap"))
            .etcd()
            .service_manager(true),
    );
    let nodes = c.nodes();
    let (x, t) = (&nodes[0], &nodes[1]);
    let lease = |n: &Node| {
        let key = format!("{ETCD_PREFIX}/subnets/10.244.{}.0-24", n.index);
        c.etcdctl(&["get", &key, "--print-value-only"]).expect("etcdctl get").trim().to_string()
    };
    let leases = (lease(x), lease(t));
    for (from, to) in [(x, t), (t, x)] {
        assert!(
            c.wait_reachable(&from.pods[0], to.pod_ip(0), Duration::from_secs(15)),
            "{} -> {}\n{}",
            from.name,
            to.name,
            logs(&c)
        );
    }
    let pings = [Pinger::start(&x.pods[0], t.pod_ip(0)), Pinger::start(&t.pods[0], x.pod_ip(0))];
    std::thread::sleep(Duration::from_millis(500));
    c.pause_etcd(true);
    c.restart_linend_no_wait(0);
    c.restart_linend_no_wait(1);
    std::thread::sleep(Duration::from_millis(2000));
    let waiting = |n: &Node| linend_log(n).contains("forwarding with the handed-over datapath");
    let (x_waited, t_waited) = (waiting(x), waiting(t));
    let (x_ready, t_ready) = (c.linend_ready(0), c.linend_ready(1));
    c.pause_etcd(false);
    assert!(x_waited && t_waited, "linend waited for etcd before forwarding\n{}", logs(&c));
    assert!(!x_ready && !t_ready, "READY=1 before etcd answered");
    for (i, n) in nodes.iter().enumerate() {
        let ready = wait_for(Duration::from_secs(30), || c.linend_ready(i).then_some(()));
        assert!(ready.is_some(), "{}: no READY=1 after etcd came back\n{}", n.name, logs(&c));
    }
    std::thread::sleep(Duration::from_millis(500));
    for (p, what) in pings.into_iter().zip(["n1 -> n2", "n2 -> n1"]) {
        let r = p.finish();
        eprintln!("etcd stopped during restarts, {what}: {r:?}");
        assert_eq!(r.lost, 0, "{what}: {r:?}\n{}", logs(&c));
    }
    assert_eq!((lease(x), lease(t)), leases, "a lease value changed");
}
