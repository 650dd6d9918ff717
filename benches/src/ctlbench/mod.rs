//! ctlbench, linen's control-plane benchmark: real etcd, real `linend` processes, netns testbeds.
//!
//! Three measurements ([`measure`]):
//!
//! 1. **Lease put → route in the datapath** ([`measure::lease_to_datapath`]): a pod on node n1
//!    sends a UDP probe every `probe_interval` to an address in a subnet no node holds; the
//!    benchmark puts a new flanneld-format lease for that subnet (its VTEP an address that a
//!    sink namespace on the underlay owns) and timestamps the first VXLAN frame carrying the
//!    probe that arrives at the sink. The interval covers the etcd put, linend's watch event,
//!    the route snapshot published to the workers, `linen.1`'s route and neighbour programmed
//!    (the kernel needs them to hand the probe to the datapath at all), the encapsulation by a
//!    worker and the underlay hop; its resolution is the probe interval. The lease is then
//!    deleted and the next subnet used. linend's own log line per update gives the split
//!    (watch event → snapshot published, → kernel programmed).
//! 2. **Initial sync** ([`measure::initial_sync`]): etcd pre-filled with N leases in a /8
//!    network, linend started; time from its spawn until it logs that the snapshot with all N
//!    routes is published and `linen.1` is programmed (polled every 2 ms); then the kernel's
//!    routes and neighbours on `linen.1` are counted, and linend's RSS read (`VmRSS`, and
//!    `smaps` without the AF_XDP UMEM and ring mappings).
//! 3. **Route churn while traffic flows** ([`measure::churn`]): a paced UDP stream with sequence
//!    numbers from a pod on n1 to a pod on n2 while etcd receives a paced mix of lease adds,
//!    deletes, value updates and re-puts of n2's own lease (as a renewal writes it); lost and
//!    reordered packets counted at the receiving pod.
//!
//! Output ([`report`]): one JSON object per measurement and run with the keys in
//! [`LATENCY_KEYS`], [`SYNC_KEYS`] and [`CHURN_KEYS`], and a Markdown section between
//! [`MD_BEGIN`] and [`MD_END`].
//!
//! ctlbench never touches the root namespace's addresses or routes: everything lives in the
//! testbeds' namespaces, deleted on drop. Every loop is bounded in count and time.

pub mod measure;
pub mod probe;
pub mod report;

use std::path::PathBuf;

/// The marker lines that delimit ctlbench's section in `docs/benchmarks.md`.
pub const MD_BEGIN: &str = "<!-- ctlbench:begin -->";
/// See [`MD_BEGIN`].
pub const MD_END: &str = "<!-- ctlbench:end -->";

/// Keys of a `lease_to_datapath` object.
pub const LATENCY_KEYS: [&str; 8] = [
    "leases",
    "detected",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "probe_interval_us",
    "linend_publish_p99_ms",
    "linend_programmed_p99_ms",
];
/// Keys of an `initial_sync` object.
pub const SYNC_KEYS: [&str; 7] = [
    "leases",
    "synced_routes",
    "kernel_routes",
    "kernel_neighbours",
    "sync_ms",
    "vm_rss_kib",
    "rss_without_umem_kib",
];
/// Keys of a `churn` object.
pub const CHURN_KEYS: [&str; 8] = [
    "seconds",
    "lease_changes",
    "changes_per_s",
    "sent",
    "received",
    "lost",
    "reordered",
    "linend_updates",
];

/// What to run, with how much.
#[derive(Debug, Clone)]
pub struct Options {
    /// linend's `--datapath` (`xdp` or `tap`).
    pub datapath: String,
    /// The linend binary.
    pub linend: PathBuf,
    /// New leases in measurement 1.
    pub leases: usize,
    /// Leases pre-filled for measurement 2.
    pub sync_leases: usize,
    /// Length of the churn in seconds.
    pub churn_secs: f64,
    /// Lease changes per second during the churn.
    pub churn_rate: u32,
    /// Packets per second of the stream during the churn.
    pub stream_pps: u32,
    /// How often each measurement is repeated.
    pub runs: usize,
}

/// One measurement's result: its name, run number and JSON fields.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// `lease_to_datapath`, `initial_sync` or `churn`.
    pub name: &'static str,
    /// 1-based run number.
    pub run: usize,
    /// The keys listed for this measurement (numbers, or `null` when unavailable) and extras.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Measurement {
    /// The JSON object written to `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("measurement".into(), self.name.into());
        m.insert("run".into(), self.run.into());
        for (k, v) in &self.fields {
            m.insert(k.clone(), v.clone());
        }
        serde_json::Value::Object(m)
    }
}

/// The `q` quantile (0..=1) of `v` (sorted in place), nearest-rank; `None` when empty.
pub fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_is_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), Some(50.0));
        assert_eq!(quantile(&mut v, 0.99), Some(99.0));
        assert_eq!(quantile(&mut v, 1.0), Some(100.0));
        assert_eq!(quantile(&mut [], 0.5), None);
        assert_eq!(quantile(&mut [7.0], 0.99), Some(7.0));
    }
}
