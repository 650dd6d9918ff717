//! The AF_XDP datapath end to end (root): nodes are namespaces built by
//! `linen_testbed::cluster` (underlay veth with `tx off`, a `cni0` bridge and two pods per
//! node), each running `linend --static-peers … --datapath xdp` unless a test says otherwise.
//!
//! Run alone with `cargo build --workspace --bins && cargo test -p linen-testbed --test node_xdp`.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use linen_testbed::cluster::{udp_gso_through, Cluster, ClusterBuilder, Node, Overlay};
use linen_testbed::{wait_for, Netns};

/// The VtepMAC of node 1 (the cluster's fixed MAC for `n1`), as bytes for crafted frames.
const N1_VTEP_MAC: [u8; 6] = [0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8];

fn build(b: ClusterBuilder) -> Cluster {
    b.build().unwrap_or_else(|e| panic!("cluster: {e}"))
}

fn stats(n: &Node) -> serde_json::Value {
    let l = n.linend.as_ref().expect("node runs linend");
    l.worker_stats().unwrap_or_else(|| panic!("{}: no stats; log:\n{}", n.name, l.log_text()))
}

fn counter(n: &Node, path: &[&str]) -> u64 {
    let mut v = stats(n);
    for p in path {
        v = v[*p].take();
    }
    v.as_u64().unwrap_or(0)
}

/// Drop reasons only the encap side (frames from `linen.1`) has: the kernel's own IPv6
/// link-local packets on `linen.1` land in `no_route` at any time, never a frame from the underlay.
const ENCAP_ONLY: [&str; 4] = ["no_route", "ttl_expired", "too_big_df_clear", "no_headroom"];

/// Drops of frames from the underlay, over every reason the decap side can give.
fn decap_drops_total(n: &Node) -> u64 {
    stats(n)["drops"].as_object().map_or(0, |m| {
        m.iter()
            .filter(|(k, _)| !ENCAP_ONLY.contains(&k.as_str()))
            .filter_map(|(_, v)| v.as_u64())
            .sum()
    })
}

fn logs(c: &Cluster) -> String {
    c.nodes()
        .iter()
        .filter_map(|n| n.linend.as_ref().map(|l| (n, l)))
        .map(|(n, l)| format!("--- {} stats {}\n{}", n.name, stats(n), l.log_text()))
        .collect()
}

fn ping(c: &Cluster, from: &Netns, to: Ipv4Addr) {
    assert!(
        c.wait_reachable(from, to, Duration::from_secs(10)),
        "{} cannot ping {to}\n{}",
        from.name,
        logs(c)
    );
}

