//! `--stats-file`: the workers' counters as JSON, replaced atomically every
//! `--stats-interval-ms` for scripts and test harnesses. The numbers are the node API's
//! `/v1/stats` report ([`StatsReport`]); the file keeps its own shape: the datapath, the TAP send
//! mode and the VtepMAC at the top, and per worker the packet counters with `io` and `loop`
//! objects.

use serde::Serialize;

use crate::lease::MacAddr;
use crate::metrics::{Counters, StatsReport};

#[derive(Serialize)]
struct StatsFile<'a> {
    datapath: &'a str,
    tap_send: &'a str,
    vtep_mac: String,
    workers: Vec<WorkerEntry<'a>>,
}

#[derive(Serialize)]
struct WorkerEntry<'a> {
    #[serde(flatten)]
    counters: &'a Counters,
    io: IoEntry,
    #[serde(rename = "loop")]
    poll_loop: LoopEntry,
}

#[derive(Serialize)]
struct IoEntry {
    tx_failed: u64,
    rx_oversize: u64,
    kernel_unsupported: u64,
    errors: u64,
    super_rx: u64,
    coalesced_tx: u64,
    coalesced_segments: u64,
}

#[derive(Serialize)]
struct LoopEntry {
    busy_batches: u64,
    blocks: u64,
}

/// The file's text for `report`, from a daemon sending with `tap_send` and `linen.1`'s MAC.
pub(super) fn render(report: &StatsReport, tap_send: &str, vtep_mac: [u8; 6]) -> String {
    let workers = report
        .workers
        .iter()
        .map(|w| {
            let io = w.io.unwrap_or_default();
            WorkerEntry {
                counters: &w.counters,
                io: IoEntry {
                    tx_failed: io.tx_failed,
                    rx_oversize: io.rx_oversize,
                    kernel_unsupported: io.kernel_unsupported,
                    errors: io.io_errors,
                    super_rx: io.super_rx,
                    coalesced_tx: io.coalesced_tx,
                    coalesced_segments: io.coalesced_segments,
                },
                poll_loop: LoopEntry { busy_batches: io.busy_batches, blocks: io.blocks },
            }
        })
        .collect();
    let file = StatsFile {
        datapath: report.datapath.as_deref().unwrap_or("none"),
        tap_send,
        vtep_mac: MacAddr(vtep_mac).to_string(),
        workers,
    };
    serde_json::to_string(&file).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;

    use linen_dataplane::pipeline::{DropReason, WorkerStats};
    use linen_dataplane::worker::LoopStats;

    use super::*;
    use crate::metrics::NodeState;

    #[test]
    fn shows_each_worker_with_io_and_loop_counters() {
        let state = NodeState::new();
        state.set_datapath("xdp");
        let stats = Arc::new(WorkerStats::new());
        let loops = Arc::new(LoopStats::default());
        stats.add_rx(3);
        stats.add_drop(DropReason::NoRoute);
        loops.io_errors.store(2, Relaxed);
        loops.blocks.store(7, Relaxed);
        state.add_worker("xdp-0", stats, Some(loops));
        state.add_worker("xdp-1", Arc::new(WorkerStats::new()), None);

        let text = render(&state.stats_report(), "udp", [0x0e, 0, 0, 0, 0, 1]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["datapath"], "xdp");
        assert_eq!(v["tap_send"], "udp");
        assert_eq!(v["vtep_mac"], "0e:00:00:00:00:01");
        let w = &v["workers"][0];
        assert_eq!(w["rx"], 3);
        assert_eq!(w["drops"][DropReason::NoRoute.name()], 1);
        assert_eq!(w["io"]["errors"], 2);
        assert_eq!(w["loop"]["blocks"], 7);
        assert_eq!(v["workers"][1]["io"]["errors"], 0);
        assert_eq!(v["workers"].as_array().unwrap().len(), 2);
    }
}
