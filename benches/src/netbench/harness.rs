//! Runs one datapath's measurements on a fresh two-node cluster (see
//! `linen_testbed::cluster`): pod `n1p0` on node 1 sends, pod `n2p0` on node 2 receives.
//!
//! Order per datapath: reachability, request/response latency (nothing pinned yet), then with
//! the placement of `--pin` ([`super::placement`]) TCP with one and with eight streams and the
//! 64-byte packet rate, each with CPU accounting; then, on a second cluster whose underlay runs
//! with its offloads on ([`super::underlay`]), TCP again. Every step is bounded in time; every
//! process runs inside the cluster's namespaces and dies with it (each cluster is dropped when
//! its measurements end, also on panic).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linen_dataplane::wire::MacAddr;
use linen_testbed::cluster::{running, Cluster, ClusterBuilder, Node, Overlay};
use linen_testbed::Netns;
use serde_json::{json, Map, Value};

use super::cpu::{self, CpuLine, Group, IfCounters, ProcTimes, TICK_NS};
use super::frame::FRAME_LEN_64;
use super::placement::{self, Pin, Placement};
use super::underlay::{self, Underlay};
use super::{profile, tcp, TCP_STREAMS};

/// UDP port of the packet-rate sink.
const SINK_PORT: u16 = 9;
/// UDP port of the ping-pong server.
const RR_PORT: u16 = 7007;

/// How long and how hard to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The packet-rate window, the TCP test length and the latency test's bound.
    pub duration: Duration,
    /// Traffic before a window opens (ramp-up, ARP, linend leaving its idle spell).
    pub warmup: Duration,
    /// Timed round trips (at most; the test also stops at `duration`).
    pub rr_count: usize,
    /// linend binary.
    pub linend: PathBuf,
    /// This binary (its pod-side modes run in the pods).
    pub netbench: PathBuf,
    /// Also measure TCP over each of [`Underlay::EXTRA`] (offloads on; GRO on), on a cluster
    /// of its own per datapath.
    pub extra_underlays: bool,
    /// Where the sender, the receiver and linend run during the TCP and packet-rate windows.
    pub pin: Pin,
    /// Profile the packet-rate window with `perf` and write the files and the per-stage
    /// breakdown here (see [`super::profile`]).
    pub profile: Option<PathBuf>,
    /// Also measure 64-byte packets offered at this many packets/s, paced (keys `…_at_rate`).
    pub fixed_rate: Option<u64>,
}

impl Plan {
    /// 1 s windows: enough to see that each measurement works, for tests.
    pub fn quick(linend: PathBuf, netbench: PathBuf) -> Plan {
        Plan {
            duration: Duration::from_secs(1),
            warmup: Duration::from_millis(300),
            rr_count: 2000,
            linend,
            netbench,
            extra_underlays: true,
            pin: Pin::default(),
            profile: None,
            fixed_rate: None,
        }
    }

    /// The benchmark proper, with `duration`-long windows.
    pub fn full(duration: Duration, linend: PathBuf, netbench: PathBuf) -> Plan {
        Plan {
            duration,
            warmup: Duration::from_secs(1),
            rr_count: 20_000,
            linend,
            netbench,
            extra_underlays: true,
            pin: Pin::default(),
            profile: None,
            fixed_rate: None,
        }
    }
}

/// The overlay a datapath name stands for: `kernel` → the kernel's VXLAN device in flannel's
/// configuration; `direct` → linend in etcd mode with `DirectRouting` (`--datapath tap`, so that
/// no XDP program sits on the underlay veth the plain traffic crosses); anything else → linend
/// with that `--datapath`.
pub fn overlay_for(datapath: &str) -> Overlay {
    match datapath {
        "kernel" => Overlay::KernelVxlan,
        "direct" => Overlay::linen("tap"),
        dp => Overlay::linen(dp),
    }
}

/// What one measurement step adds to a datapath's object, or why it failed.
type Measured = Result<Map<String, Value>, String>;

