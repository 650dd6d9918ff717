//! Smoke test of the macro benchmark: `netbench --quick --datapaths kernel,tap,direct` builds its
//! testbeds, measures, and writes a JSON document with every headline key — and every TCP figure
//! (one and eight streams, CPU per GB, the underlays with offloads on and with GRO on) — as a
//! positive number for every datapath, with the placement and the underlay settings it used. It
//! checks that each measurement measured something, never how fast: timings belong to the
//! benchmark, not to pass/fail tests.

use std::process::Command;
use std::time::Instant;

use linen_testbed::{require_root, workspace_bin};

const KEYS: [&str; 5] = ["pps_64", "tcp_gbps", "rr_p50_us", "rr_p99_us", "cpu_ns_per_pkt"];

/// The TCP figures every datapath gets, per stream count (`tcp`, `tcp8`) and underlay (`""`,
/// `_underlay_offloads`, `_underlay_gro`).
const TCP_KEYS: [&str; 3] = ["gbps", "cpu_s_per_gb", "cpu_s_per_gb_with_iperf3"];

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
        .args(["-k", "5", "200", "sh", "-c", "echo $$ >\"$0\" && exec \"$@\""])
        .arg(&pid_file)
        .arg(&netbench)
        .args(["--quick", "--datapaths", "kernel,tap,direct", "--fixed-rate", "20000", "--json"])
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
    for dp in ["kernel", "tap", "direct"] {
        for k in KEYS {
            let x = v[dp][k].as_f64();
            assert!(
                x.is_some_and(|x| x > 0.0 && x.is_finite()),
                "{dp}.{k} is {:?}, not a positive number:\n{text}\n{stderr}",
                v[dp][k]
            );
        }
        assert!(v[dp]["offered_pps"].as_f64().is_some_and(|x| x > 0.0), "{dp}: no offered rate");
        // The paced window ran: packets arrived, and the sender kept to its schedule (it may
        // fall behind a busy machine, never run ahead of it).
        for k in ["pps_64_at_rate", "cpu_ns_per_pkt_at_rate"] {
            assert!(v[dp][k].as_f64().is_some_and(|x| x > 0.0 && x.is_finite()), "{dp}.{k}");
        }
        let offered = v[dp]["offered_pps_at_rate"].as_f64().unwrap_or(0.0);
        assert!(offered > 0.0 && offered < 20000.0 * 1.2, "{dp}: offered {offered}/s at 20000/s");
        for p in ["tcp", "tcp8"] {
            for u in ["", "_underlay_offloads", "_underlay_gro"] {
                for k in TCP_KEYS {
                    let key = format!("{p}_{k}{u}");
                    let x = v[dp][&key].as_f64();
                    assert!(
                        x.is_some_and(|x| x > 0.0 && x.is_finite()),
                        "{dp}.{key} is {:?}, not a positive number:\n{text}\n{stderr}",
                        v[dp][&key]
                    );
                }
                // iperf3's own time only adds.
                let with = v[dp][format!("{p}_cpu_s_per_gb_with_iperf3{u}")].as_f64().unwrap();
                assert!(with >= v[dp][format!("{p}_cpu_s_per_gb{u}")].as_f64().unwrap());
                let run = &v[dp]["tcp_detail"][format!("{p}{u}")];
                assert!(run["bytes"].as_f64().is_some_and(|b| b > 0.0), "{dp} {p}{u}: {run}");
                assert!(run["cpu"]["per_cpu"].as_array().is_some_and(|c| !c.is_empty()));
            }
        }
        // Where things ran, for every datapath alike, and each window's per-CPU shares.
        assert_eq!(v[dp]["placement"]["pin"], "split", "{dp}");
        assert!(v[dp]["cpu_detail"]["per_cpu"].as_array().is_some_and(|c| !c.is_empty()));
        // The underlay settings were read back: GRO on with the offloads and in `gro`, transmit
        // checksums off in `wire` and `gro`.
        for n in ["n1", "n2"] {
            let eth0 = |u: &str| v[dp]["underlay"][u]["features"][n]["eth0"].clone();
            assert_eq!(eth0("wire")["tx-checksumming"], "off", "{dp} {n}");
            assert_eq!(eth0("offloads")["tx-checksumming"], "on", "{dp} {n}");
            assert_eq!(eth0("offloads")["generic-receive-offload"], "on", "{dp} {n}");
            assert_eq!(eth0("gro")["tx-checksumming"], "off", "{dp} {n}");
            assert_eq!(eth0("gro")["generic-receive-offload"], "on", "{dp} {n}");
        }
    }
    // linend's threads were pinned where the placement says, and read back.
    assert_eq!(v["tap"]["linend_cpus"]["n1"]["linen-tap-0"], v["tap"]["placement"]["linend"]);
    assert!(v["tap"]["tcp_linend_cpu_s_per_gb"].as_f64().is_some_and(|x| x > 0.0));
    assert!(v.get("xdp").is_none(), "xdp was not asked for");
    assert!(v["meta"]["stamp"]["kernel"].as_str().is_some_and(|k| !k.is_empty()));

    // The Markdown section replaced only what lies between the markers; the chart exists.
    let doc = std::fs::read_to_string(&md).expect("markdown");
    assert!(doc.starts_with("# Benchmarks\n<!-- netbench:begin -->\n"), "{doc}");
    assert!(doc.ends_with("<!-- netbench:end -->\nrest\n"), "{doc}");
    assert!(!doc.contains("\nold\n") && doc.contains("tap/kernel"), "{doc}");
    assert!(doc.contains("| TCP 8 streams (Gbit/s) |"), "{doc}");
    assert!(doc.contains("- CPUs (`--pin split`"), "{doc}");
    assert!(doc.contains("- Underlay `offloads`"), "{doc}");
    let chart = std::fs::read_to_string(&svg).expect("svg");
    assert!(chart.starts_with("<svg") && chart.contains("linen tap"));
    assert!(chart.contains("linen DirectRouting") && doc.contains("direct/kernel"), "{doc}");
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
