//! `netbench`: linen's macro benchmark (see `linen_benches::netbench`). Run as root:
//!
//! ```text
//! cargo run --release -p linen-benches --bin netbench -- --json netbench.json \
//!     [--duration 5] [--datapaths kernel,xdp,tap[,direct]] [--markdown docs/benchmarks.md] \
//!     [--svg docs/netbench.svg] [--quick] [--linend PATH] [--profile DIR] [--pin split|same|none]
//! ```
//!
//! `--pin` places the sender, the receiver and linend's threads for the TCP and packet-rate
//! windows, the same way for every datapath (see `linen_benches::netbench::placement`).
//!
//! `--profile DIR` also samples every CPU with `perf` (package `linux-perf`) during each
//! datapath's packet-rate window and its single-stream TCP window and writes the per-stage CPU
//! cost per packet and per KB of TCP payload (see `linen_benches::netbench::profile`) into the
//! JSON (`profile`, `tcp_profile`) and `DIR/breakdown.md`.
//!
//! The subcommands (`send`, `sink`, `rr-server`, `rr-client`) are the pod-side halves that
//! netbench runs inside pods itself; they are not meant to be run by hand.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use linen_benches::netbench::placement::Pin;
use linen_benches::netbench::underlay::Underlay;
use linen_benches::netbench::{
    harness, profile, report, traffic, DATAPATHS, MD_BEGIN, MD_END, MD_GENERATED_END, TCP_STREAMS,
};
use linen_benches::tool::{find_linend, is_root};
use linen_dataplane::wire::MacAddr;
use serde_json::{json, Map, Value};

#[derive(Parser, Debug)]
#[command(
    name = "netbench",
    about = "linen's macro benchmark: kernel VXLAN vs linen datapaths, pod to pod"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// Write the results here (JSON).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seconds per measurement window (packet rate, TCP, latency bound).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Datapaths to compare, in table order: kernel, xdp, tap, and `direct` (linen with
    /// DirectRouting, no VXLAN; not in the default run).
    #[arg(long, value_delimiter = ',', default_value = "kernel,xdp,tap")]
    datapaths: Vec<String>,
    /// Replace the section between the netbench markers of this Markdown file.
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Write the bar chart here (SVG).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// 1-second windows: checks that every measurement works (for tests), not a benchmark.
    #[arg(long)]
    quick: bool,
    /// The linend binary (default: beside this binary, built first when run through cargo).
    #[arg(long)]
    linend: Option<PathBuf>,
    /// Profile each datapath's packet-rate and single-stream TCP windows with `perf record -a -g`
    /// and `perf stat` (linend's system calls); write the perf files and `breakdown.md` (ns per
    /// packet and per KB per stage) into this directory and the breakdown into the JSON
    /// (`profile`, `tcp_profile`).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Where the sender, the receiver and linend's threads run during the TCP and packet-rate
    /// windows, for every datapath alike: `split` (sender on CPU 0, receiver and linend on the
    /// others), `same` (all on CPU 0) or `none` (not pinned).
    #[arg(long, default_value = "split")]
    pin: Pin,
    /// Also measure 64-byte packets offered at this fixed rate (packets/s, paced), below what
    /// every datapath carries, so CPU per packet compares the paths at the same load with
    /// nothing dropped on the way (keys `…_at_rate`).
    #[arg(long)]
    fixed_rate: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Pod side: AF_PACKET sender of UDP frames.
    #[command(hide = true)]
    Send {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        gw_mac: MacAddr,
        #[arg(long)]
        src: Ipv4Addr,
        #[arg(long)]
        to: SocketAddrV4,
        #[arg(long, default_value_t = 60)]
        len: usize,
        #[arg(long)]
        secs: f64,
        #[arg(long)]
        cpu: Option<usize>,
        #[arg(long)]
        rate: Option<u64>,
    },
    /// Pod side: hold a UDP port open, unread.
    #[command(hide = true)]
    Sink {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        secs: f64,
    },
    /// Pod side: UDP echo server.
    #[command(hide = true)]
    RrServer {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        secs: f64,
    },
    /// Pod side: UDP ping-pong client; prints JSON.
    #[command(hide = true)]
    RrClient {
        #[arg(long)]
        to: SocketAddrV4,
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        #[arg(long)]
        secs: f64,
    },
}

fn dur(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {secs}: {e}"))
}

fn pod_mode(mode: Mode) -> Result<(), String> {
    match mode {
        Mode::Send { iface, gw_mac, src, to, len, secs, cpu, rate } => {
            let cfg = traffic::SendConfig {
                iface,
                dst_mac: gw_mac.into(),
                src_ip: src,
                dst: to,
                frame_len: len,
                duration: dur(secs)?,
                cpu,
                rate,
            };
            let r = traffic::send(&cfg).map_err(|e| e.to_string())?;
            eprintln!(
                "netbench send: {} frames in {:.2} s ({:.0}/s), {} failed sendmmsg calls",
                r.sent,
                r.elapsed.as_secs_f64(),
                r.sent as f64 / r.elapsed.as_secs_f64().max(1e-9),
                r.errors
            );
        }
        Mode::Sink { port, secs } => traffic::sink(port, dur(secs)?).map_err(|e| e.to_string())?,
        Mode::RrServer { port, secs } => {
            traffic::rr_server(port, dur(secs)?).map_err(|e| e.to_string())?;
        }
        Mode::RrClient { to, count, warmup, secs } => {
            let r = traffic::rr_client(to, warmup, count, dur(secs)?).map_err(|e| e.to_string())?;
            println!(
                "{}",
                json!({"samples": r.samples, "lost": r.lost, "p50_us": r.p50_us, "p99_us": r.p99_us, "mean_us": r.mean_us})
            );
        }
    }
    Ok(())
}

