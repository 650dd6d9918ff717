//! TCP throughput and what it costs in CPU: `iperf3` between the pods (one stream, or `-P n`),
//! and over a window inside the transfer the CPU time of every process and softirq of the path
//! per byte delivered.
//!
//! The run: `iperf3 -s -1` in the receiving pod, `iperf3 -c … -t T -O W -P n -J` in the sending
//! pod, each on the CPUs of its role ([`super::placement`]). The headline Gbit/s is iperf3's own
//! (`end.sum_received` over the `T − W` seconds after the omitted warm-up). The CPU window opens
//! after the warm-up and lasts the plan's duration, wholly inside the transfer; at its edges
//! netbench reads `/proc/stat` (per CPU), `/proc/<pid>/stat` and the threads' `schedstat` of
//! linend (each node), the iperf3 client and the iperf3 server, and the TCP payload bytes the
//! receiving pod's sockets took in (`ss -ti`: `bytes_received`, summed over the connections).
//!
//! The path's CPU time is, as for the packet-rate window (DESIGN §7): all softirq and hard-irq
//! time of every CPU, plus linend's threads' time without the softirq ticks that landed inside
//! them ([`super::cpu::attribute`]). iperf3's own time (client and server, again without the
//! softirq that ran inside them: for the kernel's VXLAN most of the path runs in softirq at the
//! end of the client's `sendmsg`) is reported apart and added in the `with_iperf3` figure.
//! Figures are CPU-seconds per GB of TCP payload delivered (10⁹ bytes), i.e. ns per byte.
//!
//! With `--profile DIR`, the single-stream window over the default underlay is also sampled with
//! `perf` like the packet-rate window (files `DIR/<datapath>-tcp.*`) and broken down into stages
//! per KB delivered ([`super::profile`]).

use std::fs::File;
use std::process::Stdio;
use std::time::{Duration, Instant};

use linen_testbed::cluster::{running, Cluster};
use linen_testbed::Netns;
use serde_json::{json, Map, Value};

use super::cpu::{self, Group, ProcStat, ProcTimes, TICK_NS};
use super::harness::{profile_finish, profile_start, Plan};
use super::placement::{self, Placement};
use super::profile;
use super::underlay::Underlay;

/// TCP port of iperf3.
pub const IPERF_PORT: u16 = 5201;

/// The key prefix of a run with `streams` streams: `tcp` for one, `tcp8` for eight.
pub fn prefix(streams: u32) -> String {
    if streams == 1 {
        "tcp".to_string()
    } else {
        format!("tcp{streams}")
    }
}