/// Measures one datapath and returns its JSON object: the five headline keys (numbers, or
/// `null` with the reason under `errors`), extra keys, or `unavailable` when the cluster could
/// not be built (e.g. linend refuses the datapath).
pub fn measure(datapath: &str, plan: &Plan) -> Value {
    let mut out = Map::new();
    for k in super::KEYS {
        out.insert(k.to_string(), Value::Null);
    }
    let mut errors = Map::new();
    let place = plan.pin.placement(cpu_count());
    out.insert("placement".into(), place.to_json());
    let cluster = match up(datapath, plan, Underlay::Wire) {
        Ok(c) => c,
        Err(reason) => {
            out.insert("unavailable".into(), Value::String(reason));
            return Value::Object(out);
        }
    };
    if !settle_linend(&cluster) {
        errors.insert(
            "settle".into(),
            json!("linend still sent packets through the kernel (next hop unresolved) after 5 s"),
        );
    }
    let mut note = |key: &str, r: Measured| match r {
        Ok(m) => out.extend(m),
        Err(e) => {
            eprintln!("netbench: {datapath}: {key}: {e}");
            errors.insert(key.to_string(), Value::String(e));
        }
    };
    let loop0 = loop_counters(&cluster);
    note("rr", rr(&cluster, plan));
    let rr_loop = loop_delta(&loop0, &loop_counters(&cluster));
    let mut tcp_detail = Map::new();
    let mut underlays = Map::new();
    let mut run_tcp = |c: &Cluster, u: Underlay, note: &mut dyn FnMut(&str, Measured)| {
        underlays.insert(
            u.name().into(),
            json!({"settings": u.describe(), "features": underlay::read_features(c)}),
        );
        for streams in TCP_STREAMS {
            let r = tcp::measure(c, plan, &place, streams, u, datapath).map(|run| {
                tcp_detail.insert(format!("{}{}", tcp::prefix(streams), u.suffix()), run.detail);
                let mut keys = run.keys;
                if let Some(p) = run.profile {
                    keys.insert("tcp_profile".into(), p);
                }
                keys
            });
            note(&format!("{}{}", tcp::prefix(streams), u.suffix()), r);
        }
    };
    note("pin", pin_linend(&cluster, &place).map(|m| Map::from_iter([("linend_cpus".into(), m)])));
    run_tcp(&cluster, Underlay::Wire, &mut note);
    note("pps", pps(&cluster, plan, datapath, &place, None));
    if let Some(rate) = plan.fixed_rate {
        let at_rate = pps(&cluster, plan, datapath, &place, Some(rate)).map(|m| {
            m.into_iter()
                .filter(|(k, _)| !k.starts_with("linend_loop"))
                .map(|(k, v)| (format!("{k}_at_rate"), v))
                .collect()
        });
        note("pps_at_rate", at_rate);
    }
    if let Some(d) = rr_loop {
        note("rr_loop", Ok(Map::from_iter([("rr_linend_loop".into(), d)])));
    }
    let (a, b) = (&cluster.nodes()[0], &cluster.nodes()[1]);
    if let Some(l) = &a.linend {
        let s = l.worker_stats().unwrap_or(Value::Null);
        let stats_note = json!({"n1": s, "n2": b.linend.as_ref().and_then(|l| l.worker_stats())});
        note("linend_stats", Ok(Map::from_iter([("linend_stats".into(), stats_note)])));
    }
    let stuck = cluster.stop_linend(Duration::from_secs(3));
    if !stuck.is_empty() {
        note("shutdown", Err(format!("linend did not stop on {stuck:?}")));
    }
    drop(cluster);
    for u in Underlay::EXTRA.into_iter().filter(|_| plan.extra_underlays) {
        let s = u.suffix();
        match up(datapath, plan, u) {
            Ok(c) => {
                if !settle_linend(&c) {
                    note(
                        &format!("settle{s}"),
                        Err("linend still sent packets through the kernel after 5 s".into()),
                    );
                }
                // As on the first cluster: a failed pinning is reported, the runs go on.
                let pinned = pin_linend(&c, &place).map(|_| Map::new());
                note(&format!("pin{s}"), pinned);
                run_tcp(&c, u, &mut note);
                let stuck = c.stop_linend(Duration::from_secs(3));
                if !stuck.is_empty() {
                    note(&format!("shutdown{s}"), Err(format!("linend did not stop on {stuck:?}")));
                }
            }
            Err(e) => note(&s[1..], Err(e)),
        }
    }
    out.insert("tcp_detail".into(), Value::Object(tcp_detail));
    out.insert("underlay".into(), Value::Object(underlays));
    if !errors.is_empty() {
        out.insert("errors".into(), Value::Object(errors));
    }
    Value::Object(out)
}

