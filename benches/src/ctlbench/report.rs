//! ctlbench's outputs: the JSON document and the Markdown section. Pure functions over the
//! measurements, unit-tested without a testbed.

use std::fmt::Write as _;

use serde_json::Value;

use super::{Measurement, CHURN_KEYS, LATENCY_KEYS, SYNC_KEYS};
use crate::netbench::report::Stamp;

/// The machine's 1/5/15-minute load averages (`/proc/loadavg`).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The JSON document: the stamp, the load average before and after, and one object per
/// measurement and run.
pub fn json(
    stamp: &Stamp,
    load_before: &str,
    load_after: &str,
    etcd_dir: &str,
    ms: &[Measurement],
) -> Value {
    serde_json::json!({
        "stamp": stamp.to_json(),
        "etcd_data_dir": etcd_dir,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "measurements": ms.iter().map(Measurement::to_json).collect::<Vec<_>>(),
    })
}

/// The keys a measurement object must carry.
pub fn keys_of(name: &str) -> &'static [&'static str] {
    match name {
        "lease_to_datapath" => &LATENCY_KEYS,
        "initial_sync" => &SYNC_KEYS,
        _ => &CHURN_KEYS,
    }
}

fn cell(m: &Measurement, key: &str) -> String {
    match m.fields.get(key) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "–".into(),
    }
}

fn table(out: &mut String, ms: &[&Measurement], cols: &[(&str, &str)]) {
    let _ = write!(out, "| run |");
    for (_, label) in cols {
        let _ = write!(out, " {label} |");
    }
    let _ = write!(out, "\n| --- |");
    for _ in cols {
        let _ = write!(out, " --- |");
    }
    out.push('\n');
    for m in ms {
        let _ = write!(out, "| {} |", m.run);
        for (key, _) in cols {
            let _ = write!(out, " {} |", cell(m, key));
        }
        out.push('\n');
    }
}