fn bench(cli: Cli) -> Result<(), String> {
    let json_path = cli.json.ok_or("--json FILE is required")?;
    if !is_root() {
        return Err("netbench builds network namespaces: run it as root".into());
    }
    for d in &cli.datapaths {
        if !DATAPATHS.contains(&d.as_str()) {
            return Err(format!("unknown datapath {d:?}: choose from {}", DATAPATHS.join(",")));
        }
    }
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let linend = find_linend(cli.linend, &me, "netbench")?;
    let mut plan = if cli.quick {
        harness::Plan::quick(linend, me)
    } else {
        if cli.duration < 1.0 {
            return Err("--duration must be at least 1 s (use --quick for short runs)".into());
        }
        harness::Plan::full(dur(cli.duration)?, linend, me)
    };
    plan.profile = cli.profile.clone();
    plan.pin = cli.pin;
    plan.fixed_rate = cli.fixed_rate.filter(|r| *r > 0);
    // The stamp names the binary, not the path it happened to run from.
    let command = std::iter::once("netbench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let stamp = report::Stamp::here(harness::cpu_count(), command);

    let mut results = Map::new();
    results.insert(
        "meta".into(),
        json!({
            "stamp": stamp.to_json(),
            "quick": cli.quick,
            "duration_s": plan.duration.as_secs_f64(),
            "frame_len": 60,
            "frame_len_on_wire": 64,
            "pin": plan.pin.name(),
            "fixed_rate_pps": plan.fixed_rate,
            "placement": plan.pin.placement(harness::cpu_count()).to_json(),
            "tcp_streams": TCP_STREAMS,
            "underlays": Underlay::ALL
                .iter()
                .filter(|u| **u == Underlay::Wire || plan.extra_underlays)
                .map(|u| (u.name().to_string(), Value::from(u.describe())))
                .collect::<Map<String, Value>>(),
        }),
    );
    for d in &cli.datapaths {
        eprintln!("netbench: measuring {d} …");
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| harness::measure(d, &plan)));
        let v = match outcome {
            Ok(v) => v,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                let mut m = Map::new();
                for k in linen_benches::netbench::KEYS {
                    m.insert(k.into(), Value::Null);
                }
                m.insert(
                    "unavailable".into(),
                    json!(format!("testbed failed: {}", msg.lines().next().unwrap_or(""))),
                );
                Value::Object(m)
            }
        };
        if let Some(r) = v.get("unavailable").and_then(Value::as_str) {
            eprintln!("netbench: {d} unavailable: {r}");
        }
        results.insert(d.clone(), v);
    }
    let results = Value::Object(results);
    report::check_shape(&results, &cli.datapaths)?;
    let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, text + "\n").map_err(|e| format!("{}: {e}", json_path.display()))?;

    let svg_rel = match (&cli.svg, &cli.markdown) {
        (Some(svg), Some(md)) => Some(relative_to(svg, md)),
        _ => None,
    };
    if let Some(dir) = &cli.profile {
        let cols: Vec<(String, Value)> = cli
            .datapaths
            .iter()
            .map(|d| (d.clone(), results[d]["profile"].clone()))
            .filter(|(_, v)| !v.is_null())
            .collect();
        let mut md = profile::markdown(&cols);
        let tcp_cols: Vec<(String, Value)> = cli
            .datapaths
            .iter()
            .map(|d| (d.clone(), results[d]["tcp_profile"].clone()))
            .filter(|(_, v)| !v.is_null())
            .collect();
        if !tcp_cols.is_empty() {
            md.push_str("\nTCP, single stream:\n\n");
            md.push_str(&profile::markdown(&tcp_cols));
        }
        println!("{md}");
        let path = dir.join("breakdown.md");
        std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let table = report::markdown(&results, &cli.datapaths, &stamp, svg_rel.as_deref());
    println!("{table}");
    print!("{}", report::ratios_text(&results, &cli.datapaths));
    if let Some(svg) = &cli.svg {
        std::fs::write(svg, report::svg(&results, &cli.datapaths, &stamp))
            .map_err(|e| format!("{}: {e}", svg.display()))?;
    }
    if let Some(md) = &cli.markdown {
        let doc = std::fs::read_to_string(md).unwrap_or_default();
        std::fs::write(
            md,
            report::update_section(&doc, MD_BEGIN, MD_GENERATED_END, MD_END, &table),
        )
        .map_err(|e| format!("{}: {e}", md.display()))?;
    }
    eprintln!("netbench: results in {}", json_path.display());
    Ok(())
}

/// `svg` as a link from the directory of `md` (both usually in docs/).
fn relative_to(svg: &Path, md: &Path) -> String {
    match (svg.parent(), md.parent()) {
        (Some(a), Some(b)) if a == b => {
            svg.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
        }
        _ => svg.to_string_lossy().into_owned(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Some(mode) => pod_mode(mode),
        None => bench(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netbench: {e}");
            ExitCode::FAILURE
        }
    }
}