/// Builds the datapath's cluster over `underlay`, applies the underlay's settings and waits
/// until the pods reach each other both ways.
fn up(datapath: &str, plan: &Plan, underlay: Underlay) -> Result<Cluster, String> {
    let c = build(datapath, plan, underlay.tx_off())?;
    if datapath == "direct" {
        wait_direct(&c)?;
    }
    underlay.apply(&c)?;
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    if !c.wait_reachable(&a.pods[0], b.pod_ip(0), Duration::from_secs(10))
        || !c.wait_reachable(&b.pods[0], a.pod_ip(0), Duration::from_secs(5))
    {
        return Err(format!(
            "pods cannot reach each other across nodes ({} ↔ {})",
            a.pod_ip(0),
            b.pod_ip(0)
        ));
    }
    Ok(c)
}

/// Moves every thread of every linend onto the placement's linend CPUs (when it has some) and
/// returns the CPUs each thread may then use, per node (`{"n1": {"linen-xdp-0": "1", …}}`).
fn pin_linend(c: &Cluster, place: &Placement) -> Result<Value, String> {
    let mut m = Map::new();
    for n in c.nodes() {
        let Some(l) = &n.linend else { continue };
        if let Some(cpus) = &place.linend {
            pin_all_threads(l.pid, &placement::cpu_list(cpus))?;
        }
        m.insert(n.name.clone(), placement::thread_affinity(l.pid));
    }
    Ok(Value::Object(m))
}

fn build(datapath: &str, plan: &Plan, underlay_tx_off: bool) -> Result<Cluster, String> {
    let tag = match datapath {
        "kernel" => "nbk",
        "xdp" => "nbx",
        "tap" => "nbt",
        "direct" => "nbd",
        _ => "nbo",
    };
    let mut b = ClusterBuilder::new(tag)
        .nodes(2, overlay_for(datapath))
        .pods_per_node(1)
        .underlay_tx_off(underlay_tx_off)
        .linend(&plan.linend);
    if datapath == "direct" {
        // etcd mode puts the nodes on a switch (a bridge in its own namespace, beside etcd)
        // instead of one veth pair: one bridge hop more on the underlay than the other columns.
        b = b.etcd().direct_routing(true);
    }
    b.build().map_err(|e| e.reason())
}

/// Waits (up to 20 s) until each node of a `direct` cluster routes the other's pod subnet over
/// the underlay (`via <public IP> dev eth0`): the measurement is only the direct path if
/// linend has programmed it.
fn wait_direct(c: &Cluster) -> Result<(), String> {
    let nodes = c.nodes();
    for (a, b) in [(&nodes[0], &nodes[1]), (&nodes[1], &nodes[0])] {
        let want = format!("via {} dev eth0", b.ip);
        let show = || a.host.sh_output(&format!("ip route show {}", b.subnet()));
        let routed = linen_testbed::wait_for(Duration::from_secs(20), || {
            String::from_utf8_lossy(&show().stdout).contains(&want).then_some(())
        });
        if routed.is_none() {
            return Err(format!(
                "linend on {} did not route {} directly: `{}`",
                a.name,
                b.subnet(),
                String::from_utf8_lossy(&show().stdout).trim()
            ));
        }
    }
    Ok(())
}

/// CPUs the machine has online (from `/proc/stat`).
pub fn cpu_count() -> usize {
    cpu::proc_stat().map(|s| s.cpus.len()).unwrap_or(1).max(1)
}

