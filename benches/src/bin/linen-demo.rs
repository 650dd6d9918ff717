//! `linen-demo`: linen's main job on one machine (run it through `scripts/demo.sh`, as root).
//!
//! Starts a real etcd and builds a cluster of N nodes as network namespaces on a shared underlay,
//! runs `linend` in etcd mode on each (AF_XDP datapath where it works, the TAP fallback
//! otherwise), attaches pods through the `linen`
//! CNI plugin, prints a connectivity matrix (every pod to every pod), then measures linen against
//! the kernel's VXLAN in flannel's configuration side by side and prints the ratios. Everything is
//! torn down on exit or Ctrl-C unless `--keep` is given.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use linen_benches::netbench::{harness, report};
use linen_testbed::cluster::{Cluster, ClusterBuilder, Overlay};
use linen_testbed::{cni, workspace_bin, Netns, Testbed};
use serde_json::Value;

#[derive(Parser, Debug)]
#[command(
    name = "linen-demo",
    about = "linen's demo cluster: nodes, pods, connectivity, comparison"
)]
struct Cli {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Pods per node (attached through the CNI plugin).
    #[arg(long, default_value_t = 2)]
    pods: usize,
    /// linend datapath: auto (AF_XDP, else TAP), xdp or tap.
    #[arg(long, default_value = "auto")]
    datapath: String,
    /// Seconds per measurement of the side-by-side comparison; 0 skips it.
    #[arg(long, default_value_t = 2.0)]
    bench_secs: f64,
    /// Leave the cluster up and print how to explore it.
    #[arg(long)]
    keep: bool,
}

/// A pod attached by the CNI plugin.
struct Pod {
    name: String,
    node: usize,
    ns: Netns,
    ip: Ipv4Addr,
    mac: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        if let Err(e) = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst)) {
            eprintln!("linen-demo: cannot install the Ctrl-C handler: {e}");
            return ExitCode::FAILURE;
        }
    }
    match run(&cli, &stop) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("linen-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn step(n: usize, total: usize, what: &str) {
    print!("[{n}/{total}] {what} … ");
    let _ = std::io::stdout().flush();
}

fn interrupted(stop: &AtomicBool) -> Result<(), String> {
    if stop.load(Ordering::SeqCst) {
        Err("interrupted: tearing down".into())
    } else {
        Ok(())
    }
}

fn run(cli: &Cli, stop: &AtomicBool) -> Result<bool, String> {
    if cli.nodes < 2 || cli.nodes > 200 || cli.pods == 0 || cli.pods > 50 {
        return Err("--nodes must be 2–200 and --pods 1–50".into());
    }
    let total = if cli.bench_secs > 0.0 { 5 } else { 4 };
    println!("linen demo: {} nodes × {} pods, datapath {}\n", cli.nodes, cli.pods, cli.datapath);

    let t = Instant::now();
    step(1, total, &format!("starting etcd and {} nodes with linend", cli.nodes));
    let cluster = ClusterBuilder::new("demo")
        .etcd()
        .nodes(cli.nodes, Overlay::linen(&cli.datapath))
        .pods_per_node(0)
        .build()
        .map_err(|e| format!("cluster: {e}"))?;
    let kinds: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| {
            let dp = n
                .linend
                .as_ref()
                .and_then(|l| std::fs::read_to_string(&l.stats).ok())
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                .and_then(|v| v["datapath"].as_str().map(str::to_string))
                .unwrap_or_else(|| "?".into());
            format!("{} {} ({dp})", n.name, n.subnet())
        })
        .collect();
    println!("done in {:.1} s\n      {}", t.elapsed().as_secs_f64(), kinds.join(", "));
    println!(
        "      control plane: etcd at {} (flannel's schema: each node claimed a subnet lease and follows the others)",
        cluster.etcd_endpoint().unwrap_or_else(|| "?".into())
    );
    interrupted(stop)?;

    let t = Instant::now();
    step(
        2,
        total,
        &format!("attaching {} pods through the linen CNI plugin", cli.nodes * cli.pods),
    );
    let mut pods_tb = Testbed::new("demop");
    let ipam = cluster.dir().join("ipam");
    let pods = attach_pods(&cluster, &mut pods_tb, cli.pods, &ipam)?;
    println!("done in {:.1} s", t.elapsed().as_secs_f64());
    for p in &pods {
        println!("      {:<8} node n{}  {:<12} {}", p.name, p.node + 1, p.ip, p.mac);
    }
    interrupted(stop)?;

    step(3, total, "pinging every pod from every pod");
    let (ok, total_pairs, matrix) = connectivity(&pods, stop);
    println!("{ok}/{total_pairs} pairs connected\n{matrix}");
    interrupted(stop)?;

    let mut good = ok == total_pairs;
    if cli.bench_secs > 0.0 {
        step(4, total, "side by side with the kernel's VXLAN (flannel's configuration)");
        println!();
        let linen_dp =
            if cli.datapath == "auto" { pick_auto(&cluster) } else { cli.datapath.clone() };
        let plan = harness::Plan::full(
            Duration::from_secs_f64(cli.bench_secs),
            workspace_bin("linend"),
            workspace_bin("netbench"),
        );
        let mut results = serde_json::Map::new();
        for dp in ["kernel", linen_dp.as_str()] {
            interrupted(stop)?;
            println!("      measuring {dp} …");
            results.insert(dp.to_string(), harness::measure(dp, &plan));
        }
        let results = Value::Object(results);
        let dps = vec!["kernel".to_string(), linen_dp.clone()];
        print_comparison(&results, &dps);
        println!("{}", report::ratios_text(&results, &dps));
        if results[&linen_dp].get("unavailable").is_some() {
            good = false;
        }
    }

    let last = total;
    if cli.keep {
        println!("\n[{last}/{last}] keeping the cluster up (--keep). Explore it:");
        for p in pods.iter().take(2) {
            println!(
                "      ip netns exec {} sh            # a shell in pod {} ({})",
                p.ns.name, p.name, p.ip
            );
        }
        for n in cluster.nodes() {
            if let Some(l) = &n.linend {
                println!("      cat {}   # {}'s linend counters", l.stats.display(), n.name);
            }
        }
        println!(
            "      Remove it with: for n in $(ip netns list | awk '/^lt-demo/{{print $1}}'); do ip netns pids $n | xargs -r kill; ip netns del $n; done"
        );
        println!("      (a later run of the demo or the tests also removes it)");
        std::mem::forget(pods_tb);
        std::mem::forget(cluster);
    } else {
        step(last, last, "tearing down");
        drop(pods_tb);
        drop(cluster);
        println!("done");
    }
    Ok(good)
}