/// One datagram from `from` to `to_ip`:9000 in pod `to`, received intact.
fn udp_once(from: &Netns, to: &Netns, to_ip: Ipv4Addr, text: &str) {
    let mut rx = to
        .command("socat")
        .args(["-u", "UDP4-RECVFROM:9000", "STDOUT"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("socat");
    let got = wait_for(Duration::from_secs(5), || {
        from.sh(&format!("printf '%s' '{text}' | socat -u STDIN UDP4-SENDTO:{to_ip}:9000"));
        std::thread::sleep(Duration::from_millis(100));
        rx.try_wait().ok().flatten()
    });
    if got.is_none() {
        let _ = rx.kill();
    }
    let out = rx.wait_with_output().expect("socat output");
    assert_eq!(String::from_utf8_lossy(&out.stdout), text, "UDP {} -> {to_ip}", from.name);
}

/// Sends `mib` MiB of random bytes from pod `from` to `to_ip`:9001 (pod `to`) over TCP and
/// compares SHA-256 sums of what was sent and what arrived.
fn tcp_verified(from: &Netns, to: &Netns, to_ip: Ipv4Addr, mib: u32, dir: &Path, tag: &str) {
    let src = dir.join(format!("{tag}.src"));
    let dst = dir.join(format!("{tag}.dst"));
    from.sh(&format!("head -c {}M /dev/urandom > {}", mib, src.display()));
    let rx = to
        .command("socat")
        .args(["-u", "TCP4-LISTEN:9001,reuseaddr"])
        .arg(format!("CREATE:{}", dst.display()))
        .spawn()
        .expect("socat listen");
    let started = Instant::now();
    let sent = wait_for(Duration::from_secs(5), || {
        from.sh_output(&format!("socat -u OPEN:{} TCP4:{to_ip}:9001", src.display()))
            .status
            .success()
            .then_some(())
    });
    assert!(sent.is_some(), "TCP connect {} -> {to_ip} failed", from.name);
    let out = rx.wait_with_output().expect("socat listener");
    assert!(out.status.success(), "listener failed");
    let secs = started.elapsed().as_secs_f64();
    let sum = |p: &Path| {
        let o = from.sh(&format!("sha256sum {}", p.display()));
        o.split_whitespace().next().unwrap_or("").to_string()
    };
    let (a, b) = (sum(&src), sum(&dst));
    assert!(!a.is_empty() && a == b, "TCP {} -> {to_ip}: content differs", from.name);
    eprintln!(
        "TCP {} MiB {} -> {to_ip} verified in {secs:.1} s (debug-build linend; not a benchmark)",
        mib, from.name
    );
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    // Fields after the command: state is [0]; utime and stime are fields 14 and 15 of the line.
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

/// linend uses under 20% of one core over 3 s with no traffic (its workers block).
fn assert_idle(n: &Node) {
    let pid = n.linend.as_ref().expect("linend").pid;
    std::thread::sleep(Duration::from_millis(300));
    let t0 = cpu_ticks(pid);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let ticks = cpu_ticks(pid) - t0;
    // /proc accounts CPU time in USER_HZ ticks, 100 per second on Linux.
    let share = ticks as f64 / 100.0 / start.elapsed().as_secs_f64();
    eprintln!("{}: idle linend used {:.1}% of a core over 3 s", n.name, share * 100.0);
    assert!(share < 0.20, "{}: idle linend used {:.0}% of a core", n.name, share * 100.0);
    let blocks = counter(n, &["loop", "blocks"]);
    assert!(blocks > 0, "{}: the worker never blocked", n.name);
}

fn assert_alive(n: &Node) {
    let pid = n.linend.as_ref().expect("linend").pid;
    assert!(linen_testbed::cluster::running(pid), "{}: linend died", n.name);
}

fn xdp_attached(ns: &Netns, dev: &str) -> bool {
    ns.sh(&format!("ip -d link show {dev}")).contains("prog/xdp")
}

#[test]
fn xdp_two_nodes_ping_udp_tcp_mtu_idle_shutdown() {
    // Pods keep MTU 1500 so over-MTU packets reach the node and must be answered there.
    let c = build(ClusterBuilder::new("nxdpa").nodes(2, Overlay::linen("xdp")).pod_mtu(1500));
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    assert!(xdp_attached(&a.host, "eth0"));
    // linen.1 is a TAP with virtio-net headers: the kernel hands over unfinished checksums and
    // unsegmented TCP, and the overlay has no veth peer any more.
    let link = a.host.sh("ip -d link show linen.1");
    assert!(link.contains("mtu 1450") && link.contains("tun type tap"), "{link}");
    assert!(a.host.sh("ip -d link show linen.1").contains("multi_queue"), "{link}");
    let offloads = a.host.sh("ethtool -k linen.1");
    assert!(offloads.contains("tx-checksumming: on"), "{offloads}");
    assert!(offloads.contains("tcp-segmentation-offload: on"), "{offloads}");
    assert!(!a.host.sh_output("ip link show linen.1x").status.success());

    // Every cross-node pair both ways, and pods of one node.
    for (x, y) in [(a, b), (b, a)] {
        for i in 0..2 {
            for j in 0..2 {
                ping(&c, &x.pods[i], y.pod_ip(j));
            }
        }
    }
    ping(&c, &a.pods[0], a.pod_ip(1));
    udp_once(&a.pods[0], &b.pods[1], b.pod_ip(1), "linen-a-to-b");
    udp_once(&b.pods[0], &a.pods[1], a.pod_ip(1), "linen-b-to-a");

    // The underlay next hops got resolved (ARP through the kernel path) and routes republished.
    let resolved = wait_for(Duration::from_secs(5), || {
        a.linend.as_ref()?.log_text().contains("next-hop MACs changed").then_some(())
    });
    assert!(resolved.is_some(), "{}", logs(&c));
    // The first packets went out through the kernel path meanwhile (next hop unresolved).
    assert!(counter(a, &["to_kernel"]) > 0, "{}", stats(a));

    // MTU: 1450-byte packets (1422 + 28) pass with DF; 1451+ get "frag needed" from A's router
    // (linen.1 has the overlay MTU).
    let ok = a.pods[0].sh_output(&format!("ping -c 2 -W 2 -M do -s 1422 {}", b.pod_ip(0)));
    assert!(ok.status.success(), "MTU-sized DF ping failed");
    let big = a.pods[0].sh_output(&format!("ping -c 1 -W 2 -M do -s 1472 {}", b.pod_ip(0)));
    let text =
        String::from_utf8_lossy(&big.stdout).to_string() + &String::from_utf8_lossy(&big.stderr);
    assert!(!big.status.success() && text.contains("Frag needed"), "{text}");
    // With linen.1's MTU raised, the frame reaches the worker, which answers it itself.
    a.host.sh("ip link set linen.1 mtu 1500");
    let replies0 = counter(a, &["replies"]);
    let big = a.pods[1].sh_output(&format!("ping -c 1 -W 2 -M do -s 1472 {}", b.pod_ip(1)));
    let text =
        String::from_utf8_lossy(&big.stdout).to_string() + &String::from_utf8_lossy(&big.stderr);
    assert!(!big.status.success() && text.contains("Frag needed"), "{text}");
    let replied =
        wait_for(Duration::from_secs(2), || (counter(a, &["replies"]) > replies0).then_some(()));
    assert!(replied.is_some(), "worker sent no ICMP reply: {}", stats(a));
    a.host.sh("ip link set linen.1 mtu 1450");

    tcp_verified(&a.pods[0], &b.pods[0], b.pod_ip(0), 100, c.dir(), "ab");
    // TCP crossed as super-packets: A read whole bursts from linen.1 and cut them, B merged the
    // segments it decapsulated before writing them to linen.1.
    let merged = wait_for(Duration::from_secs(3), || {
        (counter(a, &["io", "super_rx"]) > 0 && counter(b, &["io", "coalesced_tx"]) > 0)
            .then_some(())
    });
    assert!(merged.is_some(), "A: {}\nB: {}", stats(a), stats(b));
    // UDP segmentation offload from a pod: 20 datagrams leave it as one super-packet and arrive
    // as 20 intact datagrams.
    let before = counter(a, &["io", "super_rx"]);
    let got = udp_gso_through(&a.pods[1], &b.pods[1], b.pod_ip(1), 9200, 1000, 20);
    assert_eq!(got, (20, 20), "datagrams (received, intact)");
    let cut = wait_for(Duration::from_secs(3), || {
        (counter(a, &["io", "super_rx"]) > before).then_some(())
    });
    assert!(cut.is_some(), "the UDP run did not reach linen as one super-packet: {}", stats(a));

    // Forwarded in both directions, nothing failed in I/O.
    let moved = wait_for(Duration::from_secs(2), || {
        (counter(a, &["tx"]) > 70_000 && counter(b, &["tx"]) > 70_000).then_some(())
    });
    assert!(moved.is_some(), "{}", logs(&c));
    for n in [a, b] {
        assert_eq!(counter(n, &["io", "errors"]), 0, "{}", stats(n));
        assert_eq!(counter(n, &["io", "kernel_unsupported"]), 0, "{}", stats(n));
        assert_eq!(counter(n, &["drops", "unknown_vtep"]), 0, "{}", stats(n));
        assert_eq!(counter(n, &["drops", "wrong_vni"]), 0, "{}", stats(n));
        assert_eq!(counter(n, &["drops", "inner_mac_mismatch"]), 0, "{}", stats(n));
    }

    // Idle: the workers block; the first packet after idle is forwarded.
    for n in [a, b] {
        assert_idle(n);
    }
    let first = a.pods[0].sh_output(&format!("ping -c 1 -W 1 {}", b.pod_ip(0)));
    assert!(first.status.success(), "first packet after idle lost");

    // Clean shutdown: program detached, linen.1 gone.
    assert!(c.stop_linend(Duration::from_secs(5)).is_empty(), "linend did not stop");
    for n in [a, b] {
        let link = n.host.sh("ip -d link show eth0");
        assert!(!xdp_attached(&n.host, "eth0"), "{}: XDP left on eth0: {link}", n.name);
        assert!(!n.host.sh_output("ip link show linen.1").status.success());
        let log = n.linend.as_ref().unwrap().log_text();
        assert!(log.contains("removed"), "{log}");
    }
}

#[test]
fn xdp_interop_with_kernel_vxlan_both_ways() {
    let c =
        build(ClusterBuilder::new("nxdpi").node(Overlay::linen("xdp")).node(Overlay::KernelVxlan));
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    for (x, y) in [(a, b), (b, a)] {
        for i in 0..2 {
            ping(&c, &x.pods[i], y.pod_ip(i));
        }
    }
    let ok = a.pods[0].sh_output(&format!("ping -c 2 -W 2 -M do -s 1422 {}", b.pod_ip(0)));
    assert!(ok.status.success(), "MTU-sized ping linen -> kernel failed");
    let ok = b.pods[0].sh_output(&format!("ping -c 2 -W 2 -M do -s 1422 {}", a.pod_ip(0)));
    assert!(ok.status.success(), "MTU-sized ping kernel -> linen failed");
    udp_once(&a.pods[0], &b.pods[1], b.pod_ip(1), "linen-to-kernel");
    udp_once(&b.pods[0], &a.pods[1], a.pod_ip(1), "kernel-to-linen");
    tcp_verified(&a.pods[0], &b.pods[0], b.pod_ip(0), 100, c.dir(), "lk");
    tcp_verified(&b.pods[1], &a.pods[1], a.pod_ip(1), 100, c.dir(), "kl");
    // Both transfers went through linen's worker (data packets encapsulated and decapsulated),
    // as super-packets: linen cut its pod's bursts into segments the kernel's VXLAN device took,
    // and merged the kernel's segments before handing them to its pod.
    let moved = wait_for(Duration::from_secs(2), || (counter(a, &["tx"]) > 140_000).then_some(()));
    assert!(moved.is_some(), "{}", stats(a));
    // (The I/O counters reach the stats file when the worker goes idle.)
    let both = wait_for(Duration::from_secs(3), || {
        (counter(a, &["io", "super_rx"]) > 0 && counter(a, &["io", "coalesced_tx"]) > 0)
            .then_some(())
    });
    assert!(both.is_some(), "{}", stats(a));
    // UDP segmentation offload both ways across the mixed pair.
    assert_eq!(udp_gso_through(&a.pods[0], &b.pods[0], b.pod_ip(0), 9200, 1000, 20), (20, 20));
    assert_eq!(udp_gso_through(&b.pods[1], &a.pods[1], a.pod_ip(1), 9201, 1000, 20), (20, 20));
    // linen accepted every frame the kernel's VXLAN device sent.
    for r in ["unknown_vtep", "wrong_vni", "bad_vxlan_flags", "inner_mac_mismatch", "truncated"] {
        assert_eq!(counter(a, &["drops", r]), 0, "{r}: {}", stats(a));
    }
    assert_eq!(counter(a, &["io", "errors"]), 0, "{}", stats(a));
}

/// A simple deterministic generator for the random-bytes wave.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A VXLAN payload (8-byte header + inner Ethernet/IPv4/UDP frame to `dst_mac`).
fn vxlan_payload(flags: u8, vni: u32, dst_mac: [u8; 6], inner_len: usize) -> Vec<u8> {
    let mut p = vec![flags, 0, 0, 0];
    p.extend_from_slice(&(vni << 8).to_be_bytes());
    p.extend_from_slice(&dst_mac);
    p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 244, 2, 2, 10, 244, 1, 2];
    ip.resize(inner_len.max(20), 0);
    let total = ip.len() as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&ip);
    p
}

/// Sends the frames `make(i)` for `i in 0..n` as UDP payloads from `src` (in namespace `ns`) to
/// `dst`:8472, pausing briefly after every 64 so that a worker with a CPU keeps up.
fn inject(ns: &Netns, src: Ipv4Addr, dst: Ipv4Addr, n: usize, make: &dyn Fn(usize) -> Vec<u8>) {
    let path = format!("/run/netns/{}", ns.name);
    let frames: Vec<Vec<u8>> = (0..n).map(make).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&path).expect("netns file");
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let sock = UdpSocket::bind(SocketAddrV4::new(src, 0)).expect("bind injector");
            let to = SocketAddrV4::new(dst, 8472);
            for (k, f) in frames.iter().enumerate() {
                // A full socket buffer: wait a little; the send itself never loses a frame.
                while sock.send_to(f, to).is_err() {
                    std::thread::sleep(Duration::from_micros(200));
                }
                if k % 64 == 63 {
                    std::thread::sleep(Duration::from_micros(300));
                }
            }
        })
        .join()
        .expect("injector thread");
    });
}