/// The sum of `bytes_received:` over the sockets `ss -ti` lists.
pub fn parse_bytes_received(ss: &str) -> u64 {
    ss.split_whitespace()
        .filter_map(|t| t.strip_prefix("bytes_received:"))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// The connections `ss -Htin` lists: one line each whose local address ends in the iperf3
/// port (the `-i` details follow on indented lines).
pub fn count_connections(ss: &str) -> usize {
    let port = format!(":{IPERF_PORT}");
    ss.lines()
        .filter(|l| !l.starts_with(char::is_whitespace))
        .filter(|l| l.split_whitespace().nth(2).is_some_and(|local| local.ends_with(&port)))
        .count()
}

/// What the receiving pod's sockets on the iperf3 port had taken in at one moment.
#[derive(Debug, Clone, Copy)]
struct Received {
    /// TCP payload bytes, summed over the connections.
    bytes: u64,
    /// Established connections (iperf3's control connection and one per stream).
    conns: usize,
    /// When (the middle of the `ss` call).
    at: Instant,
}

/// Reads [`Received`] in `ns`.
fn received(ns: &Netns) -> Result<Received, String> {
    let before = Instant::now();
    let out = ns
        .command("ss")
        .args(["-Htin", "state", "established", &format!("( sport = :{IPERF_PORT} )")])
        .output()
        .map_err(|e| format!("ss: {e}"))?;
    let after = Instant::now();
    if !out.status.success() {
        return Err(format!("ss failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(Received {
        bytes: parse_bytes_received(&text),
        conns: count_connections(&text),
        at: before + (after - before) / 2,
    })
}

/// One reading of the CPU side of the window.
struct Reading {
    at: Instant,
    stat: ProcStat,
    client: ProcTimes,
    server: ProcTimes,
    linend: Vec<ProcTimes>,
}

fn reading(client: u32, server: u32, linend: &[u32]) -> Result<Reading, String> {
    let e = |x: cpu::ProcError| x.to_string();
    Ok(Reading {
        at: Instant::now(),
        client: cpu::pid_times(client).map_err(|x| format!("iperf3 client: {x}"))?,
        server: cpu::pid_times(server).map_err(|x| format!("iperf3 server: {x}"))?,
        linend: linend.iter().map(|p| cpu::pid_times(*p)).collect::<Result<_, _>>().map_err(e)?,
        stat: cpu::proc_stat().map_err(e)?,
    })
}

/// What one TCP run measured: the flat keys of the datapath's JSON object and the run's detail.
pub struct TcpRun {
    /// `{prefix}_gbps{suffix}`, `{prefix}_cpu_s_per_gb{suffix}`, … (see [`measure`]).
    pub keys: Map<String, Value>,
    /// Everything else: iperf3's figures, the window, the CPU split, per-CPU busy shares.
    pub detail: Value,
    /// The window's per-stage breakdown, when it was profiled.
    pub profile: Option<Value>,
}

/// The CPU side of a finished window, as figures per GB and the detail object.
struct Cost {
    path_ns: f64,
    apps_ns: f64,
    linend_ns: f64,
    detail: Value,
}

/// Splits the window's CPU time (see the module docs).
fn cost(r0: &Reading, r1: &Reading, place: &Placement, linend_nodes: &[String]) -> Cost {
    let per_cpu = cpu::per_cpu_since(&r1.stat, &r0.stat);
    let machine = r1.stat.total.since(&r0.stat.total);
    let softirq_all = machine.softirq + machine.irq;
    let mut groups = vec![
        Group {
            name: "iperf3 client".into(),
            cpus: place.or_all(&place.sender),
            times: r1.client.since(&r0.client),
        },
        Group {
            name: "iperf3 server".into(),
            cpus: place.or_all(&place.receiver),
            times: r1.server.since(&r0.server),
        },
    ];
    for (i, (a, b)) in r1.linend.iter().zip(&r0.linend).enumerate() {
        let node = linend_nodes.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
        groups.push(Group {
            name: format!("linend {node}"),
            cpus: place.or_all(&place.linend),
            times: a.since(b),
        });
    }
    let att = cpu::attribute(&per_cpu, &groups);
    // (Folded from +0.0: a float `sum` of nothing is -0.0, which would print as such.)
    let linend_ns =
        att.iter().filter(|a| a.name.starts_with("linend")).fold(0.0, |s, a| s + a.own_ns);
    let apps_ns =
        att.iter().filter(|a| a.name.starts_with("iperf3")).fold(0.0, |s, a| s + a.own_ns);
    let path_ns = softirq_all as f64 * TICK_NS + linend_ns;
    let mut by_group = Map::new();
    for (g, a) in groups.iter().zip(&att) {
        by_group.insert(
            a.name.clone(),
            json!({
                "cpus": placement::cpu_list(&g.cpus),
                "ticks": g.times.total(),
                "runtime_ns": a.runtime_ns,
                "inline_softirq_ticks": a.inline_ticks,
                "own_ns": a.own_ns,
            }),
        );
    }
    let shares: Vec<Value> = cpu::shares(&per_cpu)
        .into_iter()
        .enumerate()
        .map(|(i, (busy, softirq))| json!({"cpu": i, "busy": busy, "softirq": softirq}))
        .collect();
    Cost {
        path_ns,
        apps_ns,
        linend_ns,
        detail: json!({
            "machine_busy_ticks": machine.busy(),
            "machine_softirq_ticks": softirq_all,
            "path_ns": path_ns,
            "iperf3_own_ns": apps_ns,
            "groups": by_group,
            "per_cpu": shares,
            "tick_ns": TICK_NS,
        }),
    }
}

/// Runs iperf3 with `streams` streams from pod 0 of node 1 to pod 0 of node 2 over the
/// cluster's `underlay` and measures the CPU window (see the module docs). The flat keys:
/// `{p}_gbps{s}` (iperf3), `{p}_cpu_s_per_gb{s}` (softirq + linend), `{p}_cpu_s_per_gb_with_iperf3{s}`,
/// and on linen `{p}_linend_cpu_s_per_gb{s}`, where `p` is [`prefix`] and `s` the underlay's
/// [`Underlay::suffix`]. With `plan.profile`, the single stream over the default underlay is
/// profiled as `<datapath>-tcp`.
///
/// # Errors
/// iperf3 did not start, failed or printed no result; no byte arrived in the window; a `/proc`
/// file did not read; the profile failed.
pub fn measure(
    c: &Cluster,
    plan: &Plan,
    place: &Placement,
    streams: u32,
    underlay: Underlay,
    datapath: &str,
) -> Result<TcpRun, String> {
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    let linend: Vec<u32> =
        c.nodes().iter().filter_map(|n| n.linend.as_ref().map(|l| l.pid)).collect();
    let linend_nodes: Vec<String> =
        c.nodes().iter().filter(|n| n.linend.is_some()).map(|n| n.name.clone()).collect();
    let window = plan.duration;
    // Whole seconds: iperf3 takes -t and -O as integers. Two seconds past the window leave room
    // for a slow connection set-up and the readings at the window's edges on a busy machine.
    let omit = plan.warmup.as_secs_f64().floor() as u64;
    let secs = omit + window.as_secs_f64().ceil() as u64 + 2;
    let open_at = Duration::from_secs(omit).max(plan.warmup) + Duration::from_millis(300);

    let mut server = placement::command(&b.pods[0], "iperf3", place.receiver.as_deref());
    server
        .args(["-s", "-1", "-p", &IPERF_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let spid = c.testbed().spawn(server);
    let kill = |pids: &[u32]| pids.iter().for_each(|p| c.testbed().kill(*p));
    let listening = linen_testbed::wait_for(Duration::from_secs(5), || {
        let out = b.pods[0].sh_output(&format!("ss -Hltn sport = :{IPERF_PORT}"));
        (!out.stdout.is_empty()).then_some(())
    });
    if listening.is_none() {
        kill(&[spid]);
        return Err("iperf3 server did not start".into());
    }
    let name = format!("{}{}", prefix(streams), underlay.suffix());
    let out_path = c.dir().join(format!("iperf3-{name}.json"));
    let out_file = File::create(&out_path).map_err(|e| format!("{}: {e}", out_path.display()))?;
    let mut client = placement::command(&a.pods[0], "iperf3", place.sender.as_deref());
    client
        .args(["-c", &b.pod_ip(0).to_string(), "-p", &IPERF_PORT.to_string()])
        .args(["-t", &secs.to_string(), "-O", &omit.to_string(), "-P", &streams.to_string(), "-J"])
        .stdout(out_file)
        .stderr(Stdio::null());
    let started = Instant::now();
    let cpid = c.testbed().spawn(client);
    std::thread::sleep(open_at);
    let profile_dir = plan.profile.as_ref().filter(|_| streams == 1 && underlay == Underlay::Wire);
    let window_result = (|| {
        if !running(cpid) {
            return Err("iperf3 client exited before the window opened".to_string());
        }
        let perf = match profile_dir {
            Some(dir) => Some(profile_start(dir, &format!("{datapath}-tcp"), window, &linend)?),
            None => None,
        };
        // Open the window once every stream carries data (a lost SYN costs a second).
        let flowing = linen_testbed::wait_for(Duration::from_secs(3), || {
            let r = received(&b.pods[0]).ok()?;
            (r.conns > streams as usize && r.bytes > 0).then_some(())
        });
        if flowing.is_none() {
            return Err(format!("iperf3's {streams} stream(s) carried no data within 3 s"));
        }
        let b0 = received(&b.pods[0])?;
        let r0 = reading(cpid, spid, &linend)?;
        std::thread::sleep(window);
        let r1 = reading(cpid, spid, &linend)?;
        let b1 = received(&b.pods[0])?;
        Ok((b0, r0, r1, b1, perf))
    })();
    // The client stops on its own after `secs`; wait for its result (bounded).
    let deadline = started + Duration::from_secs(secs + 10);
    while running(cpid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let timed_out = running(cpid);
    kill(&[cpid, spid]);
    let (b0, r0, r1, b1, perf) = window_result?;
    if timed_out {
        return Err(format!("iperf3 client still running {} s after it should have ended", 10));
    }
    if b1.conns < b0.conns {
        return Err(format!(
            "the transfer ended inside the window ({} of {} connections left)",
            b1.conns, b0.conns
        ));
    }
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("iperf3 output: {e}"))?;
    if let Some(err) = v["error"].as_str() {
        return Err(format!("iperf3: {err}"));
    }
    let gbps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .ok_or("iperf3 JSON without end.sum_received.bits_per_second")?;

    let rate =
        (b1.bytes.saturating_sub(b0.bytes)) as f64 / b1.at.duration_since(b0.at).as_secs_f64();
    let window_s = r1.at.duration_since(r0.at).as_secs_f64();
    let bytes = rate * window_s;
    if bytes <= 0.0 {
        return Err(format!("no TCP payload reached {} in the window", b.pod_ip(0)));
    }
    let k = cost(&r0, &r1, place, &linend_nodes);
    let profile = match perf {
        Some(p) => {
            let roles = profile::Roles {
                sender: [cpid].into_iter().collect(),
                receiver: [spid].into_iter().collect(),
                linend: linend.iter().copied().collect(),
            };
            Some(profile_finish(p, &roles, rate / 1e3, profile::Unit::Kb, bytes as u64)?)
        }
        None => None,
    };
    // ns per byte = CPU-seconds per 10⁹ bytes.
    let per_gb = |ns: f64| ns / bytes;
    let s = underlay.suffix();
    let p = prefix(streams);
    let mut keys = Map::new();
    keys.insert(format!("{p}_gbps{s}"), json!(gbps));
    keys.insert(format!("{p}_cpu_s_per_gb{s}"), json!(per_gb(k.path_ns)));
    keys.insert(format!("{p}_cpu_s_per_gb_with_iperf3{s}"), json!(per_gb(k.path_ns + k.apps_ns)));
    if !linend.is_empty() {
        keys.insert(format!("{p}_linend_cpu_s_per_gb{s}"), json!(per_gb(k.linend_ns)));
    }
    let detail = json!({
        "streams": streams,
        "underlay": underlay.name(),
        "iperf3": {
            "gbps": gbps,
            "seconds": secs - omit,
            "omitted_s": omit,
            "retransmits": v["end"]["sum_sent"]["retransmits"],
            "sender_gbps": v["end"]["sum_sent"]["bits_per_second"].as_f64().map(|x| x / 1e9),
        },
        "window_s": window_s,
        "bytes": bytes,
        "gbps": rate * 8.0 / 1e9,
        "affinity": {
            "iperf3_client": place.sender.as_deref().map(placement::cpu_list),
            "iperf3_server": place.receiver.as_deref().map(placement::cpu_list),
        },
        "cpu_s_per_gb": {
            "path": per_gb(k.path_ns),
            "with_iperf3": per_gb(k.path_ns + k.apps_ns),
            "linend": per_gb(k.linend_ns),
            "iperf3": per_gb(k.apps_ns),
        },
        "cpu": k.detail,
    });
    Ok(TcpRun { keys, detail, profile })
}

#[cfg(test)]
mod tests {
    use super::super::placement::Pin;
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(prefix(1), "tcp");
        assert_eq!(prefix(8), "tcp8");
    }

    fn stat(cpus: &[(u64, u64, u64)]) -> ProcStat {
        // (system, softirq, idle) per CPU.
        let lines: Vec<cpu::CpuLine> = cpus
            .iter()
            .map(|&(system, softirq, idle)| cpu::CpuLine {
                system,
                softirq,
                idle,
                ..Default::default()
            })
            .collect();
        let mut total = cpu::CpuLine::default();
        for l in &lines {
            total.system += l.system;
            total.softirq += l.softirq;
            total.idle += l.idle;
        }
        ProcStat { total, cpus: lines }
    }

    fn times(stime: u64, runtime_ns: u64) -> ProcTimes {
        ProcTimes { utime: 0, stime, runtime_ns }
    }

    #[test]
    fn window_cost_counts_softirq_once() {
        let at = Instant::now();
        let r0 = Reading {
            at,
            stat: stat(&[(0, 0, 0), (0, 0, 0)]),
            client: times(0, 0),
            server: times(0, 0),
            linend: vec![times(0, 0), times(0, 0)],
        };
        // CPU 0: 100 softirq ticks, all inside the client (150 ticks of system time, 1.6 s on
        // a CPU); CPU 1: 20 softirq ticks inside linend (n1 30, n2 10 ticks of system time) and
        // the server (10).
        let r1 = Reading {
            at: at + Duration::from_secs(2),
            stat: stat(&[(50, 100, 50), (60, 20, 120)]),
            client: times(150, 1_600_000_000),
            server: times(10, 200_000_000),
            linend: vec![times(30, 500_000_000), times(10, 100_000_000)],
        };
        let place = Pin::Split.placement(2);
        let k = cost(&r0, &r1, &place, &["n1".into(), "n2".into()]);
        // Softirq 120 ticks; linend: 0.6 s − 20 × 40/50 ticks.
        let linend = 600e6 - 16.0 * TICK_NS;
        assert!((k.linend_ns - linend).abs() < 1.0);
        assert!((k.path_ns - (120.0 * TICK_NS + linend)).abs() < 1.0);
        // Client 1.6 s − 100 ticks; server 0.2 s − 4 ticks.
        assert!((k.apps_ns - (600e6 + 160e6)).abs() < 1.0);
        assert_eq!(k.detail["groups"]["linend n2"]["cpus"], "1");
        assert_eq!(k.detail["per_cpu"][0]["busy"], 0.75);
        assert_eq!(k.detail["per_cpu"][1]["softirq"], 0.1);
        // Nothing pinned: one pool over both CPUs.
        let k = cost(&r0, &r1, &Pin::None.placement(2), &["n1".into(), "n2".into()]);
        assert!((k.path_ns + k.apps_ns - (120.0 * TICK_NS + 2.4e9 - 120.0 * TICK_NS)).abs() < 1.0);
    }

    #[test]
    fn ss_bytes_received_are_summed() {
        // `ss -Htin` of an iperf3 server with two data connections and the control one.
        let text = "0      0      10.244.2.2:5201 10.244.1.2:40120\n\t cubic wscale:7,7 rto:204 \
            rtt:0.05/0.02 ato:40 mss:1398 pmtu:1450 rcvmss:1398 advmss:1398 cwnd:10 \
            bytes_received:37 segs_out:5 segs_in:8 data_segs_in:4 send 2.2Gbps lastsnd:20 \
            rcv_space:14480 minrtt:0.05\n\
            0      0      10.244.2.2:5201 10.244.1.2:40122\n\t cubic wscale:7,7 rto:201 \
            bytes_acked:1 bytes_received:1234567890 segs_out:9 segs_in:88\n\
            0      0      10.244.2.2:5201 10.244.1.2:40124\n\t cubic bytes_received:10\n";
        assert_eq!(parse_bytes_received(text), 37 + 1_234_567_890 + 10);
        assert_eq!(count_connections(text), 3);
        assert_eq!(count_connections(""), 0);
        assert_eq!(count_connections("0 0 10.244.2.2:52010 10.244.1.2:5201\n"), 0);
        assert_eq!(parse_bytes_received(""), 0);
        assert_eq!(parse_bytes_received("bytes_received:x bytes_received:5"), 5);
    }
}