/// The Markdown section (without the markers).
pub fn markdown(
    stamp: &Stamp,
    load_before: &str,
    load_after: &str,
    etcd_dir: &str,
    ms: &[Measurement],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## Control-plane benchmark (ctlbench): etcd → linend → datapath\n");
    let _ = writeln!(
        s,
        "{}; load average {load_before} before, {load_after} after (2 shared cores: noisy). \
         Command: `{}`. One etcd 3.4 member, data directory {etcd_dir}.\n",
        stamp.line(),
        stamp.command
    );
    let of = |name: &str| ms.iter().filter(|m| m.name == name).collect::<Vec<_>>();
    let lat = of("lease_to_datapath");
    if !lat.is_empty() {
        let _ = writeln!(
            s,
            "**Lease put → route in the datapath** (target p99 ≤ 10 ms). A pod on n1 probes an \
             address in a subnet nobody holds; the time runs from just before the etcd put of a \
             new lease for it until the first VXLAN frame carrying a probe reaches the new \
             VTEP's address on the underlay: watch event, route snapshot published to the \
             workers, `linen.1` route and neighbour (the kernel needs them to hand the probe to \
             the datapath), encapsulation, one underlay hop. Resolution: the probe interval. \
             linend's own split (from its per-update log line, over puts and deletes): watch \
             event → snapshot published, → kernel programmed. \"put acked\" is the etcd \
             client's put round trip (etcd commits, with its WAL fsync, before it acknowledges \
             and before watchers see the change), so it is the etcd share of the interval.\n"
        );
        table(
            &mut s,
            &lat,
            &[
                ("datapath", "datapath"),
                ("leases", "leases"),
                ("detected", "seen"),
                ("p50_ms", "p50 ms"),
                ("p99_ms", "p99 ms"),
                ("max_ms", "max ms"),
                ("probe_interval_us", "probe every µs"),
                ("put_ack_p50_ms", "put acked p50 ms"),
                ("put_ack_p99_ms", "put acked p99 ms"),
                ("linend_publish_p50_ms", "linend publish p50 ms"),
                ("linend_publish_p99_ms", "publish p99 ms"),
                ("linend_programmed_p50_ms", "programmed p50 ms"),
                ("linend_programmed_p99_ms", "programmed p99 ms"),
            ],
        );
        let _ = writeln!(
            s,
            "\nLimits: most of the interval is etcd's commit (put acked) on a shared disk; \
             linend's part is a fraction of a millisecond; the rest is the probe interval \
             (resolution) and scheduling on 2 shared cores, which also makes the p99 and max \
             noisy."
        );
        s.push('\n');
    }
    let sync = of("initial_sync");
    if !sync.is_empty() {
        let _ = writeln!(
            s,
            "**Initial sync** (targets ≤ 2 s, ≤ 64 MiB). etcd holds N flanneld-format leases in \
             `10.0.0.0/8` (distinct PublicIPs and VtepMACs); from spawning linend until its log \
             says the snapshot with all N routes is published and `linen.1` is programmed \
             (polled every 2 ms; includes process and datapath start-up, the etcd listing and \
             the underlay next-hop look-ups); then the kernel's routes and neighbours on \
             `linen.1` are counted and linend's RSS is read. RSS without UMEM leaves out the \
             AF_XDP UMEM and ring mappings (`smaps`).\n"
        );
        table(
            &mut s,
            &sync,
            &[
                ("datapath", "datapath"),
                ("leases", "leases"),
                ("synced_routes", "routes"),
                ("kernel_routes", "kernel routes"),
                ("kernel_neighbours", "kernel neighbours"),
                ("sync_ms", "spawn → synced ms"),
                ("linend_publish_ms", "listing → published ms"),
                ("linend_programmed_ms", "→ programmed ms"),
                ("vm_rss_kib", "VmRSS KiB"),
                ("rss_without_umem_kib", "RSS w/o UMEM KiB"),
            ],
        );
        let _ = writeln!(
            s,
            "\nLimits: the publish column is the etcd listing and decode, the underlay \
             next-hop look-ups (one pipelined route look-up per distinct PublicIP, one neighbour \
             listing) and the snapshot build; the rest is the kernel inserting N routes and N \
             neighbours (pipelined netlink requests; route metrics spread, see etcd.md). RSS: \
             the peer map, the route snapshot and the kernel-state listings; with `xdp` the \
             UMEM adds a fixed 16 MiB."
        );
        s.push('\n');
    }
    let churn = of("churn");
    if !churn.is_empty() {
        let _ = writeln!(
            s,
            "**Route churn while traffic flows** (target zero lost). A paced UDP stream (64-byte \
             datagrams with sequence numbers) from a pod on n1 to a pod on n2 while etcd gets \
             lease adds, deletes and value updates of other subnets and re-puts of n2's lease \
             with a fresh etcd lease (as a renewal writes it), paced in one task with up to 64 \
             requests in flight; lost = sent − distinct received after a 0.5 s drain.\n"
        );
        table(
            &mut s,
            &churn,
            &[
                ("datapath", "datapath"),
                ("seconds", "s"),
                ("lease_changes", "lease changes"),
                ("changes_per_s", "changes/s"),
                ("stream_pps", "stream pps"),
                ("sent", "sent"),
                ("lost", "lost"),
                ("reordered", "reordered"),
                ("linend_updates", "linend updates"),
                ("linend_programmed_p99_ms", "programmed p99 ms"),
            ],
        );
        let _ = writeln!(
            s,
            "\nLimits: the stream is sleep-paced from one pod (1 ms bursts), the lease changes are \
             paced by one task and bounded by etcd's commit rate on this disk; linend folds \
             changes that arrive together into one update (hence fewer updates than changes). \
             Zero lost says that snapshot swaps and kernel updates under that load drop and \
             reorder nothing on the path between the two pods, not where the limit is."
        );
        s.push('\n');
    }
    s
}

/// Checks that every measurement object in `doc` carries its keys.
///
/// # Errors
/// The first missing key, named with its measurement.
pub fn check_shape(doc: &Value) -> Result<(), String> {
    let ms = doc["measurements"].as_array().ok_or("no measurements array")?;
    for m in ms {
        let name = m["measurement"].as_str().ok_or("a measurement without a name")?;
        for k in keys_of(name) {
            if m.get(*k).is_none() {
                return Err(format!("{name} has no key {k}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            cpu_model: "CPU".into(),
            cores: 2,
            kernel: "6.1".into(),
            date: "2026-11-22 06:00 UTC".into(),
            command: "ctlbench".into(),
        }
    }

    #[test]
    fn json_and_markdown_carry_every_measurement() {
        let mut f = serde_json::Map::new();
        for k in SYNC_KEYS {
            f.insert(k.into(), 1.into());
        }
        let m = Measurement { name: "initial_sync", run: 1, fields: f };
        let doc =
            json(&stamp(), "0.1 0.2 0.3", "0.4 0.5 0.6", "on tmpfs", std::slice::from_ref(&m));
        assert_eq!(doc["measurements"][0]["measurement"], "initial_sync");
        assert!(check_shape(&doc).is_ok());
        let md = markdown(&stamp(), "0.1 0.2 0.3", "0.4", "on tmpfs", &[m]);
        assert!(md.contains("**Initial sync**") && md.contains("| 1 |"), "{md}");
        assert!(!md.contains("**Lease put"));

        let bad = serde_json::json!({"measurements": [{"measurement": "churn", "lost": 0}]});
        assert_eq!(check_shape(&bad), Err("churn has no key seconds".to_string()));
    }
}