/// Frames `n`'s underlay NIC dropped at the XDP redirect because linen's AF_XDP socket had no
/// room (RX ring full or fill ring empty); veth counts them in `rx_dropped`. They never reach
/// linen.
fn xdp_ring_drops(n: &Node) -> u64 {
    let v = n.host.sh("cat /sys/class/net/eth0/statistics/rx_dropped");
    v.trim().parse().unwrap_or_else(|e| panic!("rx_dropped {v:?}: {e}"))
}

/// Runs `send` (a wave of `sent` frames to node `a`) and waits until every frame is accounted
/// for: counted by linen (`counted` moved) or dropped by the kernel before linen saw it.
/// Returns (counted, dropped before linen).
fn account(a: &Node, sent: usize, counted: impl Fn() -> u64, send: impl FnOnce()) -> (u64, u64) {
    let (before, ring_before) = (counted(), xdp_ring_drops(a));
    send();
    let now = || (counted() - before, xdp_ring_drops(a) - ring_before);
    wait_for(Duration::from_secs(10), || {
        let (c, r) = now();
        (c + r >= sent as u64).then_some((c, r))
    })
    .unwrap_or_else(now)
}

/// Every frame of a wave either reached linen and was counted, or was dropped by the kernel
/// before linen saw it: when the worker waits for a CPU on a loaded machine, the XDP redirect
/// finds its socket full (veth counts that). linen must still see the bulk of the wave: a
/// starved worker loses some frames, a broken one (no refill, no wake-up) nearly all.
fn check_wave(a: &Node, reason: &str, sent: usize, counted: u64, lost: u64) {
    let sent = sent as u64;
    assert!(
        counted + lost >= sent,
        "{reason}: sent {sent}, counted {counted}, dropped before linen {lost}: {}",
        stats(a)
    );
    assert!(counted <= sent, "{reason}: counted {counted} > sent {sent}: {}", stats(a));
    assert!(
        counted * 2 >= sent,
        "{reason}: linen saw only {counted} of {sent} frames ({lost} dropped before it): {}",
        stats(a)
    );
}

