//! The demo runs non-interactively and its connectivity matrix is complete (root).
use std::process::Command;

#[test]
fn demo_connects_every_pod_pair_and_leaves_nothing_behind() {
    linen_testbed::require_root();
    let out = Command::new(env!("CARGO_BIN_EXE_linen-demo"))
        .args(["--nodes", "3", "--pods", "2", "--bench-secs", "0"])
        .output()
        .expect("run linen-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "linen-demo failed:\n{stdout}\n{stderr}");
    // 3 nodes × 2 pods = 6 pods, 30 ordered pairs.
    assert!(stdout.contains("30/30 pairs connected"), "matrix incomplete:\n{stdout}");
    let rows =
        stdout.lines().filter(|l| l.trim_start().starts_with('n') && l.contains(" ok")).count();
    assert_eq!(rows, 6, "expected one matrix row per pod:\n{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let left = linen_testbed::run("ip", &["netns", "list"]);
    assert!(!left.contains("-demo"), "demo namespaces left behind:\n{left}");
}