/// Runs `args` of this binary inside `ns`, bounded by `limit`, and returns stdout.
fn pod_run(plan: &Plan, ns: &Netns, args: &[String], limit: Duration) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["-k", "2", &format!("{}", limit.as_secs().max(1))])
        .args(["ip", "netns", "exec", &ns.name])
        .arg(&plan.netbench)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`netbench {}` in {} failed ({}): {}",
            args.join(" "),
            ns.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Spawns this binary's `args` inside `ns` as a cluster process; returns its PID.
fn pod_spawn(c: &Cluster, plan: &Plan, ns: &Netns, args: &[String]) -> u32 {
    pod_spawn_on(c, plan, ns, args, None)
}

/// [`pod_spawn`] on `cpus` when given.
fn pod_spawn_on(
    c: &Cluster,
    plan: &Plan,
    ns: &Netns,
    args: &[String],
    cpus: Option<&[usize]>,
) -> u32 {
    let mut cmd = placement::command(ns, &plan.netbench.to_string_lossy(), cpus);
    cmd.args(args).stdout(Stdio::null());
    c.testbed().spawn(cmd)
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Waits until UDP `port` is bound in `ns` (or 5 s pass).
fn wait_udp_bound(ns: &Netns, port: u16) -> bool {
    linen_testbed::wait_for(Duration::from_secs(5), || {
        let out = ns.sh_output(&format!("ss -Hlun sport = :{port}"));
        String::from_utf8_lossy(&out.stdout).contains(&format!(":{port}")).then_some(())
    })
    .is_some()
}

fn rr(c: &Cluster, plan: &Plan) -> Result<Map<String, Value>, String> {
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    let server_time = plan.duration + Duration::from_secs(4);
    let server = pod_spawn(
        c,
        plan,
        &b.pods[0],
        &[
            "rr-server".into(),
            "--port".into(),
            RR_PORT.to_string(),
            "--secs".into(),
            secs(server_time),
        ],
    );
    if !wait_udp_bound(&b.pods[0], RR_PORT) {
        return Err("ping-pong server did not start".into());
    }
    let text = pod_run(
        plan,
        &a.pods[0],
        &[
            "rr-client".into(),
            "--to".into(),
            format!("{}:{RR_PORT}", b.pod_ip(0)),
            "--count".into(),
            plan.rr_count.to_string(),
            "--secs".into(),
            secs(plan.duration),
        ],
        plan.duration + Duration::from_secs(5),
    );
    c.testbed().kill(server);
    let v: Value =
        serde_json::from_str(text?.trim()).map_err(|e| format!("rr-client output: {e}"))?;
    let mut m = Map::new();
    m.insert("rr_p50_us".into(), v["p50_us"].clone());
    m.insert("rr_p99_us".into(), v["p99_us"].clone());
    m.insert("rr_samples".into(), v["samples"].clone());
    m.insert("rr_lost".into(), v["lost"].clone());
    Ok(m)
}

/// One reading of everything the packet-rate window compares.
struct Snapshot {
    at: Instant,
    stat: cpu::ProcStat,
    sender: ProcTimes,
    linend: Vec<ProcTimes>,
    src: IfCounters,
    dst: IfCounters,
}

fn snapshot(sender: u32, sink: u32, linend: &[u32]) -> Result<Snapshot, String> {
    let e = |x: cpu::ProcError| x.to_string();
    // Interface counters first and last so the CPU figures sit inside the counted interval.
    let dst = cpu::if_counters(sink, "eth0").map_err(e)?;
    let src = cpu::if_counters(sender, "eth0").map_err(e)?;
    let stat = cpu::proc_stat().map_err(e)?;
    let sender_t = cpu::pid_times(sender).map_err(e)?;
    let linend = linend.iter().map(|p| cpu::pid_times(*p).map_err(e)).collect::<Result<_, _>>()?;
    Ok(Snapshot { at: Instant::now(), stat, sender: sender_t, linend, src, dst })
}

fn pod_mac_of_gateway(node: &Node) -> Result<[u8; 6], String> {
    let out =
        node.host.sh_output("cat /sys/class/net/cni0/address 2>/dev/null || ip -o link show cni0");
    let text = String::from_utf8_lossy(&out.stdout);
    // `ip netns exec` remounts /sys for the namespace, so the sysfs read is the node's cni0.
    let mac = text
        .split_whitespace()
        .find(|w| w.len() == 17 && w.matches(':').count() == 5 && *w != "ff:ff:ff:ff:ff:ff")
        .ok_or_else(|| format!("no MAC for cni0 in {text:?}"))?;
    mac.parse::<MacAddr>().map(<[u8; 6]>::from).map_err(|e| format!("cni0's MAC {mac:?} is {e}"))
}

/// One 64-byte packet-rate window: the sender in pod 0 of the first node offers frames as fast
/// as it can, or paced at `rate` packets/s, to the sink on the second; delivered packets, the
/// offered rate and the CPU time of the path per delivered packet.
fn pps(
    c: &Cluster,
    plan: &Plan,
    datapath: &str,
    place: &Placement,
    rate: Option<u64>,
) -> Result<Map<String, Value>, String> {
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    let gw_mac = pod_mac_of_gateway(a)?;
    let linend: Vec<u32> =
        c.nodes().iter().filter_map(|n| n.linend.as_ref().map(|l| l.pid)).collect();
    // linend is already where the placement puts it (see `pin_linend`); the sender pins
    // itself, the sink goes to the receiver's CPUs.
    let total_time = plan.warmup + plan.duration + Duration::from_secs(3);
    let sink = pod_spawn_on(
        c,
        plan,
        &b.pods[0],
        &["sink".into(), "--port".into(), SINK_PORT.to_string(), "--secs".into(), secs(total_time)],
        place.receiver.as_deref(),
    );
    if !wait_udp_bound(&b.pods[0], SINK_PORT) {
        return Err("sink did not start".into());
    }

    let send_time = plan.warmup + plan.duration + Duration::from_millis(500);
    let mut send_args: Vec<String> = vec![
        "send".into(),
        "--iface".into(),
        "eth0".into(),
        "--gw-mac".into(),
        MacAddr(gw_mac).to_string(),
        "--src".into(),
        a.pod_ip(0).to_string(),
        "--to".into(),
        format!("{}:{SINK_PORT}", b.pod_ip(0)),
        "--len".into(),
        FRAME_LEN_64.to_string(),
        "--secs".into(),
        secs(send_time),
    ];
    // The sender pins its sending thread to one CPU (the first of its role's).
    if let Some(cpu) = place.sender.as_ref().and_then(|c| c.first()) {
        send_args.extend(["--cpu".into(), cpu.to_string()]);
    }
    if let Some(r) = rate {
        send_args.extend(["--rate".into(), r.to_string()]);
    }
    let sender = pod_spawn(c, plan, &a.pods[0], &send_args);
    std::thread::sleep(plan.warmup);
    if !running(sender) {
        return Err("the sender exited early (see stderr above)".into());
    }
    // The profile is of the full-rate window.
    let perf = match plan.profile.as_ref().filter(|_| rate.is_none()) {
        Some(dir) => Some(profile_start(dir, datapath, plan.duration, &linend)?),
        None => None,
    };
    let loop0 = loop_counters(c);
    let s0 = snapshot(sender, sink, &linend)?;
    std::thread::sleep(plan.duration);
    let s1 = snapshot(sender, sink, &linend)?;
    let loop1 = loop_counters(c);
    // The sender and sink stop on their own; don't wait for it.
    c.testbed().kill(sender);
    c.testbed().kill(sink);

    let secs_window = s1.at.duration_since(s0.at).as_secs_f64();
    let delivered = s1.dst.rx_packets.saturating_sub(s0.dst.rx_packets);
    let offered = s1.src.tx_packets.saturating_sub(s0.src.tx_packets);
    if delivered == 0 {
        return Err(format!("no packet reached {} ({} offered)", b.pod_ip(0), offered));
    }
    let machine: CpuLine = s1.stat.total.since(&s0.stat.total);
    let per_cpu = cpu::per_cpu_since(&s1.stat, &s0.stat);
    let sender_t = s1.sender.since(&s0.sender);
    let linend_d: Vec<ProcTimes> =
        s1.linend.iter().zip(&s0.linend).map(|(x, y)| x.since(y)).collect();
    // Tick accounting charges a softirq tick both to /proc/stat's softirq and to the system time
    // of the task that was current (see `cpu::attribute`): with the default placement the
    // sender spins alone on CPU 0, so softirq there is path work the kernel ran inline at the
    // end of its sends; linend's processes run on the other CPUs, so softirq there mostly ran
    // inside linend's own system calls.
    let mut groups =
        vec![Group { name: "sender".into(), cpus: place.or_all(&place.sender), times: sender_t }];
    groups.extend(linend_d.iter().map(|t| Group {
        name: "linend".into(),
        cpus: place.or_all(&place.linend),
        times: *t,
    }));
    let att = cpu::attribute(&per_cpu, &groups);
    let sender_inline = att[0].inline_ticks;
    let sender_own_ns = att[0].own_ns;
    let linend_ns: u64 = linend_d.iter().map(|t| t.runtime_ns).sum();
    // (Folded from +0.0: a float `sum` of nothing is -0.0.)
    let linend_inline = att[1..].iter().fold(0.0, |s, a| s + a.inline_ticks);
    let linend_own_ns = att[1..].iter().fold(0.0, |s, a| s + a.own_ns);
    let softirq_all = machine.softirq + machine.irq;
    let path_ns = softirq_all as f64 * TICK_NS + linend_own_ns;
    let shares: Vec<Value> = cpu::shares(&per_cpu)
        .into_iter()
        .enumerate()
        .map(|(i, (busy, softirq))| json!({"cpu": i, "busy": busy, "softirq": softirq}))
        .collect();

    let mut m = Map::new();
    m.insert("pps_64".into(), json!(delivered as f64 / secs_window));
    m.insert("offered_pps".into(), json!(offered as f64 / secs_window));
    m.insert("cpu_ns_per_pkt".into(), json!(path_ns / delivered as f64));
    m.insert("sender_ns_per_pkt".into(), json!(sender_own_ns / offered.max(1) as f64));
    if !linend.is_empty() {
        m.insert("linend_ns_per_pkt".into(), json!(linend_ns as f64 / delivered as f64));
    }
    if let Some(d) = loop_delta(&loop0, &loop1) {
        m.insert("linend_loop".into(), d);
    }
    if let Some(p) = perf {
        let roles = profile::Roles {
            sender: [sender].into_iter().collect(),
            linend: linend.iter().copied().collect(),
            ..Default::default()
        };
        let pps = delivered as f64 / secs_window;
        m.insert(
            "profile".into(),
            profile_finish(p, &roles, pps, profile::Unit::Packet, delivered)?,
        );
    }
    m.insert(
        "cpu_detail".into(),
        json!({
            "window_s": secs_window,
            "delivered": delivered,
            "offered": offered,
            "dst_rx_dropped": s1.dst.rx_dropped.saturating_sub(s0.dst.rx_dropped),
            "machine_busy_ticks": machine.busy(),
            "machine_softirq_ticks": softirq_all,
            "sender_ticks": sender_t.total(),
            "sender_runtime_ns": sender_t.runtime_ns,
            "sender_inline_softirq_ticks": sender_inline,
            "linend_ticks": linend_d.iter().map(ProcTimes::total).sum::<u64>(),
            "linend_runtime_ns": linend_ns,
            "linend_inline_softirq_ticks": linend_inline,
            "per_cpu": shares,
            "sender_cpus": place.sender.as_deref().map(placement::cpu_list),
            "tick_ns": TICK_NS,
        }),
    );
    Ok(m)
}

/// Waits (up to 5 s) until a ping each way crosses linen without a `to_kernel` packet: linend
/// learns the underlay next hop's MAC from the kernel about once a second, and until then its
/// workers hand encapsulated packets to the kernel's IP stack — a slower path that must not be
/// what the measurements see. True at once for the kernel datapath.
fn settle_linend(c: &Cluster) -> bool {
    let to_kernel = || -> u64 {
        c.nodes()
            .iter()
            .filter_map(|n| n.linend.as_ref()?.worker_stats()?["to_kernel"].as_u64())
            .sum()
    };
    if c.nodes().iter().all(|n| n.linend.is_none()) {
        return true;
    }
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    linen_testbed::wait_for(Duration::from_secs(5), || {
        let before = to_kernel();
        let ok = c.wait_reachable(&a.pods[0], b.pod_ip(0), Duration::from_secs(1))
            && c.wait_reachable(&b.pods[0], a.pod_ip(0), Duration::from_secs(1));
        // linend rewrites its stats file every 100 ms.
        std::thread::sleep(Duration::from_millis(250));
        (ok && to_kernel() == before).then_some(())
    })
    .is_some()
}

/// Every linend's first worker counters (`rx`, `tx`, loop `busy_batches`, `blocks`,
/// `to_kernel`), per node.
fn loop_counters(c: &Cluster) -> Vec<Option<[u64; 5]>> {
    c.nodes()
        .iter()
        .map(|n| {
            let s = n.linend.as_ref()?.worker_stats()?;
            Some([
                s["rx"].as_u64()?,
                s["tx"].as_u64()?,
                s["loop"]["busy_batches"].as_u64()?,
                s["loop"]["blocks"].as_u64()?,
                s["to_kernel"].as_u64()?,
            ])
        })
        .collect()
}

/// The change of [`loop_counters`] per node, with packets per busy batch; `None` without linend.
/// (linend rewrites its stats file every 100 ms, so the edges are that coarse.)
fn loop_delta(a: &[Option<[u64; 5]>], b: &[Option<[u64; 5]>]) -> Option<Value> {
    let mut m = Map::new();
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let (Some(x), Some(y)) = (x, y) else { continue };
        let d: Vec<u64> = x.iter().zip(y).map(|(x, y)| y.saturating_sub(*x)).collect();
        m.insert(
            format!("n{}", i + 1),
            json!({
                "rx": d[0], "tx": d[1], "busy_batches": d[2], "blocks": d[3], "to_kernel": d[4],
                "rx_per_busy_batch": if d[2] > 0 { d[0] as f64 / d[2] as f64 } else { 0.0 },
            }),
        );
    }
    (!m.is_empty()).then_some(Value::Object(m))
}

