//! `linenctl stats|routes|status` against a node API server on 127.0.0.1 (ephemeral port).

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use linen_controlplane::lease::MacAddr;
use linen_controlplane::metrics::{
    LeaseInfo, NodeState, RouteInfo, RoutesReport, Server, StatsReport, StatusReport,
};
use linen_dataplane::pipeline::{DropReason, WorkerStats};

fn linenctl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_linenctl"));
    cmd.args(args).env_remove("LINEN_API");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run linenctl")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "linenctl failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Starts a server on its own runtime thread; the thread ends with the test process.
fn start(state: NodeState) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let server = Server::bind("127.0.0.1:0".parse().unwrap(), state).await.unwrap();
            tx.send(server.local_addr().unwrap()).unwrap();
            server.run().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("server started")
}

fn node() -> NodeState {
    let state = NodeState::new();
    state.set_datapath("xdp");
    state.set_datapath_up(true);
    for q in 0..2u64 {
        let w = Arc::new(WorkerStats::new());
        w.add_rx(100 * (q + 1));
        for _ in 0..3 {
            w.add_drop(DropReason::UnknownVtep);
        }
        if q == 1 {
            w.add_drop(DropReason::NoRoute);
        }
        state.add_worker(format!("xdp-eth0-q{q}"), w, None);
    }
    state.set_routes(vec![
        RouteInfo {
            subnet: "10.244.2.0/24".parse().unwrap(),
            vtep: "192.168.50.2".parse().unwrap(),
            vtep_mac: MacAddr([0x0a, 0x58, 0, 0, 0, 2]),
        },
        RouteInfo {
            subnet: "10.244.3.0/24".parse().unwrap(),
            vtep: "192.168.50.3".parse().unwrap(),
            vtep_mac: MacAddr([0x0a, 0x58, 0, 0, 0, 3]),
        },
    ]);
    state.set_routes_synced(true);
    state.set_lease(Some(LeaseInfo {
        subnet: "10.244.1.0/24".parse().unwrap(),
        expires: Some(SystemTime::now() + Duration::from_secs(24 * 3600)),
    }));
    state.set_etcd_connected(true);
    state.set_watch_revision(42);
    state
}

#[test]
fn linenctl_reads_a_node_api() {
    let state = node();
    let addr = start(state.clone());
    let api = format!("http://{addr}");

    let status = stdout(&linenctl(&["status", "--api", &api], &[]));
    assert!(status.contains("node:      ready\n"), "{status}");
    assert!(status.contains("lease:     10.244.1.0/24, expires in 23h59m"), "{status}");
    assert!(
        status.contains("datapath:  xdp, up, 2 queue(s)/worker(s): xdp-eth0-q0 xdp-eth0-q1\n"),
        "{status}"
    );
    assert!(status.contains("routes:    2, synced\n"), "{status}");
    assert!(status.contains("etcd:      connected, watch at revision 42\n"), "{status}");
    assert!(status.contains("drops:     7 total: unknown_vtep 6, no_route 1\n"), "{status}");

    // The env mirror of --api.
    let stats = stdout(&linenctl(&["stats"], &[("LINEN_API", &api)]));
    let lines: Vec<&str> = stats.lines().collect();
    assert_eq!(lines[0], "datapath: xdp, 2 worker(s)");
    assert!(lines[1].starts_with("WORKER"), "{stats}");
    let row: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(row, ["1", "xdp-eth0-q1", "200", "0", "0", "0", "4"], "{stats}");
    let all: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(all, ["all", "300", "0", "0", "0", "7"], "{stats}");

    let json = stdout(&linenctl(&["stats", "--api", &api, "--json"], &[]));
    let report: StatsReport = serde_json::from_str(&json).unwrap();
    assert_eq!(report, state.stats_report());

    let routes = stdout(&linenctl(&["routes", "--api", &api], &[]));
    assert!(routes.starts_with("SUBNET               VTEP            VTEP MAC\n"), "{routes}");
    assert!(
        routes.contains("\n10.244.3.0/24        192.168.50.3    0a:58:00:00:00:03\n"),
        "{routes}"
    );
    assert!(routes.contains("0a:58:00:00:00:02"), "{routes}");
    assert!(routes.ends_with("2 route(s), synced, etcd revision 42\n"), "{routes}");
    let json = stdout(&linenctl(&["routes", "--api", &api, "--json"], &[]));
    let report: RoutesReport = serde_json::from_str(&json).unwrap();
    assert_eq!(report.count, 2);

    // An etcd outage shows on the status screen (and in --json).
    state.set_etcd_connected(false);
    let status = stdout(&linenctl(&["status", "--api", &api], &[]));
    assert!(
        status.contains(
            "node:      NOT READY: etcd unreachable; forwarding continues on 2 known routes\n"
        ),
        "{status}"
    );
    assert!(status.contains("etcd:      UNREACHABLE, last revision 42\n"), "{status}");
    let json = stdout(&linenctl(&["status", "--api", &api, "--json"], &[]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let st: StatusReport = serde_json::from_value(v["status"].clone()).unwrap();
    assert!(!st.ready);
    assert_eq!(st.etcd_connected, Some(false));
    assert_eq!(v["stats"]["total"]["drops"]["unknown_vtep"], 6);
}

#[test]
fn linenctl_reports_an_unreachable_node() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = linenctl(&["status", "--api", &format!("http://127.0.0.1:{port}")], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable"), "{err}");

    let out = linenctl(&["stats", "--api", "https://127.0.0.1:9472"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no TLS"));
}
