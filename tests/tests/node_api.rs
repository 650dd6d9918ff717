//! linend's node API end to end (root): two etcd-mode nodes; `linenctl status`/`stats` inside a
//! node read the running daemon's lease, routes, readiness and counters, and `/metrics` carries
//! the per-reason drop counters.
use std::time::Duration;

use linen_testbed::cluster::{ClusterBuilder, Overlay};
use linen_testbed::{wait_for, workspace_bin, Netns};
use serde_json::Value;

fn linenctl(host: &Netns, args: &str) -> Option<Value> {
    let ctl = workspace_bin("linenctl");
    let out = host.sh_output(&format!("{} {args} --json", ctl.display()));
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn linenctl_reads_status_stats_and_metrics_from_a_running_linend() {
    let c = ClusterBuilder::new("api")
        .etcd()
        .nodes(2, Overlay::linen("tap"))
        .pods_per_node(1)
        .build()
        .expect("cluster");
    let (a, b) = (&c.nodes()[0], &c.nodes()[1]);
    assert!(c.wait_reachable(&a.pods[0], b.pod_ip(0), Duration::from_secs(15)), "pods never met");

    // Ready once the lease is held, the peer's route is in, and the datapath runs.
    let status = wait_for(Duration::from_secs(10), || {
        let v = linenctl(&a.host, "status")?;
        (v["status"]["ready"] == true && v["status"]["routes"] == 1).then_some(v)
    })
    .unwrap_or_else(|| panic!("n1 never ready: {:?}", linenctl(&a.host, "status")));
    let st = &status["status"];
    assert_eq!(st["datapath"], "tap", "{status}");
    assert_eq!(st["datapath_up"], true, "{status}");
    assert_eq!(st["etcd_connected"], true, "{status}");
    assert!(st["watch_revision"].as_i64().unwrap_or(0) > 0, "{status}");
    assert_eq!(st["workers"].as_array().map(Vec::len), Some(1), "{status}");
    assert!(st["lease"].is_object(), "{status}");

    let routes = linenctl(&a.host, "routes").expect("linenctl routes");
    assert!(routes.to_string().contains(&b.subnet()), "n2's subnet missing: {routes}");

    let stats = linenctl(&a.host, "stats").expect("linenctl stats");
    assert!(stats.to_string().contains("\"rx\""), "{stats}");

    let metrics =
        a.host.sh("printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' | socat - TCP:127.0.0.1:9472");
    assert!(metrics.contains("linen_worker_drops_total{"), "{metrics}");
    assert!(metrics.contains("reason=\"unknown_vtep\""), "{metrics}");
}
