//! ctlbench: linen's control-plane benchmark (lease → datapath latency, initial sync of many
//! leases with RSS, route churn under traffic) against a real etcd and real linend processes in
//! network namespaces. Needs root.
//!
//! ```text
//! cargo run --release -p linen-benches --bin ctlbench -- --json ctlbench.json \
//!     --markdown docs/benchmarks.md [--datapath xdp|tap] [--runs 2] [--linend PATH]
//! ```
//!
//! See `linen_benches::ctlbench` for what each number covers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use linen_benches::ctlbench::measure::{self, SyncBed, TwoNodes};
use linen_benches::ctlbench::{report, Measurement, Options, MD_BEGIN, MD_END};
use linen_benches::netbench::report::{splice, Stamp};
use linen_benches::tool::{find_linend, is_root};

#[derive(Parser, Debug)]
#[command(about = "linen control-plane benchmark: etcd lease → datapath route, sync, churn")]
struct Cli {
    /// Write the results here (JSON).
    #[arg(long)]
    json: PathBuf,
    /// Put the Markdown section into this file (between the ctlbench markers).
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// linend's datapath.
    #[arg(long, default_value = "xdp", value_parser = ["xdp", "tap"])]
    datapath: String,
    /// New leases timed in the lease → datapath measurement.
    #[arg(long, default_value_t = 1000)]
    leases: usize,
    /// Leases pre-filled for the initial-sync measurement.
    #[arg(long, default_value_t = 10_000)]
    sync_leases: usize,
    /// Seconds of churn.
    #[arg(long, default_value_t = 10.0)]
    churn_secs: f64,
    /// Lease changes per second during the churn.
    #[arg(long, default_value_t = 1000)]
    churn_rate: u32,
    /// Packets per second of the stream during the churn.
    #[arg(long, default_value_t = 10_000)]
    stream_pps: u32,
    /// How often each measurement is repeated.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Which measurements to run: `latency`, `churn`, `sync` (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "latency,churn,sync",
          value_parser = ["latency", "churn", "sync"])]
    only: Vec<String>,
    /// The linend binary (default: beside this binary, built first when run through cargo).
    #[arg(long)]
    linend: Option<PathBuf>,
}

fn bench(cli: Cli) -> Result<(), String> {
    if !is_root() {
        return Err("ctlbench builds network namespaces: run it as root".into());
    }
    if cli.runs == 0 || cli.leases == 0 || cli.sync_leases == 0 || cli.sync_leases > 60_000 {
        return Err("--runs and --leases must be ≥ 1, --sync-leases 1..=60000".into());
    }
    if !(0.5..=120.0).contains(&cli.churn_secs) || !(1..=100_000).contains(&cli.stream_pps) {
        return Err("--churn-secs must be 0.5..=120 and --stream-pps 1..=100000".into());
    }
    let me = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let opts = Options {
        datapath: cli.datapath.clone(),
        linend: find_linend(cli.linend.clone(), &me, "ctlbench")?,
        leases: cli.leases,
        sync_leases: cli.sync_leases,
        churn_secs: cli.churn_secs,
        churn_rate: cli.churn_rate,
        stream_pps: cli.stream_pps,
        runs: cli.runs,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stamp = Stamp::here(cores, format!("ctlbench {}", args.join(" ")));
    let load_before = report::load_average();
    // The testbed's etcd keeps its data under the temporary directory ($TMPDIR).
    let tmp = std::env::temp_dir();
    let fs = std::process::Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&tmp)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let etcd_dir = format!("under {} ({fs})", tmp.display());
    let mut results: Vec<Measurement> = Vec::new();
    let show = |m: &Measurement| eprintln!("ctlbench: {}", m.to_json());

    let wanted = |m: &str| cli.only.iter().any(|o| o == m);
    if wanted("latency") || wanted("churn") {
        eprintln!("ctlbench: two nodes with etcd, datapath {}", opts.datapath);
        let bed = TwoNodes::build(&opts).map_err(|e| e.to_string())?;
        for run in 1..=opts.runs {
            if wanted("latency") {
                let m = measure::lease_to_datapath(&bed, &opts, run).map_err(|e| e.to_string())?;
                show(&m);
                results.push(m);
            }
            if wanted("churn") {
                let m = measure::churn(&bed, &opts, run).map_err(|e| e.to_string())?;
                show(&m);
                results.push(m);
            }
        }
    }
    if wanted("sync") {
        eprintln!("ctlbench: one node against {} leases", opts.sync_leases);
        let bed = SyncBed::build(&opts).map_err(|e| e.to_string())?;
        for run in 1..=opts.runs {
            let m = measure::initial_sync(&bed, &opts, run).map_err(|e| e.to_string())?;
            show(&m);
            results.push(m);
        }
    }
    let load_after = report::load_average();
    results.sort_by_key(|m| (m.name, m.run));
    let doc = report::json(&stamp, &load_before, &load_after, &etcd_dir, &results);
    report::check_shape(&doc)?;
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&cli.json, text + "\n")
        .map_err(|e| format!("write {}: {e}", cli.json.display()))?;
    if let Some(md) = &cli.markdown {
        let doc_text = std::fs::read_to_string(md).unwrap_or_default();
        let section = report::markdown(&stamp, &load_before, &load_after, &etcd_dir, &results);
        std::fs::write(md, splice(&doc_text, MD_BEGIN, MD_END, &section))
            .map_err(|e| format!("write {}: {e}", md.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match bench(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ctlbench: {e}");
            ExitCode::FAILURE
        }
    }
}