#[test]
fn xdp_hostile_frames_are_counted_and_forwarding_goes_on() {
    let c = build(ClusterBuilder::new("nxdph").nodes(2, Overlay::linen("xdp")));
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    ping(&c, &a.pods[0], b.pod_ip(0));
    // A second address on B's underlay that is no cluster node.
    b.host.sh("ip addr add 192.168.77.3/24 dev eth0");
    let stranger = Ipv4Addr::new(192, 168, 77, 3);
    const N: usize = 15_000;
    let other_mac = [0x02, 0, 0, 0, 0, 0x01];
    type Make = Box<dyn Fn(usize) -> Vec<u8>>;
    let waves: Vec<(&str, Ipv4Addr, Make)> = vec![
        ("truncated", b.ip, Box::new(|i| vec![0x08; i % 8])),
        ("wrong_vni", b.ip, Box::new(|_| vxlan_payload(0x08, 2, N1_VTEP_MAC, 40))),
        ("unknown_vtep", stranger, Box::new(|_| vxlan_payload(0x08, 1, N1_VTEP_MAC, 40))),
        (
            "bad_vxlan_flags",
            b.ip,
            Box::new(|i| vxlan_payload(if i % 2 == 0 { 0x0c } else { 0x00 }, 1, N1_VTEP_MAC, 40)),
        ),
        ("inner_mac_mismatch", b.ip, Box::new(move |_| vxlan_payload(0x08, 1, other_mac, 40))),
        (
            "inner_truncated",
            b.ip,
            Box::new(|_| {
                let mut p = vxlan_payload(0x08, 1, N1_VTEP_MAC, 40);
                p.truncate(8 + 14 + 10);
                p
            }),
        ),
    ];
    let mut sent_total = 0;
    let mut lost_total = 0;
    for (reason, src, make) in &waves {
        let (counted, lost) = account(
            a,
            N,
            || counter(a, &["drops", reason]),
            || {
                inject(&b.host, *src, a.ip, N, make.as_ref());
            },
        );
        check_wave(a, reason, N, counted, lost);
        (sent_total, lost_total) = (sent_total + N, lost_total + lost);
        ping(&c, &a.pods[1], b.pod_ip(1));
    }
    // Random bytes: every one is counted under some reason, linen keeps going.
    let rng = std::cell::RefCell::new(XorShift(0x9e37_79b9_7f4a_7c15));
    let (counted, lost) = account(
        a,
        N,
        || decap_drops_total(a),
        || {
            inject(&b.host, b.ip, a.ip, N, &|_| {
                let mut r = rng.borrow_mut();
                let len = (r.next() % 1400) as usize;
                (0..len).map(|_| r.next() as u8).collect()
            });
        },
    );
    check_wave(a, "random", N, counted, lost);
    (sent_total, lost_total) = (sent_total + N, lost_total + lost);
    assert!(sent_total >= 100_000);
    eprintln!(
        "hostile frames: {sent_total} sent, {lost_total} dropped by the kernel before linen \
         (no room in its socket)"
    );
    assert_alive(a);
    ping(&c, &a.pods[0], b.pod_ip(0));
    ping(&c, &b.pods[1], a.pod_ip(1));
    assert_idle(a);
}