fn pick_auto(cluster: &Cluster) -> String {
    cluster.nodes()[0]
        .linend
        .as_ref()
        .and_then(|l| std::fs::read_to_string(&l.stats).ok())
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v["datapath"].as_str().map(str::to_string))
        .unwrap_or_else(|| "tap".into())
}

/// Attaches `per_node` pods to every node with the CNI plugin's ADD, as a runtime would.
fn attach_pods(
    cluster: &Cluster,
    tb: &mut Testbed,
    per_node: usize,
    ipam: &Path,
) -> Result<Vec<Pod>, String> {
    let mut pods = Vec::new();
    for (k, node) in cluster.nodes().iter().enumerate() {
        let subnet_file = cluster.dir().join(format!("{}.subnet.env", node.name));
        let conf = cni::network_config(&subnet_file, &ipam.join(&node.name));
        for i in 0..per_node {
            let name = format!("{}p{}", node.name, i);
            let ns = tb.netns(&name);
            let result = cni::add_result(&node.host, &ns, &format!("demo-{name}"), &conf)?;
            let ip = cni::result_ipv4(&result)
                .ok_or_else(|| format!("CNI result for {name} has no address: {result}"))?;
            let mac = result["interfaces"]
                .as_array()
                .and_then(|ifs| ifs.iter().find(|i| i["sandbox"].is_string()))
                .and_then(|i| i["mac"].as_str())
                .unwrap_or("?")
                .to_string();
            pods.push(Pod { name, node: k, ns, ip, mac });
        }
    }
    Ok(pods)
}

/// Pings every pod from every other pod (up to three tries each); returns connected pairs, pairs
/// tried and the matrix as text.
fn connectivity(pods: &[Pod], stop: &AtomicBool) -> (usize, usize, String) {
    let mut ok = 0;
    let mut tried = 0;
    let mut text = format!("      {:<8}", "from\\to");
    for p in pods {
        text.push_str(&format!(" {:>6}", p.name));
    }
    text.push('\n');
    for src in pods {
        text.push_str(&format!("      {:<8}", src.name));
        for dst in pods {
            if src.name == dst.name {
                text.push_str(&format!(" {:>6}", "·"));
                continue;
            }
            tried += 1;
            let reached = !stop.load(Ordering::SeqCst)
                && (0..3).any(|_| {
                    Command::new("ip")
                        .args(["netns", "exec", &src.ns.name, "ping", "-c", "1", "-W", "1", "-q"])
                        .arg(dst.ip.to_string())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false)
                });
            if reached {
                ok += 1;
            }
            text.push_str(&format!(" {:>6}", if reached { "ok" } else { "FAIL" }));
        }
        text.push('\n');
    }
    (ok, tried, text)
}

fn print_comparison(results: &Value, dps: &[String]) {
    let rows: [(&str, &str); 5] = [
        ("pps_64", "64 B packets/s"),
        ("tcp_gbps", "TCP Gbit/s"),
        ("rr_p50_us", "RR p50 µs"),
        ("rr_p99_us", "RR p99 µs"),
        ("cpu_ns_per_pkt", "CPU ns/packet"),
    ];
    print!("      {:<16}", "");
    for dp in dps {
        print!(" {dp:>12}");
    }
    println!();
    for (key, label) in rows {
        print!("      {label:<16}");
        for dp in dps {
            let v = &results[dp.as_str()][key];
            let cell = match v.as_f64() {
                Some(x) if x >= 1000.0 => format!("{x:.0}"),
                Some(x) => format!("{x:.2}"),
                None => "n/a".to_string(),
            };
            print!(" {cell:>12}");
        }
        println!();
    }
    for dp in dps {
        if let Some(why) = results[dp.as_str()]["unavailable"].as_str() {
            println!("      {dp}: unavailable: {why}");
        }
    }
}
