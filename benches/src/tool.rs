//! What the macro-benchmark binaries (`netbench`, `ctlbench`) share at start-up.

use std::path::{Path, PathBuf};

/// Whether this process runs with effective UID 0 (the benchmarks build network namespaces).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0")
}

/// linend: the `given` path, or the one beside the running benchmark `me` — rebuilt first through
/// cargo when the benchmark itself runs under `cargo run`, so a stale linend is never measured.
/// `tool` names the benchmark in messages.
///
/// # Errors
/// The given path does not exist, cargo failed to build linend, or no linend is beside `me`.
pub fn find_linend(given: Option<PathBuf>, me: &Path, tool: &str) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return if p.exists() {
            Ok(p)
        } else {
            Err(format!("--linend {}: no such file", p.display()))
        };
    }
    let dir = me.parent().ok_or_else(|| format!("{tool} has no directory"))?;
    if let Ok(cargo) = std::env::var("CARGO") {
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "linen-controlplane", "--bin", "linend"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        eprintln!("{tool}: building linend ({cmd:?})");
        let status = cmd.status().map_err(|e| format!("cargo build linend: {e}"))?;
        if !status.success() {
            return Err(format!("cargo build linend failed ({status})"));
        }
    }
    let p = dir.join("linend");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} not found: build it (`cargo build --release -p linen-controlplane --bin linend`) \
             or pass --linend",
            p.display()
        ))
    }
}