#[test]
fn xdp_refused_or_auto_falls_back_when_the_underlay_has_another_xdp_program() {
    let mut tb = linen_testbed::Testbed::new("nxdpf");
    let ns = tb.netns("n");
    let peer = tb.netns("p");
    tb.veth(&ns, "eth0", &peer, "eth0");
    ns.sh("ip addr add 192.168.77.1/24 dev eth0");
    let dir = std::env::temp_dir().join(format!("linen-nxdpf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A foreign XDP program (XDP_PASS) on the underlay: linen must leave it alone.
    let (src, obj) = (dir.join("pass.c"), dir.join("pass.o"));
    std::fs::write(
        &src,
        "__attribute__((section(\"xdp\"), used)) int pass(void *ctx) { return 2; }\n\
         char _license[] __attribute__((section(\"license\"), used)) = \"GPL\";\n",
    )
    .unwrap();
    let cc = std::process::Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .expect("clang");
    assert!(cc.status.success(), "{}", String::from_utf8_lossy(&cc.stderr));
    ns.sh(&format!("ip link set dev eth0 xdp obj {} sec xdp", obj.display()));
    let peers = dir.join("peers.json");
    std::fs::write(
        &peers,
        r#"{"network":"10.244.0.0/16","subnet":"10.244.1.0/24","public_ip":"192.168.77.1","peers":[{"subnet":"10.244.2.0/24","public_ip":"192.168.77.2","vtep_mac":"26:69:c7:3a:5b:8c"}]}"#,
    )
    .unwrap();
    let linend = linen_testbed::workspace_bin("linend");
    let cmd = |datapath: &str| {
        let mut c = ns.command(linend.to_str().unwrap());
        c.args(["--static-peers", peers.to_str().unwrap(), "--datapath", datapath])
            .args(["--subnet-file", dir.join("subnet.env").to_str().unwrap()])
            .args(["--stats-file", dir.join("stats.json").to_str().unwrap()])
            .args(["--stats-interval-ms", "100"])
            .env("NO_COLOR", "1");
        c
    };
    // An overlay MTU whose frames do not fit a UMEM frame: refused with the limit.
    let out = cmd("xdp").args(["--mtu", "1700"]).output().expect("linend");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("does not fit linen's 2048-byte UMEM"), "{err}");
    // --datapath xdp: refused, naming the cause; nothing left behind.
    let out = cmd("xdp").output().expect("linend");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("another XDP program attached"), "{err}");
    assert!(!ns.sh_output("ip link show linen.1").status.success());
    // --datapath auto: runs the TAP datapath and says why.
    let log = dir.join("auto.log");
    let mut c = cmd("auto");
    c.stderr(std::fs::File::create(&log).unwrap());
    let pid = tb.spawn(c);
    let up = wait_for(Duration::from_secs(10), || {
        let s = std::fs::read_to_string(dir.join("stats.json")).ok()?;
        s.contains(r#""datapath":"tap""#).then_some(())
    });
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(up.is_some(), "{text}");
    assert!(
        text.contains("AF_XDP is not usable here") && text.contains("another XDP program"),
        "{text}"
    );
    tb.kill(pid);
    // The foreign program is still there.
    let link = ns.sh("ip -d link show eth0");
    assert!(link.contains("prog/xdp"), "{link}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn xdp_two_queues_two_pinned_workers() {
    // Underlays with two RX/TX queues: a wrapper sets them up in the node's namespace and execs
    // linend (so the PID stays linend's).
    let dir = std::env::temp_dir().join(format!("linen-nxdpq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join("linend-2q");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nethtool -L eth0 rx 2 tx 2 || exit 1\nexec {} \"$@\"\n",
            linen_testbed::workspace_bin("linend").display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&wrapper).status().unwrap();
    let c = build(
        ClusterBuilder::new("nxdpq")
            .nodes(2, Overlay::linen("xdp"))
            .linend(&wrapper)
            .linend_arg("--queues")
            .linend_arg("2")
            .linend_arg("--cpus")
            .linend_arg("0-1"),
    );
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    ping(&c, &a.pods[0], b.pod_ip(0));
    for n in [a, b] {
        let log = n.linend.as_ref().unwrap().log_text();
        assert!(log.contains("worker pinned") && log.contains("cpu=1"), "{log}");
        // linen.1 is a TAP with one queue per worker.
        let queues = n.host.sh("ls /sys/class/net/linen.1/queues/");
        assert!(queues.contains("rx-1") && queues.contains("tx-1"), "{queues}");
    }
    // 16 UDP flows (distinct source ports) spread over linen.1's two queues, hence over both
    // workers.
    for port in 0..16 {
        a.pods[port % 2].sh(&format!(
            "for i in 1 2 3; do printf x | socat -u STDIN UDP4-SENDTO:{}:7,sourceport={}; done",
            b.pod_ip(port % 2),
            20_000 + port
        ));
    }
    tcp_verified(&a.pods[1], &b.pods[1], b.pod_ip(1), 20, &dir, "q2");
    let path = &a.linend.as_ref().unwrap().stats;
    let busy = wait_for(Duration::from_secs(3), || {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        let w = v["workers"].as_array()?;
        (w.len() == 2 && w.iter().all(|w| w["rx"].as_u64().unwrap_or(0) > 0)).then_some(())
    });
    assert!(busy.is_some(), "{}", std::fs::read_to_string(path).unwrap_or_default());
    let _ = std::fs::remove_dir_all(&dir);
}
