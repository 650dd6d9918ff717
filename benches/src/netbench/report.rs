//! netbench's outputs: the JSON document, the Markdown table with linen/kernel ratios, and a
//! hand-written SVG bar chart. Pure functions over the measured JSON, so they are unit-tested
//! without a testbed.

use std::fmt::Write as _;

use serde_json::Value;

use super::tcp::prefix;
use super::underlay::{Underlay, FEATURES};
use super::{KEYS, TCP_STREAMS};

/// Where and when a run happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// CPU model (`lscpu`).
    pub cpu_model: String,
    /// Online CPUs.
    pub cores: usize,
    /// `uname -r`.
    pub kernel: String,
    /// UTC date and time, `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
    /// The command line that produced the numbers.
    pub command: String,
}

fn command_stdout(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

impl Stamp {
    /// Reads this machine's stamp.
    pub fn here(cores: usize, command: String) -> Stamp {
        let lscpu = command_stdout("lscpu", &[]);
        let cpu_model = lscpu
            .lines()
            .find_map(|l| l.strip_prefix("Model name:"))
            .map(|m| m.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        Stamp {
            cpu_model,
            cores,
            kernel: command_stdout("uname", &["-r"]),
            date: command_stdout("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            command,
        }
    }

    /// One line: "AMD EPYC, 2 cores, Linux 6.18…, 2026-11-22 03:00 UTC".
    pub fn line(&self) -> String {
        format!("{}, {} cores, Linux {}, {}", self.cpu_model, self.cores, self.kernel, self.date)
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "cpu_model": self.cpu_model,
            "cores": self.cores,
            "kernel": self.kernel,
            "date": self.date,
            "command": self.command,
        })
    }
}

/// One row of the table: key, label, unit, whether higher is better, display precision.
struct Metric {
    key: &'static str,
    label: &'static str,
    higher_is_better: bool,
    digits: usize,
}

const METRICS: [Metric; 5] = [
    Metric {
        key: "pps_64",
        label: "64-byte UDP, pod→pod (packets/s)",
        higher_is_better: true,
        digits: 0,
    },
    Metric {
        key: "tcp_gbps",
        label: "TCP single stream (Gbit/s)",
        higher_is_better: true,
        digits: 2,
    },
    Metric {
        key: "rr_p50_us",
        label: "UDP request/response p50 (µs)",
        higher_is_better: false,
        digits: 1,
    },
    Metric {
        key: "rr_p99_us",
        label: "UDP request/response p99 (µs)",
        higher_is_better: false,
        digits: 1,
    },
    Metric {
        key: "cpu_ns_per_pkt",
        label: "CPU per forwarded packet (ns)",
        higher_is_better: false,
        digits: 0,
    },
];

/// Extra rows without a ratio, shown when present.
const EXTRAS: [(&str, &str, usize); 6] = [
    ("offered_pps", "offered by the sender (packets/s)", 0),
    ("sender_ns_per_pkt", "sender's own CPU per sent packet (ns)", 0),
    ("linend_ns_per_pkt", "of which linend processes (ns/packet)", 0),
    ("offered_pps_at_rate", "offered at the fixed rate (packets/s)", 0),
    ("linend_ns_per_pkt_at_rate", "of which linend processes, at the fixed rate (ns/packet)", 0),
    ("tcp_linend_cpu_s_per_gb", "of which linend processes, TCP single stream (CPU-s/GB)", 2),
];

/// One table row: key, label, `Some(higher_is_better)` when it gets a ratio, digits, whether it
/// is shown when no datapath has it (the headline keys).
struct Row {
    key: String,
    label: String,
    better: Option<bool>,
    digits: usize,
    always: bool,
}

fn streams_label(streams: u32) -> String {
    if streams == 1 {
        "single stream".into()
    } else {
        format!("{streams} streams")
    }
}

/// The table's rows in order: the headline metrics with TCP's other stream counts after the
/// single stream, TCP's CPU per GB, the TCP runs over the underlay with offloads, the extras.
fn rows() -> Vec<Row> {
    let mut out = Vec::new();
    let row = |key: String, label: String, better, digits, always| Row {
        key,
        label,
        better,
        digits,
        always,
    };
    for m in &METRICS {
        out.push(row(m.key.into(), m.label.into(), Some(m.higher_is_better), m.digits, true));
        if m.key == "cpu_ns_per_pkt" {
            // Shown when `--fixed-rate` measured them.
            let at = "64-byte UDP offered at the fixed rate";
            out.push(row(
                "pps_64_at_rate".into(),
                format!("{at}, delivered (packets/s)"),
                Some(true),
                0,
                false,
            ));
            out.push(row(
                "cpu_ns_per_pkt_at_rate".into(),
                format!("CPU per forwarded packet, {at} (ns)"),
                Some(false),
                0,
                false,
            ));
        }
        if m.key == "tcp_gbps" {
            for n in TCP_STREAMS.into_iter().filter(|n| *n != 1) {
                let label = format!("TCP {} (Gbit/s)", streams_label(n));
                out.push(row(format!("{}_gbps", prefix(n)), label, Some(true), 2, false));
            }
        }
    }
    for u in Underlay::ALL {
        let (s, on) = (u.suffix(), u.label());
        if u != Underlay::Wire {
            for n in TCP_STREAMS {
                let label = format!("TCP {}{on} (Gbit/s)", streams_label(n));
                out.push(row(format!("{}_gbps{s}", prefix(n)), label, Some(true), 2, false));
            }
        }
        for n in TCP_STREAMS {
            let p = prefix(n);
            let sl = streams_label(n);
            out.push(row(
                format!("{p}_cpu_s_per_gb{s}"),
                format!("CPU per GB, TCP {sl}{on} (CPU-s/GB: softirq + linend)"),
                Some(false),
                2,
                false,
            ));
            out.push(row(
                format!("{p}_cpu_s_per_gb_with_iperf3{s}"),
                format!("CPU per GB, TCP {sl}{on}, with iperf3's own (CPU-s/GB)"),
                Some(false),
                2,
                false,
            ));
        }
    }
    for (k, l, d) in EXTRAS {
        out.push(row(k.into(), l.into(), None, d, false));
    }
    out
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn fmt_num(x: f64, digits: usize) -> String {
    if digits == 0 {
        // Thousands separators make packet rates readable.
        let s = format!("{:.0}", x);
        let neg = s.starts_with('-');
        let d: Vec<char> = s.trim_start_matches('-').chars().collect();
        let mut out = String::new();
        for (i, c) in d.iter().enumerate() {
            if i > 0 && (d.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(*c);
        }
        if neg {
            format!("-{out}")
        } else {
            out
        }
    } else {
        format!("{x:.digits$}")
    }
}

/// The cell for datapath `dp`: the number, or why there is none.
fn cell(results: &Value, dp: &str, key: &str, digits: usize) -> String {
    let v = &results[dp];
    match num(v, key) {
        Some(x) => fmt_num(x, digits),
        None if v.get("unavailable").is_some() => "unavailable".into(),
        None => "—".into(),
    }
}

/// The Markdown section: stamp, table (one column per datapath, then linen/kernel ratios),
/// and notes on unavailable datapaths and failed measurements.
pub fn markdown(
    results: &Value,
    datapaths: &[String],
    stamp: &Stamp,
    svg_name: Option<&str>,
) -> String {
    let linen: Vec<&String> = datapaths.iter().filter(|d| d.as_str() != "kernel").collect();
    let has_kernel = datapaths.iter().any(|d| d == "kernel");
    let mut s = String::new();
    let _ = writeln!(s, "Measured {}.", stamp.line());
    let _ = writeln!(s, "Command: `{}`\n", stamp.command);
    let mut header = String::from("| metric |");
    let mut rule = String::from("|---|");
    for d in datapaths {
        let _ = write!(header, " {} |", label(d));
        rule.push_str("---:|");
    }
    if has_kernel {
        for d in &linen {
            let _ = write!(header, " {d}/kernel |");
            rule.push_str("---:|");
        }
    }
    let _ = writeln!(s, "{header}\n{rule}");
    for Row { key, label, better, digits, always } in rows() {
        let key = key.as_str();
        if !always && !datapaths.iter().any(|d| num(&results[d.as_str()], key).is_some()) {
            continue;
        }
        let _ = write!(s, "| {label} |");
        for d in datapaths {
            let _ = write!(s, " {} |", cell(results, d, key, digits));
        }
        if has_kernel {
            for d in &linen {
                let r = match (num(&results[d.as_str()], key), num(&results["kernel"], key)) {
                    (Some(x), Some(k)) if k > 0.0 && better.is_some() => format!("{:.2}×", x / k),
                    _ => "".into(),
                };
                let _ = write!(s, " {r} |");
            }
        }
        s.push('\n');
    }
    s.push('\n');
    if has_kernel {
        s.push_str(
            "Ratios are linen/kernel: above 1 is better for packets/s and Gbit/s, below 1 is \
             better for latency and CPU.\n",
        );
    }
    s.push_str(METHOD);
    if datapaths.iter().any(|d| d == "direct") {
        s.push_str(DIRECT_METHOD);
    }
    s.push_str(&notes(results, datapaths));
    for d in datapaths {
        if let Some(r) = results[d.as_str()].get("unavailable").and_then(Value::as_str) {
            let _ = writeln!(s, "- `{d}` unavailable: {r}");
        }
        if let Some(errs) = results[d.as_str()].get("errors").and_then(Value::as_object) {
            for (k, e) in errs {
                let _ = writeln!(s, "- `{d}` {k} failed: {}", e.as_str().unwrap_or(""));
            }
        }
    }
    if let Some(svg) = svg_name {
        let _ = writeln!(s, "\n![netbench chart]({svg})");
    }
    s
}

/// How each row is measured, printed under the table.
const METHOD: &str =
    "\nHow: a fresh two-node testbed per datapath (network namespaces; underlay veth with \
`tx off`; `cni0` bridge and pod per node; MTU 1450 in the pods). Packets/s: an AF_PACKET sender \
in the source pod (`sendmmsg` of one 60-byte frame, 64 on a wire), counted at the \
destination pod's `eth0` over the window. TCP: `iperf3 -J`, one stream and `-P 8`. \
Request/response: UDP ping-pong, one request in flight, percentiles from the client (nothing \
pinned). CPU/packet: softirq time of every CPU plus linend's threads, per delivered packet; the \
sender's own time apart. CPU per GB (CPU-seconds per 10⁹ bytes of TCP payload delivered, i.e. ns \
per byte): the same sum over a window inside the TCP transfer, then with the iperf3 client's and \
server's own time added (softirq that ran inside them counted once). The \"underlay offloads on\" \
and \"underlay GRO on\" rows come from a testbed of their own per datapath, over the underlays \
below.\n";

/// Short names of the offload features in the notes.
fn short_feature(name: &str) -> &str {
    match name {
        "tx-checksumming" => "tx-csum",
        "scatter-gather" => "sg",
        "tcp-segmentation-offload" => "tso",
        "generic-segmentation-offload" => "gso",
        "generic-receive-offload" => "gro",
        "rx-udp-gro-forwarding" => "udp-gro-fwd",
        "tx-udp_tnl-segmentation" => "udp-tnl-seg",
        "rx-gro-list" => "gro-list",
        other => other,
    }
}

/// `tx-csum off, tso off, …` of one device's features as read back.
fn features_line(f: &Value) -> String {
    FEATURES
        .iter()
        .filter_map(|k| {
            let v = f.get(*k)?.as_str()?;
            Some(format!("{} {}", short_feature(k), v.split_whitespace().next().unwrap_or(v)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `n1`, `n2`: (datapath, feature line) for device `dev` of every node over `underlay`, or the
/// overlay device when `dev` is `None`.
fn device_lines(
    results: &Value,
    datapaths: &[String],
    underlay: &str,
    dev: Option<&str>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in datapaths {
        let Some(nodes) = results[d.as_str()]["underlay"][underlay]["features"].as_object() else {
            continue;
        };
        for f in nodes.values() {
            let Some(devs) = f.as_object() else { continue };
            for (name, feats) in devs {
                let pick = match dev {
                    Some(want) => name == want,
                    None => name != "eth0",
                };
                if pick {
                    out.push((format!("{d} `{name}`"), features_line(feats)));
                }
            }
        }
    }
    out.dedup();
    out
}

/// `"a; b"` when every line is the same, else each with its owner.
fn same_or_each(lines: &[(String, String)]) -> String {
    let first = lines.first().map(|(_, l)| l.clone()).unwrap_or_default();
    if lines.iter().all(|(_, l)| *l == first) {
        format!("{first} (every datapath, both nodes)")
    } else {
        lines.iter().map(|(who, l)| format!("{who}: {l}")).collect::<Vec<_>>().join("; ")
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("?".into(), |x| format!("{:.0} %", x * 100.0))
}

/// `CPU0 97 % (softirq 55 %), CPU1 …` of a window's `per_cpu` array.
fn busy_line(per_cpu: &Value) -> Option<String> {
    let cpus = per_cpu.as_array()?;
    let parts: Vec<String> = cpus
        .iter()
        .map(|c| {
            format!(
                "CPU{} {} (softirq {})",
                c["cpu"].as_u64().unwrap_or(0),
                pct(c["busy"].as_f64()),
                pct(c["softirq"].as_f64())
            )
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The notes on where things ran and over which underlay settings, from the JSON.
fn notes(results: &Value, datapaths: &[String]) -> String {
    let mut s = String::new();
    if let Some(p) = datapaths.iter().find_map(|d| results[d.as_str()]["placement"].as_object()) {
        let list = |k: &str| {
            p.get(k).and_then(Value::as_str).map_or("any CPU".into(), |c| format!("CPU {c}"))
        };
        let _ = writeln!(
            s,
            "- CPUs (`--pin {}`, every datapath alike): sender (AF_PACKET sender, `iperf3 -c`) on {}; \
             receiver (sink, `iperf3 -s`) on {}; linend's threads on {}.",
            p.get("pin").and_then(Value::as_str).unwrap_or("?"),
            list("sender"),
            list("receiver"),
            list("linend"),
        );
    }
    if let Some(rate) = results["meta"]["fixed_rate_pps"].as_u64() {
        let _ = writeln!(
            s,
            "- Fixed rate (`--fixed-rate {rate}`): a second packet-rate window per datapath in which \
             the sender paces {rate} 64-byte frames per second (a batch every ≈ 100 µs), below what \
             every datapath carries, so CPU per packet compares the paths at one load with nothing \
             dropped on the way. At such rates linend's workers busy-poll between packets (for \
             `--idle-spell-us` after each, 200 by default), and that time counts."
        );
    }
    for d in datapaths {
        let v = &results[d.as_str()];
        let mut parts = Vec::new();
        if let Some(nodes) = v["linend_cpus"].as_object().filter(|m| !m.is_empty()) {
            let t: Vec<String> = nodes
                .iter()
                .map(|(n, threads)| {
                    let w: Vec<String> = threads
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .filter(|(k, _)| k.starts_with("linen-"))
                                .map(|(k, c)| format!("{k} {}", c.as_str().unwrap_or("?")))
                                .collect()
                        })
                        .unwrap_or_default();
                    format!("{n}: {}", w.join(", "))
                })
                .collect();
            parts.push(format!("linend's workers may run on (read back) {}", t.join("; ")));
        }
        parts.push("busy share per CPU (all work on the machine, softirq part in brackets)".into());
        let fixed = parts.len();
        let windows = TCP_STREAMS
            .iter()
            .map(|n| {
                (
                    format!("TCP {}", streams_label(*n)),
                    &v["tcp_detail"][prefix(*n)]["cpu"]["per_cpu"],
                )
            })
            .chain(std::iter::once(("64 B".to_string(), &v["cpu_detail"]["per_cpu"])));
        for (name, per_cpu) in windows {
            if let Some(l) = busy_line(per_cpu) {
                parts.push(format!("{name}: {l}"));
            }
        }
        if parts.len() > fixed {
            let (head, windows) = parts.split_at(fixed);
            let _ = writeln!(s, "- `{d}`: {}: {}.", head.join("; "), windows.join("; "));
        }
    }
    for u in Underlay::ALL {
        let eth0 = device_lines(results, datapaths, u.name(), Some("eth0"));
        if eth0.is_empty() {
            continue;
        }
        let rows = match u {
            Underlay::Wire => "every row but the \"underlay … on\" ones".to_string(),
            _ => format!("the \"{}\" rows", u.label().trim_start_matches(", ")),
        };
        let overlay = device_lines(results, datapaths, u.name(), None);
        let _ = writeln!(
            s,
            "- Underlay `{}` ({rows}): {}. Read back on `eth0`: {}. Overlay devices: {}.",
            u.name(),
            u.describe(),
            same_or_each(&eth0),
            overlay.iter().map(|(who, l)| format!("{who}: {l}")).collect::<Vec<_>>().join("; ")
        );
    }
    s
}

/// How the `direct` column differs, printed when it is measured.
const DIRECT_METHOD: &str = "`direct`: linen in etcd mode with flannel's `DirectRouting` \
(`linend --datapath tap` on each node, so no XDP program sits on the underlay veth): the pods' \
packets cross the underlay as plain IP, routed by the kernel via the peer's public IP, no VXLAN \
and no linend on the path. Its two nodes hang off a bridge in a switch namespace (beside etcd) \
instead of one veth pair: one bridge hop more than the other columns.\n";

fn label(dp: &str) -> String {
    match dp {
        "kernel" => "kernel VXLAN (flannel)".into(),
        "xdp" => "linen xdp".into(),
        "tap" => "linen tap".into(),
        "direct" => "linen DirectRouting".into(),
        other => format!("linen {other}"),
    }
}

/// The table and ratios as plain text for stdout (the Markdown table reads fine there).
pub fn ratios_text(results: &Value, datapaths: &[String]) -> String {
    let mut s = String::new();
    for d in datapaths.iter().filter(|d| d.as_str() != "kernel") {
        for m in &METRICS {
            if let (Some(x), Some(k)) =
                (num(&results[d.as_str()], m.key), num(&results["kernel"], m.key))
            {
                if k > 0.0 {
                    let _ = writeln!(s, "{d}/kernel {:<16} {:>7.2}×", m.key, x / k);
                }
            }
        }
    }
    s
}

const COLOURS: [(&str, &str); 4] =
    [("kernel", "#7f7f7f"), ("xdp", "#1f77b4"), ("tap", "#ff7f0e"), ("direct", "#2ca02c")];

fn colour(dp: &str) -> &'static str {
    COLOURS.iter().find(|(d, _)| *d == dp).map(|(_, c)| *c).unwrap_or("#2ca02c")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The chart's panels: title, keys (bars side by side per datapath, each tagged below), digits.
type Panel = (&'static str, &'static [(&'static str, &'static str)], usize);

const PANELS: [Panel; 8] = [
    ("64 B UDP kpps ↑", &[("pps_64", "")], 0),
    ("TCP Gbit/s ↑", &[("tcp_gbps", "1"), ("tcp8_gbps", "8")], 2),
    (
        "TCP Gbit/s, offloads on ↑",
        &[("tcp_gbps_underlay_offloads", "1"), ("tcp8_gbps_underlay_offloads", "8")],
        1,
    ),
    ("TCP Gbit/s, GRO on ↑", &[("tcp_gbps_underlay_gro", "1"), ("tcp8_gbps_underlay_gro", "8")], 2),
    ("RR p50 µs ↓", &[("rr_p50_us", "")], 0),
    ("RR p99 µs ↓", &[("rr_p99_us", "")], 0),
    ("CPU ns/packet ↓", &[("cpu_ns_per_pkt", "")], 0),
    ("TCP CPU-s/GB ↓", &[("tcp_cpu_s_per_gb", "1"), ("tcp8_cpu_s_per_gb", "8")], 2),
];

/// A bar chart: one panel per metric, one bar per datapath (and per stream count in the TCP
/// panels, tagged 1 and 8 below the bars), value above each bar, "n/a" where a datapath has no
/// number. Panels no datapath has a number for are left out.
pub fn svg(results: &Value, datapaths: &[String], stamp: &Stamp) -> String {
    let has = |k: &str| datapaths.iter().any(|d| num(&results[d.as_str()], k).is_some());
    let panels: Vec<(&str, Vec<&str>, Vec<&str>, usize)> = PANELS
        .iter()
        .filter(|(_, keys, _)| KEYS.contains(&keys[0].0) || keys.iter().any(|(k, _)| has(k)))
        .map(|(t, keys, d)| {
            (*t, keys.iter().map(|k| k.0).collect(), keys.iter().map(|k| k.1).collect(), *d)
        })
        .collect();
    let (pw, ph, top, left) = (190.0, 250.0, 60.0, 20.0);
    let width = left * 2.0 + pw * panels.len() as f64;
    let height = top + ph + 70.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="22" font-size="15" font-weight="bold">linen netbench: pod→pod across two nodes</text>"#
    );
    let _ = writeln!(s, r#"<text x="{left}" y="40" fill="dimgray">{}</text>"#, esc(&stamp.line()));
    for (pi, (title, keys, tags, digits)) in panels.iter().enumerate() {
        let x0 = left + pw * pi as f64;
        let base = top + ph - 30.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
            x0 + pw / 2.0,
            top + 5.0,
            esc(title)
        );
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{base}" x2="{}" y2="{base}" stroke="black"/>"#,
            x0 + 10.0,
            x0 + pw - 10.0
        );
        let scale_div = if keys[0] == "pps_64" { 1000.0 } else { 1.0 };
        let max = datapaths
            .iter()
            .flat_map(|d| keys.iter().filter_map(move |k| num(&results[d.as_str()], k)))
            .fold(0.0f64, f64::max)
            / scale_div;
        let bars = datapaths.len() * keys.len();
        let slot = (pw - 30.0) / bars.max(1) as f64;
        let bar_h_max = ph - 70.0;
        for (di, d) in datapaths.iter().enumerate() {
            for (ki, k) in keys.iter().enumerate() {
                let i = di * keys.len() + ki;
                let bx = x0 + 15.0 + slot * i as f64 + slot * 0.12;
                let bw = slot * 0.76;
                match num(&results[d.as_str()], k) {
                    Some(v) => {
                        let v = v / scale_div;
                        let h = if max > 0.0 { v / max * bar_h_max } else { 0.0 };
                        let opacity = if ki == 1 { "0.55" } else { "1" };
                        let _ = writeln!(
                            s,
                            r#"<rect x="{bx:.1}" y="{:.1}" width="{bw:.1}" height="{h:.1}" fill="{}" fill-opacity="{opacity}"/>"#,
                            base - h,
                            colour(d)
                        );
                        let _ = writeln!(
                            s,
                            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                            bx + bw / 2.0,
                            base - h - 4.0,
                            fmt_num(v, *digits)
                        );
                    }
                    None => {
                        let _ = writeln!(
                            s,
                            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="darkgray">n/a</text>"#,
                            bx + bw / 2.0,
                            base - 4.0
                        );
                    }
                }
                let tag = tags[ki];
                if !tag.is_empty() {
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="dimgray" font-size="9">{tag}</text>"#,
                        bx + bw / 2.0,
                        base + 12.0
                    );
                }
            }
        }
    }
    // Legend.
    let ly = top + ph + 10.0;
    for (i, d) in datapaths.iter().enumerate() {
        let lx = left + 10.0 + 190.0 * i as f64;
        let _ =
            writeln!(s, r#"<rect x="{lx}" y="{ly}" width="12" height="12" fill="{}"/>"#, colour(d));
        let _ =
            writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, lx + 18.0, ly + 10.0, esc(&label(d)));
    }
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="{}" fill="dimgray">↑ higher is better, ↓ lower is better; 1 and 8 under the TCP bars: streams; n/a: datapath unavailable or measurement failed (see the table).</text>"#,
        ly + 34.0
    );
    s.push_str("</svg>\n");
    s
}

/// Replaces the text between `begin` and `end` marker lines in `doc` with `section`, keeping
/// the markers; appends both markers and the section when they are missing.
pub fn splice(doc: &str, begin: &str, end: &str, section: &str) -> String {
    match (doc.find(begin), doc.find(end)) {
        (Some(b), Some(e)) if b < e => {
            let head = &doc[..b + begin.len()];
            format!("{head}\n{}\n{}", section.trim_end(), &doc[e..])
        }
        _ => {
            let mut d = doc.to_string();
            if !d.is_empty() && !d.ends_with('\n') {
                d.push('\n');
            }
            format!("{d}{begin}\n{}\n{end}\n", section.trim_end())
        }
    }
}

/// Puts a new generated `table` into netbench's section of `doc` (between `begin` and `end`):
/// when the section already has a `generated_end` marker, only the text before it is replaced,
/// so the notes written after it stay; otherwise the whole section becomes the table followed
/// by that marker.
pub fn update_section(
    doc: &str,
    begin: &str,
    generated_end: &str,
    end: &str,
    table: &str,
) -> String {
    let inside = match (doc.find(begin), doc.find(generated_end), doc.find(end)) {
        (Some(b), Some(g), Some(e)) => b < g && g < e,
        _ => false,
    };
    if inside {
        splice(doc, begin, generated_end, table)
    } else {
        splice(doc, begin, end, &format!("{}\n{generated_end}", table.trim_end()))
    }
}

/// Checks that `results` has, for each datapath, an object with every headline key present
/// (a number, or `null` next to `unavailable`/`errors`).
pub fn check_shape(results: &Value, datapaths: &[String]) -> Result<(), String> {
    for d in datapaths {
        let v = results.get(d.as_str()).ok_or_else(|| format!("no object for {d}"))?;
        for k in KEYS {
            if v.get(k).is_none() {
                return Err(format!("{d}: key {k} missing"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stamp() -> Stamp {
        Stamp {
            cpu_model: "Test CPU".into(),
            cores: 2,
            kernel: "6.18.0".into(),
            date: "2026-11-22 03:00 UTC".into(),
            command: "netbench --quick".into(),
        }
    }

    fn results() -> Value {
        json!({
            "kernel": {"pps_64": 100000.0, "tcp_gbps": 5.0, "rr_p50_us": 20.0, "rr_p99_us": 40.0, "cpu_ns_per_pkt": 8000.0},
            "xdp": {"pps_64": null, "tcp_gbps": null, "rr_p50_us": null, "rr_p99_us": null, "cpu_ns_per_pkt": null,
                    "unavailable": "linend on n1: --datapath xdp: not available"},
            "tap": {"pps_64": 150000.0, "tcp_gbps": 2.5, "rr_p50_us": 30.0, "rr_p99_us": 80.0, "cpu_ns_per_pkt": 12000.0,
                    "offered_pps": 400000.0},
        })
    }

    fn dps() -> Vec<String> {
        vec!["kernel".into(), "xdp".into(), "tap".into()]
    }

    #[test]
    fn table_has_ratios_and_reasons() {
        let md = markdown(&results(), &dps(), &stamp(), Some("netbench.svg"));
        assert!(
            md.contains(
                "| 64-byte UDP, pod→pod (packets/s) | 100,000 | unavailable | 150,000 |  | 1.50× |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| TCP single stream (Gbit/s) | 5.00 | unavailable | 2.50 |  | 0.50× |"),
            "{md}"
        );
        assert!(md.contains("offered by the sender"), "{md}");
        assert!(md.contains("`xdp` unavailable: linend on n1"), "{md}");
        assert!(md.contains("Test CPU, 2 cores, Linux 6.18.0, 2026-11-22 03:00 UTC"));
        assert!(md.contains("![netbench chart](netbench.svg)"));
    }

    /// `results()` with what the TCP runs, the placement and the underlays add.
    fn full_results() -> Value {
        let mut r = results();
        let feats = |tx: &str, gro: &str| json!({"tx-checksumming": tx, "generic-receive-offload": gro, "tcp-segmentation-offload": "on [requested on]"});
        let underlay = |dev: &str| {
            json!({
                "wire": {"features": {
                    "n1": {"eth0": feats("off", "off"), dev: feats("on", "on")},
                    "n2": {"eth0": feats("off", "off"), dev: feats("on", "on")}}},
                "offloads": {"features": {
                    "n1": {"eth0": feats("on", "on"), dev: feats("on", "on")},
                    "n2": {"eth0": feats("on", "on"), dev: feats("on", "on")}}},
            })
        };
        let per_cpu = json!([{"cpu": 0, "busy": 0.97, "softirq": 0.55}, {"cpu": 1, "busy": 0.4, "softirq": 0.02}]);
        let placement = json!({"pin": "split", "sender": "0", "receiver": "1", "linend": "1"});
        for (d, gbps, gb) in [("kernel", 4.0, 2.0), ("tap", 5.0, 1.5)] {
            let o = r[d].as_object_mut().expect("object");
            o.insert("tcp8_gbps".into(), json!(gbps * 2.0));
            o.insert("tcp_cpu_s_per_gb".into(), json!(gb));
            o.insert("tcp_cpu_s_per_gb_with_iperf3".into(), json!(gb + 1.0));
            o.insert("tcp_gbps_underlay_offloads".into(), json!(gbps * 3.0));
            o.insert("cpu_ns_per_pkt_at_rate".into(), json!(gb * 5000.0));
            o.insert("placement".into(), placement.clone());
            o.insert("tcp_detail".into(), json!({"tcp": {"cpu": {"per_cpu": per_cpu.clone()}}}));
            o.insert("cpu_detail".into(), json!({"per_cpu": per_cpu.clone()}));
            let dev = if d == "kernel" { "flannel.1" } else { "linen.1" };
            o.insert("underlay".into(), underlay(dev));
        }
        r["meta"] = json!({"fixed_rate_pps": 50000});
        r["kernel"]["linend_cpus"] = json!({});
        r["tap"]["linend_cpus"] =
            json!({"n1": {"linen-tap-0": "1", "linend": "1"}, "n2": {"linen-tap-0": "1"}});
        r
    }

    #[test]
    fn table_has_the_tcp_rows_and_the_notes() {
        let md = markdown(&full_results(), &dps(), &stamp(), None);
        assert!(
            md.contains("| TCP 8 streams (Gbit/s) | 8.00 | unavailable | 10.00 |  | 1.25× |"),
            "{md}"
        );
        // Lower is better for CPU: the ratio is tap/kernel all the same.
        assert!(
            md.contains(
                "| CPU per GB, TCP single stream (CPU-s/GB: softirq + linend) | 2.00 | unavailable | 1.50 |  | 0.75× |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| CPU per GB, TCP single stream, with iperf3's own (CPU-s/GB) | 3.00 |")
        );
        assert!(md.contains(
            "| TCP single stream, underlay offloads on (Gbit/s) | 12.00 | unavailable | 15.00 |  | 1.25× |"
        ));
        assert!(md.contains(
            "| CPU per forwarded packet, 64-byte UDP offered at the fixed rate (ns) | 10,000 | unavailable | 7,500 |  | 0.75× |"
        ), "{md}");
        assert!(md.contains("- Fixed rate (`--fixed-rate 50000`): "), "{md}");
        // Rows nobody measured are left out.
        assert!(!md.contains("TCP 8 streams, underlay offloads on"), "{md}");
        assert!(!md.contains("delivered (packets/s)"), "{md}");
        // The TCP rows come right after the single stream's.
        let (one, eight) =
            (md.find("| TCP single stream (Gbit/s)"), md.find("| TCP 8 streams (Gbit/s)"));
        let p50 = md.find("| UDP request/response p50");
        assert!(one < eight && eight < p50, "{md}");
        assert!(md.contains(
            "- CPUs (`--pin split`, every datapath alike): sender (AF_PACKET sender, `iperf3 -c`) on CPU 0; receiver (sink, `iperf3 -s`) on CPU 1; linend's threads on CPU 1."
        ), "{md}");
        assert!(md.contains(
            "- `kernel`: busy share per CPU (all work on the machine, softirq part in brackets): TCP single stream: CPU0 97 % (softirq 55 %), CPU1 40 % (softirq 2 %); 64 B: CPU0 97 % (softirq 55 %), CPU1 40 % (softirq 2 %)."
        ), "{md}");
        assert!(md.contains("- `tap`: linend's workers may run on (read back) n1: linen-tap-0 1; n2: linen-tap-0 1; busy share per CPU (all work on the machine, softirq part in brackets): TCP single stream:"), "{md}");
        assert!(md.contains(
            "Read back on `eth0`: tx-csum off, tso on, gro off (every datapath, both nodes). Overlay devices: kernel `flannel.1`: tx-csum on, tso on, gro on; tap `linen.1`: tx-csum on, tso on, gro on."
        ), "{md}");
        assert!(md.contains("- Underlay `offloads` (the \"underlay offloads on\" rows): underlay veths with their transmit offloads on"), "{md}");
        // Devices that differ are listed each with its datapath.
        let mut r = full_results();
        r["tap"]["underlay"]["wire"]["features"]["n1"]["eth0"]["tcp-segmentation-offload"] =
            json!("off");
        let md = markdown(&r, &dps(), &stamp(), None);
        assert!(md.contains("Read back on `eth0`: kernel `eth0`: tx-csum off, tso on, gro off; tap `eth0`: tx-csum off, tso off, gro off; tap `eth0`: tx-csum off, tso on, gro off."), "{md}");
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let svg = svg(&results(), &dps(), &stamp());
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 1 + 2 * 5 + 3); // background, bars, legend
        assert!(svg.contains("n/a"));
        assert!(svg.contains(">150<")); // kpps label
                                        // Panels without numbers are left out: 5 headline panels, TCP with a second bar slot.
        assert_eq!(svg.matches("font-weight=\"bold\">").count(), 1 + 5);
        let full = super::svg(&full_results(), &dps(), &stamp());
        // + TCP 8 streams (2), offloads on (2; 8 streams n/a), CPU per GB (2; 8 streams n/a).
        assert_eq!(full.matches("<rect").count(), 1 + 2 * 5 + 2 + 2 + 2 + 3);
        assert_eq!(full.matches("font-weight=\"bold\">").count(), 1 + 7);
        assert!(full.contains(">8<") && full.contains(">1<"), "stream tags under the TCP bars");
    }

    #[test]
    fn splice_replaces_between_markers_only() {
        let doc = "# Benchmarks\nintro\n<!-- b -->\nold\n<!-- e -->\ntail\n";
        let out = splice(doc, "<!-- b -->", "<!-- e -->", "new table\n");
        assert_eq!(out, "# Benchmarks\nintro\n<!-- b -->\nnew table\n<!-- e -->\ntail\n");
        let again = splice(&out, "<!-- b -->", "<!-- e -->", "newer");
        assert_eq!(again, "# Benchmarks\nintro\n<!-- b -->\nnewer\n<!-- e -->\ntail\n");
        assert_eq!(splice("", "<b>", "<e>", "x"), "<b>\nx\n<e>\n");
    }

    #[test]
    fn update_keeps_notes_after_the_generated_part() {
        let (b, g, e) = ("<!-- b -->", "<!-- g -->", "<!-- e -->");
        let first = update_section("# B\n<!-- b -->\n<!-- e -->\n", b, g, e, "t1\n");
        assert_eq!(first, "# B\n<!-- b -->\nt1\n<!-- g -->\n<!-- e -->\n");
        let noted = first.replace("<!-- g -->\n", "<!-- g -->\nnotes\n");
        let second = update_section(&noted, b, g, e, "t2");
        assert_eq!(second, "# B\n<!-- b -->\nt2\n<!-- g -->\nnotes\n<!-- e -->\n");
        assert_eq!(update_section("", b, g, e, "t"), "<!-- b -->\nt\n<!-- g -->\n<!-- e -->\n");
    }

    #[test]
    fn shape_check() {
        assert!(check_shape(&results(), &dps()).is_ok());
        assert!(check_shape(&json!({"kernel": {"pps_64": 1}}), &["kernel".to_string()]).is_err());
    }

    #[test]
    fn numbers_format() {
        assert_eq!(fmt_num(1234567.4, 0), "1,234,567");
        assert_eq!(fmt_num(999.0, 0), "999");
        assert_eq!(fmt_num(5.678, 2), "5.68");
    }
}
