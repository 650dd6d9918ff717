//! cnibench: ADD latency (p50/p99, sequential) and 100-parallel ADD throughput of the `linen`
//! CNI plugin against the reference `bridge` + `host-local` plugins, in one run, on the same
//! machine, each on its own netns "node". Run by hand as root, with linen built in release:
//!
//! ```text
//! cargo build --release -p linen-cni
//! cargo run --release -p linen-benches --bin cnibench -- [--seq 200] [--par 100] [--rounds 3]
//! ```
//!
//! Every invocation is a real process (as a runtime runs plugins), spawned by a thread that has
//! entered the node namespace, so no `nsenter` sits in the measured time. Pods are namespaces
//! made by the testbed; everything is deleted at the end, also on failure.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linen_testbed::{Netns, Testbed};

struct Plugin {
    label: &'static str,
    binary: PathBuf,
    cni_path: String,
    conf: String,
}

struct Node {
    ns: Netns,
    pods: Vec<Netns>,
}

fn enter(ns: &Netns) {
    let f = File::open(ns.path()).expect("open netns");
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the node");
}

/// Runs one plugin invocation from the calling thread (already inside the node namespace) and
/// returns how long it took.
fn invoke(p: &Plugin, command: &str, id: &str, pod: &Netns) -> Duration {
    let start = Instant::now();
    let mut child = Command::new(&p.binary)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &p.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn plugin");
    child.stdin.take().expect("stdin").write_all(p.conf.as_bytes()).expect("write conf");
    let out = child.wait_with_output().expect("wait plugin");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{} {command} {id} failed: {}{}",
        p.label,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Numbers {
    add_p50: Duration,
    add_p99: Duration,
    del_p50: Duration,
    par_adds_per_s: Vec<f64>,
}

fn measure(p: &Plugin, node: &Node, seq: usize, par: usize, rounds: usize) -> Numbers {
    // Sequential: ADD latency for `seq` pods (warm-up of 5 not counted), then DEL each.
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(&node.ns);
            for (i, pod) in node.pods.iter().take(seq + 5).enumerate() {
                let t = invoke(p, "ADD", &format!("seq{i}"), pod);
                if i >= 5 {
                    adds.push(t);
                }
            }
            for (i, pod) in node.pods.iter().take(seq + 5).enumerate() {
                dels.push(invoke(p, "DEL", &format!("seq{i}"), pod));
            }
        });
    });
    adds.sort();
    dels.sort();
    // Parallel: `par` ADDs started at once, `rounds` times; throughput = par / wall time.
    let mut rates = Vec::new();
    for round in 0..rounds {
        let start = Instant::now();
        std::thread::scope(|s| {
            for (i, pod) in node.pods.iter().take(par).enumerate() {
                s.spawn(move || {
                    enter(&node.ns);
                    invoke(p, "ADD", &format!("par{round}-{i}"), pod);
                });
            }
        });
        rates.push(par as f64 / start.elapsed().as_secs_f64());
        std::thread::scope(|s| {
            for (i, pod) in node.pods.iter().take(par).enumerate() {
                s.spawn(move || {
                    enter(&node.ns);
                    invoke(p, "DEL", &format!("par{round}-{i}"), pod);
                });
            }
        });
    }
    Numbers {
        add_p50: percentile(&adds, 0.50),
        add_p99: percentile(&adds, 0.99),
        del_p50: percentile(&dels, 0.50),
        par_adds_per_s: rates,
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seq = arg(&args, "--seq", 200);
    let par = arg(&args, "--par", 100);
    let rounds = arg(&args, "--rounds", 3);
    let pods_needed = (seq + 5).max(par);

    let linen = linen_testbed::workspace_bin("linen");
    let reference = Path::new("/usr/lib/cni/bridge");
    assert!(reference.exists(), "install containernetworking-plugins for the reference plugins");
    let work = std::env::temp_dir().join(format!("linen-cnibench-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("temp dir");
    std::fs::write(
        work.join("subnet.env"),
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.8.1/22\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
    )
    .expect("subnet.env");

    let plugins = [
        Plugin {
            label: "linen",
            binary: linen.clone(),
            cni_path: linen.parent().expect("dir").display().to_string(),
            conf: serde_json::json!({
                "cniVersion": "1.0.0", "name": "bench", "type": "linen",
                "subnetFile": work.join("subnet.env"), "dataDir": work.join("ipam-linen"),
            })
            .to_string(),
        },
        Plugin {
            label: "bridge+host-local",
            binary: reference.to_path_buf(),
            cni_path: "/usr/lib/cni".to_string(),
            conf: serde_json::json!({
                "cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0",
                "isGateway": true, "ipMasq": false, "hairpinMode": true, "mtu": 1450,
                "ipam": {"type": "host-local", "dataDir": work.join("ipam-ref"),
                         "ranges": [[{"subnet": "10.244.8.0/22", "gateway": "10.244.8.1"}]],
                         "routes": [{"dst": "0.0.0.0/0"}]}
            })
            .to_string(),
        },
    ];

    let mut tb = Testbed::new("cnibench");
    let mut results = Vec::new();
    for (n, p) in plugins.iter().enumerate() {
        let ns = tb.netns(&format!("node{n}"));
        let pods = (0..pods_needed).map(|i| tb.netns(&format!("n{n}p{i}"))).collect();
        let node = Node { ns, pods };
        eprintln!("cnibench: {} ({} sequential ADDs, {rounds}x{par} parallel)", p.label, seq);
        results.push((p.label, measure(p, &node, seq, par, rounds)));
    }
    drop(tb);
    let _ = std::fs::remove_dir_all(&work);

    println!("| plugin | ADD p50 (ms) | ADD p99 (ms) | DEL p50 (ms) | {par}-parallel ADDs/s (each round) |");
    println!("|---|---:|---:|---:|---|");
    for (label, r) in &results {
        let rates: Vec<String> = r.par_adds_per_s.iter().map(|x| format!("{x:.0}")).collect();
        println!(
            "| {label} | {} | {} | {} | {} |",
            ms(r.add_p50),
            ms(r.add_p99),
            ms(r.del_p50),
            rates.join(", ")
        );
    }
    if let [(_, l), (_, r)] = results.as_slice() {
        let best = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        println!();
        println!(
            "linen / reference: ADD p50 {:.2}x, ADD p99 {:.2}x, parallel throughput {:.2}x (best rounds)",
            l.add_p50.as_secs_f64() / r.add_p50.as_secs_f64(),
            l.add_p99.as_secs_f64() / r.add_p99.as_secs_f64(),
            best(&l.par_adds_per_s) / best(&r.par_adds_per_s),
        );
    }
}
