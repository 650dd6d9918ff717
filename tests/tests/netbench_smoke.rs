//! Smoke test of the macro benchmark: `netbench --quick --datapaths kernel,tap` builds its
//! testbeds, measures, and writes a JSON document with every headline key as a positive number
//! for both datapaths. It checks that each measurement measured something, never how fast:
//! timings belong to the benchmark, not to pass/fail tests.

use std::process::Command;
use std::time::Instant;

use linen_testbed::{require_root, workspace_bin};

const KEYS: [&str; 5] = ["pps_64", "tcp_gbps", "rr_p50_us", "rr_p99_us", "cpu_ns_per_pkt"];

#[test]
fn netbench_quick_measures_kernel_and_tap() {
    require_root();
    let netbench = workspace_bin("netbench");
    let linend = workspace_bin("linend");
    let dir = std::env::temp_dir().join(format!("linen-nbsmoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let json = dir.join("netbench.json");
    let md = dir.join("benchmarks.md");
    let svg = dir.join("netbench.svg");
    std::fs::write(
        &md,
        "# Benchmarks\n<!-- netbench:begin -->\nold\n<!-- netbench:end -->\nrest\n",
    )
    .expect("markdown");

    let t = Instant::now();
    // `timeout` bounds the whole run; netbench bounds each step itself well inside it. The shell
    // records its PID and execs netbench, whose namespaces carry that PID in their names.
    let pid_file = dir.join("netbench.pid");
    let out = Command::new("timeout")
        .args(["-k", "5", "100", "sh", "-c", "echo $$ >\"$0\" && exec \"$@\""])
        .arg(&pid_file)
        .arg(&netbench)
        .args(["--quick", "--datapaths", "kernel,tap", "--json"])
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .arg("--svg")
        .arg(&svg)
        .arg("--linend")
        .arg(&linend)
        .output()
        .expect("spawn netbench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "netbench failed ({}):\n{stdout}\n{stderr}", out.status);
    eprintln!("netbench --quick took {:.1} s\n{stdout}", t.elapsed().as_secs_f64());

    let text = std::fs::read_to_string(&json).expect("JSON written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    for dp in ["kernel", "tap"] {
        for k in KEYS {
            let x = v[dp][k].as_f64();
            assert!(
                x.is_some_and(|x| x > 0.0 && x.is_finite()),
                "{dp}.{k} is {:?}, not a positive number:\n{text}\n{stderr}",
                v[dp][k]
            );
        }
        assert!(v[dp]["offered_pps"].as_f64().is_some_and(|x| x > 0.0), "{dp}: no offered rate");
    }
    assert!(v.get("xdp").is_none(), "xdp was not asked for");
    assert!(v["meta"]["stamp"]["kernel"].as_str().is_some_and(|k| !k.is_empty()));

    // The Markdown section replaced only what lies between the markers; the chart exists.
    let doc = std::fs::read_to_string(&md).expect("markdown");
    assert!(doc.starts_with("# Benchmarks\n<!-- netbench:begin -->\n"), "{doc}");
    assert!(doc.ends_with("<!-- netbench:end -->\nrest\n"), "{doc}");
    assert!(!doc.contains("\nold\n") && doc.contains("tap/kernel"), "{doc}");
    let chart = std::fs::read_to_string(&svg).expect("svg");
    assert!(chart.starts_with("<svg") && chart.contains("linen tap"));
    assert!(stdout.contains("| metric |"), "no table on stdout: {stdout}");

    // Every namespace this netbench made (`lt-<tag>-<its PID>-…`) is gone; other runs on the
    // machine may have theirs.
    let pid = std::fs::read_to_string(&pid_file).expect("netbench PID");
    let listing = linen_testbed::run("ip", &["netns", "list"]);
    let left: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("lt-nb") && n.split('-').nth(2) == Some(pid.trim()))
        .collect();
    assert!(left.is_empty(), "netbench left namespaces behind: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