/// A running profile of a measurement window (packet rate, TCP).
pub(super) struct PerfRun {
    record: std::process::Child,
    stat: Option<std::process::Child>,
    data: PathBuf,
    script: PathBuf,
    syscalls: PathBuf,
}

/// Sampling period of `perf record`: one sample per 250 µs of CPU (4 kHz per CPU).
const PERF_PERIOD_NS: u64 = 250_000;

/// System calls counted in linend's threads while profiling (the XSK kicks, the TAP's reads
/// and writes, the UDP socket's batches, the idle loop's waits).
const PERF_SYSCALLS: [&str; 15] = [
    "sendto",
    "recvfrom",
    "read",
    "readv",
    "write",
    "writev",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "epoll_wait",
    "epoll_pwait",
    "poll",
    "ppoll",
    "sched_yield",
];

/// Starts `perf record -a -g` (every CPU, call chains) and `perf stat` of linend's system
/// calls for a little longer than `window`, and waits until they run. `name` names the files.
pub(super) fn profile_start(
    dir: &std::path::Path,
    name: &str,
    window: Duration,
    linend: &[u32],
) -> Result<PerfRun, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let data = dir.join(format!("{name}.perf.data"));
    let script = dir.join(format!("{name}.perf-script.txt"));
    let syscalls = dir.join(format!("{name}.syscalls.csv"));
    let length = format!("{:.3}", (window + Duration::from_millis(400)).as_secs_f64());
    let record = Command::new("perf")
        .args(["record", "-q", "-a", "-g", "-e", "cpu-clock", "-c"])
        .arg(PERF_PERIOD_NS.to_string())
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep", &length])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("perf record (is linux-perf installed?): {e}"))?;
    let stat = if linend.is_empty() {
        None
    } else {
        let events: Vec<String> =
            PERF_SYSCALLS.iter().map(|s| format!("syscalls:sys_enter_{s}")).collect();
        let pids: Vec<String> = linend.iter().map(u32::to_string).collect();
        Some(
            Command::new("perf")
                .args(["stat", "-x", ",", "-e", &events.join(","), "-p", &pids.join(",")])
                .arg("-o")
                .arg(&syscalls)
                .args(["--", "sleep", &length])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("perf stat: {e}"))?,
        )
    };
    // perf record first synthesises every running task; start the window after that.
    std::thread::sleep(Duration::from_millis(200));
    Ok(PerfRun { record, stat, data, script, syscalls })
}

/// Waits for the profile, runs `perf script`, classifies the samples and reads the syscall
/// counts: the `profile` JSON of one window, per `unit` delivered at `rate` units per second.
pub(super) fn profile_finish(
    mut p: PerfRun,
    roles: &profile::Roles,
    rate: f64,
    unit: profile::Unit,
    delivered: u64,
) -> Result<Value, String> {
    let st = p.record.wait().map_err(|e| format!("perf record: {e}"))?;
    if !st.success() {
        return Err(format!("perf record failed ({st})"));
    }
    let syscalls = match p.stat.as_mut().map(|c| c.wait()) {
        Some(Ok(s)) if s.success() => read_perf_stat(&p.syscalls),
        Some(Ok(s)) => return Err(format!("perf stat failed ({s})")),
        Some(Err(e)) => return Err(format!("perf stat: {e}")),
        None => Map::new(),
    };
    let out = Command::new("perf")
        .args(["script", "-F", "comm,pid,tid,cpu,time,ip,sym,dso", "-i"])
        .arg(&p.data)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("perf script: {e}"))?;
    if !out.status.success() {
        return Err(format!("perf script failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    std::fs::write(&p.script, text.as_bytes())
        .map_err(|e| format!("{}: {e}", p.script.display()))?;
    let samples = profile::parse_script(&text);
    let b = profile::Breakdown::of(&samples, roles);
    let mut v = b.to_json(PERF_PERIOD_NS as f64, rate, unit);
    // System calls per delivered unit (the stat ran over the same span as the samples).
    let units = (rate * b.span_s).max(1.0);
    let per_unit: Map<String, Value> = syscalls
        .iter()
        .map(|(k, n)| (k.clone(), json!(n.as_f64().unwrap_or(0.0) / units)))
        .collect();
    v["linend_syscalls"] = Value::Object(syscalls);
    v[format!("linend_syscalls_per_{}", unit.key())] = Value::Object(per_unit);
    v["delivered_in_window"] = json!(delivered);
    v["files"] = json!({"perf_data": p.data, "perf_script": p.script});
    Ok(v)
}

/// `perf stat -x ,` output: `count,unit,event,…` per line → `{syscall: count}`.
fn read_perf_stat(path: &std::path::Path) -> Map<String, Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut m = Map::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split(',').collect();
        if let (Some(n), Some(ev)) = (f.first(), f.get(2)) {
            if let (Ok(n), Some(name)) = (n.parse::<u64>(), ev.strip_prefix("syscalls:sys_enter_"))
            {
                m.insert(name.to_string(), json!(n));
            }
        }
    }
    m
}

/// Moves every thread of `pid` onto `cpus` (a `taskset` list).
fn pin_all_threads(pid: u32, cpus: &str) -> Result<(), String> {
    let out = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output()
        .map_err(|e| format!("taskset: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset -a -p -c {cpus} {pid}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datapath_names_map_to_overlays() {
        assert_eq!(overlay_for("kernel"), Overlay::KernelVxlan);
        assert_eq!(overlay_for("xdp"), Overlay::linen("xdp"));
        assert_eq!(overlay_for("tap"), Overlay::linen("tap"));
        assert_eq!(overlay_for("direct"), Overlay::linen("tap"));
    }
}
