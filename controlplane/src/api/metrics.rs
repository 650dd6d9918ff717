//! The node-local HTTP API of `linend`: Prometheus metrics, health and readiness probes, and the
//! JSON views `linenctl stats|routes|status` read.
//!
//! | path         | answer |
//! |--------------|--------|
//! | `/metrics`   | Prometheus text format 0.0.4 (OpenMetrics on request), every name prefixed `linen_` |
//! | `/healthz`   | `200 ok`: the process is alive and its runtime answers |
//! | `/readyz`    | `200 ready` when the lease is held, routes are synced and the datapath is up; otherwise `503` with one `not ready: …` line per failed condition |
//! | `/v1/stats`  | [`StatsReport`] as JSON |
//! | `/v1/routes` | [`RoutesReport`] as JSON |
//! | `/v1/status` | [`StatusReport`] as JSON |
//!
//! The daemon owns a [`NodeState`] (a cheap clone of one shared handle), registers its workers'
//! [`WorkerStats`] with it and updates the lease, routes and etcd flags as they change; the server
//! only reads it. Worker counters are read with relaxed atomic loads at request time, so a scrape
//! never touches the packet path beyond reading its counters.
//!
//! The server is [`router`] (axum) on hyper's HTTP/1 connection builder, the same HTTP stack the
//! etcd client's gRPC already links: GET and HEAD on six fixed paths, one request per connection
//! (`Connection: close`), request heads capped at [`MAX_REQUEST_HEAD`] bytes (`431` beyond),
//! [`REQUEST_TIMEOUT`] for the head and for the whole exchange, at most [`MAX_CONNECTIONS`] served
//! at once. `/metrics` is encoded by `prometheus-client` from a collector that reads the state at
//! scrape time, in the Prometheus text format 0.0.4 or, when the `Accept` header asks for
//! `application/openmetrics-text`, in OpenMetrics 1.0. The API has no TLS and no authentication:
//! bind it to loopback or a management address (see docs/metrics.md).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use linen_dataplane::pipeline::{DropReason, StatsSnapshot, WorkerStats};
use linen_dataplane::worker::LoopStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    prometheus_text, text, DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::lease::MacAddr;

/// The address `linend --metrics-addr` and `linenctl --api` default to.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9472";

/// Longest request head (request line plus headers) the server reads; longer ones get `431`.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Time a client has to send its request head and read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 32;

/// Content type of `/metrics` (Prometheus text format 0.0.4).
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Content type of `/metrics` when the scraper asks for OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One route as the control plane installed it: a peer's pod subnet behind its VTEP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// The peer node's pod subnet.
    pub subnet: IpNet,
    /// The peer's VTEP (underlay) address, flannel's `PublicIP`.
    pub vtep: IpAddr,
    /// The MAC of the peer's overlay device, flannel's `VtepMAC`.
    #[serde(with = "mac_text")]
    pub vtep_mac: MacAddr,
}

/// The subnet lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The node's pod subnet.
    pub subnet: IpNet,
    /// When the lease expires unless renewed; `None` for a subnet that does not expire (static
    /// peers).
    pub expires: Option<SystemTime>,
}

impl From<&crate::watch::Peer> for RouteInfo {
    fn from(p: &crate::watch::Peer) -> RouteInfo {
        RouteInfo { subnet: p.subnet.into(), vtep: p.public_ip.into(), vtep_mac: p.vtep_mac }
    }
}

impl From<&crate::static_peers::StaticPeer> for RouteInfo {
    fn from(p: &crate::static_peers::StaticPeer) -> RouteInfo {
        RouteInfo {
            subnet: p.subnet.into(),
            vtep: p.public_ip.into(),
            vtep_mac: MacAddr(p.vtep_mac),
        }
    }
}

impl From<&crate::manager::Lease> for LeaseInfo {
    /// The lease's monotonic expiry mapped onto the wall clock as of now.
    fn from(l: &crate::manager::Lease) -> LeaseInfo {
        let now = Instant::now();
        let expires = if l.expires_at >= now {
            SystemTime::now() + (l.expires_at - now)
        } else {
            SystemTime::now() - (now - l.expires_at)
        };
        LeaseInfo { subnet: l.subnet.into(), expires: Some(expires) }
    }
}

/// A plain copy of a worker loop's [`LoopStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoCounters {
    /// Backend I/O errors (device or socket failures).
    pub io_errors: u64,
    /// Packets the backend failed to transmit.
    pub tx_failed: u64,
    /// Received packets too large for a buffer slot.
    pub rx_oversize: u64,
    /// Packets for the kernel path the backend could not hand over.
    pub kernel_unsupported: u64,
    /// Super-packets read from the overlay device (cut into segments by the worker).
    #[serde(default)]
    pub super_rx: u64,
    /// Packets written to the overlay device that merged several segments.
    #[serde(default)]
    pub coalesced_tx: u64,
    /// Segments merged into them.
    #[serde(default)]
    pub coalesced_segments: u64,
    /// Poll batches that received at least one packet.
    pub busy_batches: u64,
    /// Times the loop blocked after an idle spell.
    pub blocks: u64,
}

impl IoCounters {
    fn read(l: &LoopStats) -> IoCounters {
        IoCounters {
            io_errors: l.io_errors.load(Relaxed),
            tx_failed: l.tx_failed.load(Relaxed),
            rx_oversize: l.rx_oversize.load(Relaxed),
            kernel_unsupported: l.kernel_unsupported.load(Relaxed),
            super_rx: l.super_rx.load(Relaxed),
            coalesced_tx: l.coalesced_tx.load(Relaxed),
            coalesced_segments: l.coalesced_segments.load(Relaxed),
            busy_batches: l.busy_batches.load(Relaxed),
            blocks: l.blocks.load(Relaxed),
        }
    }
}

/// Packet counters of one worker, or summed over all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Frames received.
    pub rx: u64,
    /// Frames transmitted.
    pub tx: u64,
    /// Frames handed to the kernel path.
    pub to_kernel: u64,
    /// ICMP errors generated in reply.
    pub replies: u64,
    /// All drops, whatever the reason.
    pub drops_total: u64,
    /// Drops by [`DropReason::name`]; every reason is present, also at zero.
    pub drops: BTreeMap<String, u64>,
}

impl Counters {
    fn from_snapshot(s: &StatsSnapshot) -> Counters {
        Counters {
            rx: s.rx,
            tx: s.tx,
            to_kernel: s.to_kernel,
            replies: s.replies,
            drops_total: s.dropped_total(),
            drops: s.drops_by_reason().map(|(r, n)| (r.name().to_string(), n)).collect(),
        }
    }

    fn add(&mut self, other: &Counters) {
        self.rx = self.rx.wrapping_add(other.rx);
        self.tx = self.tx.wrapping_add(other.tx);
        self.to_kernel = self.to_kernel.wrapping_add(other.to_kernel);
        self.replies = self.replies.wrapping_add(other.replies);
        self.drops_total = self.drops_total.wrapping_add(other.drops_total);
        for (reason, n) in &other.drops {
            let slot = self.drops.entry(reason.clone()).or_default();
            *slot = slot.wrapping_add(*n);
        }
    }
}

/// One worker in [`StatsReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The worker's index: the `worker` label of its metrics.
    pub worker: usize,
    /// The worker's name (`tap-0`, `xdp-eth0-q1`, …).
    pub name: String,
    /// Its packet counters.
    #[serde(flatten)]
    pub counters: Counters,
    /// Its loop and backend counters, when the daemon registered them.
    pub io: Option<IoCounters>,
}

/// `/v1/stats`: per-worker packet counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// The datapath kind (`tap`, `xdp`), if one was set.
    pub datapath: Option<String>,
    /// Every registered worker, in registration order.
    pub workers: Vec<WorkerReport>,
    /// The workers' counters summed.
    pub total: Counters,
}

/// `/v1/routes`: the routes the workers forward by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesReport {
    /// Number of routes.
    pub count: usize,
    /// Whether the control plane has finished its initial sync and is following changes.
    pub synced: bool,
    /// The etcd revision the routes reflect, in etcd mode.
    pub watch_revision: Option<i64>,
    /// The routes, in the order the daemon published them.
    pub routes: Vec<RouteInfo>,
}

/// The lease in [`StatusReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReport {
    /// The node's pod subnet.
    pub subnet: IpNet,
    /// Expiry as Unix seconds; `null` for a subnet that does not expire.
    pub expires_unix: Option<u64>,
    /// Seconds until expiry (negative once expired); `null` for a subnet that does not expire.
    pub expires_in_s: Option<i64>,
    /// Whether the lease counts as held now (present and not expired).
    pub held: bool,
}

/// `/v1/status`: one screen about the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// linend's version.
    pub version: String,
    /// Whether `/readyz` answers 200.
    pub ready: bool,
    /// Why not, one line per failed condition (empty when ready).
    pub not_ready: Vec<String>,
    /// The datapath kind, if one was set.
    pub datapath: Option<String>,
    /// Whether the datapath is forwarding.
    pub datapath_up: bool,
    /// Names of the registered workers (one per queue).
    pub workers: Vec<String>,
    /// Number of routes.
    pub routes: usize,
    /// Whether routes are synced.
    pub routes_synced: bool,
    /// The lease, if one is held or was held.
    pub lease: Option<LeaseReport>,
    /// Whether etcd answers; `null` when the node does not use etcd.
    pub etcd_connected: Option<bool>,
    /// The etcd revision the watch has seen; `null` before the first or without etcd.
    pub watch_revision: Option<i64>,
    /// Process start as Unix seconds.
    pub started_unix: u64,
    /// Seconds since start.
    pub uptime_s: u64,
}

/// The result of the readiness rules (see [`NodeState::readiness`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Every condition holds.
    pub ready: bool,
    /// One line per failed condition.
    pub reasons: Vec<String>,
}

struct Worker {
    name: String,
    stats: Arc<WorkerStats>,
    io: Option<Arc<LoopStats>>,
}

struct Inner {
    datapath: Option<String>,
    datapath_up: bool,
    workers: Vec<Worker>,
    routes: Arc<[RouteInfo]>,
    routes_synced: bool,
    lease: Option<LeaseInfo>,
    etcd_connected: Option<bool>,
    watch_revision: Option<i64>,
    masq: Option<MasqInfo>,
    started: SystemTime,
}

/// What `--ip-masq` reports: whether the last write or check of the masquerade table succeeded,
/// and how often the table had to be restored after being deleted or changed outside linend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MasqInfo {
    ok: bool,
    restores: u64,
}

/// The daemon's state as the node API shows it: a cheap clone of one shared handle.
///
/// The daemon writes it (setters below) whenever something changes; the HTTP server reads it per
/// request. Every call takes one short uncontended lock and never blocks on I/O, so it may be
/// called from async tasks and from plain threads alike. Nothing here is on the packet path:
/// workers only bump their own [`WorkerStats`], which this handle reads.
#[derive(Clone)]
pub struct NodeState {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("NodeState")
            .field("datapath", &s.datapath)
            .field("workers", &s.workers.len())
            .field("routes", &s.routes.len())
            .field("lease", &s.lease)
            .finish_non_exhaustive()
    }
}

impl Default for NodeState {
    fn default() -> Self {
        NodeState::new()
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_secs_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_millis() as f64 / 1000.0)
}

/// Signed seconds from `now` to `t`.
fn secs_until(now: SystemTime, t: SystemTime) -> i64 {
    match t.duration_since(now) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

impl NodeState {
    /// Empty state: no datapath, workers, routes, lease or etcd; not ready. The start time is now.
    pub fn new() -> NodeState {
        NodeState {
            inner: Arc::new(Mutex::new(Inner {
                datapath: None,
                datapath_up: false,
                workers: Vec::new(),
                routes: Arc::from(Vec::new()),
                routes_synced: false,
                lease: None,
                etcd_connected: None,
                watch_revision: None,
                masq: None,
                started: SystemTime::now(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections below only assign fields and cannot leave the state half-written,
        // so a poisoned lock (a panic elsewhere while holding it) still guards consistent data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the datapath kind (`"tap"`, `"xdp"`) shown in metrics and status.
    pub fn set_datapath(&self, kind: &str) {
        self.lock().datapath = Some(kind.to_string());
    }

    /// Marks the datapath as forwarding (workers running) or not.
    pub fn set_datapath_up(&self, up: bool) {
        self.lock().datapath_up = up;
    }

    /// Registers a worker's counters, and its loop counters if the daemon has them. Returns the
    /// worker's index, its `worker` label in the metrics.
    pub fn add_worker(
        &self,
        name: impl Into<String>,
        stats: Arc<WorkerStats>,
        io: Option<Arc<LoopStats>>,
    ) -> usize {
        let mut s = self.lock();
        s.workers.push(Worker { name: name.into(), stats, io });
        s.workers.len() - 1
    }

    /// Forgets every worker (before a datapath restart registers new ones).
    pub fn clear_workers(&self) {
        self.lock().workers.clear();
    }

    /// Replaces the route list (each call after a published route snapshot).
    pub fn set_routes(&self, routes: Vec<RouteInfo>) {
        self.lock().routes = Arc::from(routes);
    }

    /// Marks routes as synced: initial list done and changes being followed.
    pub fn set_routes_synced(&self, synced: bool) {
        self.lock().routes_synced = synced;
    }

    /// Sets (or with `None` clears) the lease this node holds; call again after each renewal.
    pub fn set_lease(&self, lease: Option<LeaseInfo>) {
        self.lock().lease = lease;
    }

    /// Records whether etcd answers. Never calling it means "this node does not use etcd".
    pub fn set_etcd_connected(&self, connected: bool) {
        self.lock().etcd_connected = Some(connected);
    }

    /// Records the etcd revision the watch has processed.
    pub fn set_watch_revision(&self, revision: i64) {
        self.lock().watch_revision = Some(revision);
    }

    /// Records a write or check of the `--ip-masq` table: whether it succeeded, and whether it
    /// restored a table deleted or changed outside linend. The first call marks masquerading as
    /// enabled.
    pub fn record_masq(&self, ok: bool, restored: bool) {
        let mut s = self.lock();
        let m = s.masq.get_or_insert_with(MasqInfo::default);
        m.ok = ok;
        m.restores += u64::from(restored);
    }

    /// Copies a peer watcher's view after it yielded `update`: its peers as the route list,
    /// synced once its first listing is applied, its revision, and the etcd flag (`true` after
    /// peers arrived, `false` after [`WatchUpdate::Disconnected`](crate::watch::WatchUpdate)).
    ///
    /// The watcher reconnects inside `next` without yielding, so after an outage with no lease
    /// changes the flag stays `false` until the next change; a daemon that wants readiness back
    /// sooner also calls [`NodeState::set_etcd_connected`] from a periodic etcd check.
    pub fn observe_watch<R: crate::registry::Registry>(
        &self,
        w: &crate::watch::PeerWatcher<R>,
        update: &crate::watch::WatchUpdate,
    ) {
        let routes: Vec<RouteInfo> = w.peers().map(RouteInfo::from).collect();
        let mut s = self.lock();
        s.routes = Arc::from(routes);
        s.routes_synced = w.is_synced();
        if w.is_synced() {
            s.watch_revision = Some(w.revision());
        }
        s.etcd_connected =
            Some(matches!(update, crate::watch::WatchUpdate::Peers(_)) || w.is_connected());
    }

    /// The readiness rules at `now`: the lease is held (present, not expired), routes are synced,
    /// the datapath is up, and, for a node that uses etcd, etcd is reachable (without it the
    /// routes cannot be known to be current, though forwarding continues on the last ones).
    pub fn readiness_at(&self, now: SystemTime) -> Readiness {
        let s = self.lock();
        let mut reasons = Vec::new();
        match &s.lease {
            None => reasons.push("no subnet lease held".to_string()),
            Some(LeaseInfo { subnet, expires: Some(t) }) if *t <= now => {
                reasons.push(format!("lease for {subnet} expired {} s ago", secs_until(*t, now)))
            }
            Some(_) => {}
        }
        if !s.routes_synced {
            reasons.push("routes not synced".to_string());
        }
        if s.etcd_connected == Some(false) {
            reasons.push(format!(
                "etcd unreachable; forwarding continues on {} known routes",
                s.routes.len()
            ));
        }
        match (&s.datapath, s.datapath_up) {
            (None, _) => reasons.push("no datapath configured".to_string()),
            (Some(kind), false) => reasons.push(format!("datapath {kind} not up")),
            (Some(_), true) => {}
        }
        Readiness { ready: reasons.is_empty(), reasons }
    }

    /// [`NodeState::readiness_at`] now.
    pub fn readiness(&self) -> Readiness {
        self.readiness_at(SystemTime::now())
    }

    /// The `/v1/stats` answer.
    pub fn stats_report(&self) -> StatsReport {
        let s = self.lock();
        let mut total = Counters::from_snapshot(&StatsSnapshot::default());
        let workers: Vec<WorkerReport> = s
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let counters = Counters::from_snapshot(&w.stats.snapshot());
                total.add(&counters);
                WorkerReport {
                    worker: i,
                    name: w.name.clone(),
                    counters,
                    io: w.io.as_deref().map(IoCounters::read),
                }
            })
            .collect();
        StatsReport { datapath: s.datapath.clone(), workers, total }
    }

    /// The `/v1/routes` answer.
    pub fn routes_report(&self) -> RoutesReport {
        let (routes, synced, watch_revision) = {
            let s = self.lock();
            (s.routes.clone(), s.routes_synced, s.watch_revision)
        };
        RoutesReport { count: routes.len(), synced, watch_revision, routes: routes.to_vec() }
    }

    /// The `/v1/status` answer at `now`.
    pub fn status_report_at(&self, now: SystemTime) -> StatusReport {
        let readiness = self.readiness_at(now);
        let s = self.lock();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ready: readiness.ready,
            not_ready: readiness.reasons,
            datapath: s.datapath.clone(),
            datapath_up: s.datapath_up,
            workers: s.workers.iter().map(|w| w.name.clone()).collect(),
            routes: s.routes.len(),
            routes_synced: s.routes_synced,
            lease: s.lease.map(|l| LeaseReport {
                subnet: l.subnet,
                expires_unix: l.expires.map(unix_secs),
                expires_in_s: l.expires.map(|t| secs_until(now, t)),
                held: l.expires.is_none_or(|t| t > now),
            }),
            etcd_connected: s.etcd_connected,
            watch_revision: s.watch_revision,
            started_unix: unix_secs(s.started),
            uptime_s: now.duration_since(s.started).map_or(0, |d| d.as_secs()),
        }
    }

    /// The `/metrics` body at `now` in `format`.
    pub fn render_metrics_at(&self, now: SystemTime, format: MetricsFormat) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape { state: self.clone(), now }));
        let mut out = String::with_capacity(4096 + self.lock().workers.len() * 2048);
        // Writing to a String cannot fail, and the collector only fails when its writer does.
        let _ = match format {
            MetricsFormat::Prometheus => prometheus_text::encode(&mut out, &registry),
            MetricsFormat::OpenMetrics => text::encode(&mut out, &registry),
        };
        out
    }

    /// The `/metrics` body at `now`, in Prometheus text format 0.0.4.
    pub fn render_prometheus_at(&self, now: SystemTime) -> String {
        self.render_metrics_at(now, MetricsFormat::Prometheus)
    }

    /// [`NodeState::render_prometheus_at`] now.
    pub fn render_prometheus(&self) -> String {
        self.render_prometheus_at(SystemTime::now())
    }

    /// Writes every family at `now`. Families whose subject is absent (no lease, no etcd, no
    /// workers) are left out rather than reported as zero.
    fn encode_families(&self, enc: &mut DescriptorEncoder, now: SystemTime) -> fmt::Result {
        let readiness = self.readiness_at(now);
        let stats = self.stats_report();
        let s = self.lock();

        let version = [("version", env!("CARGO_PKG_VERSION"))];
        labelled_gauge(
            enc,
            "linen_build_info",
            "Always 1; the version label is linend's version.",
            [(&version, 1)],
        )?;
        gauge(
            enc,
            "linen_start_time_seconds",
            "Start time of linend, Unix seconds.",
            unix_secs_f64(s.started),
        )?;
        gauge(enc, "linen_ready", "1 when /readyz answers 200, else 0.", flag(readiness.ready))?;
        if let Some(kind) = &s.datapath {
            labelled_gauge(
                enc,
                "linen_datapath_info",
                "Always 1; the kind label names the datapath.",
                [(&[("kind", kind.as_str())], 1)],
            )?;
        }
        gauge(
            enc,
            "linen_datapath_up",
            "1 while the datapath workers are forwarding.",
            flag(s.datapath_up),
        )?;
        gauge(
            enc,
            "linen_workers",
            "Number of datapath workers (one per queue).",
            stats.workers.len() as i64,
        )?;

        let ids: Vec<String> = stats.workers.iter().map(|w| w.worker.to_string()).collect();
        let by_worker = |i: usize| [("worker", ids[i].as_str())];
        if !stats.workers.is_empty() {
            let info: Vec<_> = stats
                .workers
                .iter()
                .zip(&ids)
                .map(|(w, id)| ([("worker", id.as_str()), ("name", w.name.as_str())], 1))
                .collect();
            labelled_gauge(
                enc,
                "linen_worker_info",
                "Always 1; maps the worker label to the worker's name (its queue).",
                info.iter().map(|(l, v)| (l, *v)),
            )?;
        }
        let packet_counters: [CounterDef<Counters>; 4] = [
            ("linen_worker_rx_total", "Frames the worker received.", |c| c.rx),
            ("linen_worker_tx_total", "Frames the worker transmitted.", |c| c.tx),
            ("linen_worker_to_kernel_total", "Frames the worker handed to the kernel path.", |c| {
                c.to_kernel
            }),
            ("linen_worker_replies_total", "ICMP errors the worker generated in reply.", |c| {
                c.replies
            }),
        ];
        if !stats.workers.is_empty() {
            for (name, help, get) in packet_counters {
                let series: Vec<_> = stats
                    .workers
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (by_worker(i), get(&w.counters)))
                    .collect();
                counter(enc, name, help, series.iter().map(|(l, v)| (l, *v)))?;
            }
            let mut drops = Vec::with_capacity(stats.workers.len() * DropReason::COUNT);
            for (w, id) in stats.workers.iter().zip(&ids) {
                for reason in DropReason::ALL {
                    let n = w.counters.drops.get(reason.name()).copied().unwrap_or(0);
                    drops.push(([("worker", id.as_str()), ("reason", reason.name())], n));
                }
            }
            counter(
                enc,
                "linen_worker_drops_total",
                "Frames the worker dropped, by reason (see docs/metrics.md).",
                drops.iter().map(|(l, v)| (l, *v)),
            )?;
        }
        let io_counters: [CounterDef<IoCounters>; 9] = [
            (
                "linen_worker_io_errors_total",
                "Device or socket errors of the worker's backend.",
                |c| c.io_errors,
            ),
            ("linen_worker_tx_failed_total", "Packets the backend failed to transmit.", |c| {
                c.tx_failed
            }),
            (
                "linen_worker_rx_oversize_total",
                "Received packets too large for a buffer slot.",
                |c| c.rx_oversize,
            ),
            (
                "linen_worker_kernel_unsupported_total",
                "Packets for the kernel path the backend could not hand over.",
                |c| c.kernel_unsupported,
            ),
            (
                "linen_worker_super_rx_total",
                "Super-packets (segmentation offload) read from the overlay device.",
                |c| c.super_rx,
            ),
            (
                "linen_worker_coalesced_tx_total",
                "Packets written to the overlay device that merged several segments.",
                |c| c.coalesced_tx,
            ),
            (
                "linen_worker_coalesced_segments_total",
                "Segments merged into packets written to the overlay device.",
                |c| c.coalesced_segments,
            ),
            (
                "linen_worker_busy_batches_total",
                "Poll batches that received at least one packet.",
                |c| c.busy_batches,
            ),
            (
                "linen_worker_blocks_total",
                "Times the worker blocked in poll after an idle spell.",
                |c| c.blocks,
            ),
        ];
        if stats.workers.iter().any(|w| w.io.is_some()) {
            for (name, help, get) in io_counters {
                let series: Vec<_> = stats
                    .workers
                    .iter()
                    .enumerate()
                    .filter_map(|(i, w)| w.io.as_ref().map(|io| (by_worker(i), get(io))))
                    .collect();
                counter(enc, name, help, series.iter().map(|(l, v)| (l, *v)))?;
            }
        }

        gauge(
            enc,
            "linen_routes",
            "Routes to peer subnets the workers forward by.",
            s.routes.len() as i64,
        )?;
        gauge(
            enc,
            "linen_routes_synced",
            "1 once routes are synced and followed.",
            flag(s.routes_synced),
        )?;
        let held = s.lease.is_some_and(|l| l.expires.is_none_or(|t| t > now));
        gauge(
            enc,
            "linen_lease_held",
            "1 while this node holds an unexpired subnet lease.",
            flag(held),
        )?;
        if let Some(lease) = &s.lease {
            let subnet = lease.subnet.to_string();
            labelled_gauge(
                enc,
                "linen_lease_info",
                "Always 1; the subnet label is the node's subnet.",
                [(&[("subnet", subnet.as_str())], 1)],
            )?;
            if let Some(t) = lease.expires {
                gauge(
                    enc,
                    "linen_lease_expiry_timestamp_seconds",
                    "When the subnet lease expires unless renewed, Unix seconds.",
                    unix_secs_f64(t),
                )?;
            }
        }
        if let Some(connected) = s.etcd_connected {
            gauge(
                enc,
                "linen_etcd_connected",
                "1 while etcd answers, 0 during an outage.",
                flag(connected),
            )?;
        }
        if let Some(rev) = s.watch_revision {
            gauge(enc, "linen_watch_revision", "The etcd revision the route watch has seen.", rev)?;
        }
        gauge(
            enc,
            "linen_ip_masq_enabled",
            "1 when linend keeps masquerade rules (--ip-masq).",
            flag(s.masq.is_some()),
        )?;
        if let Some(masq) = s.masq {
            gauge(
                enc,
                "linen_ip_masq_rules_ok",
                "1 when the last write or check of the masquerade table succeeded.",
                flag(masq.ok),
            )?;
            counter(
                enc,
                "linen_ip_masq_restores_total",
                "Masquerade tables restored after being deleted or changed outside linend.",
                [(&NO_LABELS, masq.restores)],
            )?;
        }
        Ok(())
    }
}

/// The text formats `/metrics` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFormat {
    /// Prometheus text format 0.0.4 ([`PROMETHEUS_CONTENT_TYPE`]), the default.
    Prometheus,
    /// OpenMetrics 1.0 text ([`OPENMETRICS_CONTENT_TYPE`]), for scrapers that ask for it.
    OpenMetrics,
}

impl MetricsFormat {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` (with a non-zero quality), else the Prometheus text format.
    pub fn from_accept(accept: Option<&str>) -> MetricsFormat {
        let asks = accept.into_iter().flat_map(|a| a.split(',')).any(|range| {
            let mut params = range.split(';').map(str::trim);
            let is_om = params
                .next()
                .is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"));
            let refused = params.any(|p| {
                p.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()).is_some_and(|q| q <= 0.0)
            });
            is_om && !refused
        });
        if asks {
            MetricsFormat::OpenMetrics
        } else {
            MetricsFormat::Prometheus
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            MetricsFormat::Prometheus => PROMETHEUS_CONTENT_TYPE,
            MetricsFormat::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// One scrape: the state read at `now`, encoded by the registry it is registered with.
#[derive(Debug)]
struct Scrape {
    state: NodeState,
    now: SystemTime,
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.state.encode_families(&mut encoder, self.now)
    }
}

/// The label set of a family's only, unlabelled sample.
const NO_LABELS: [(&str, &str); 0] = [];

/// A per-worker counter family: name, HELP text, and how to read it from a report.
type CounterDef<T> = (&'static str, &'static str, fn(&T) -> u64);

fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// A gauge family with one unlabelled sample.
fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: V,
) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&value)
}

/// A gauge family with one sample per label set.
fn labelled_gauge<'l, L: EncodeLabelSet + 'l>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (&'l L, i64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        family.encode_family(labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// A counter family with one sample per label set. `name` is the sample name as documented
/// (ending in `_total`); the encoder adds the suffix where its format wants it.
fn counter<'l, L: EncodeLabelSet + 'l>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (&'l L, u64)>,
) -> fmt::Result {
    let base = name.strip_suffix("_total").unwrap_or(name);
    let mut family = enc.encode_descriptor(base, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        family.encode_family(labels)?.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// Serde for [`MacAddr`] as its colon-separated text.
mod mac_text {
    use super::MacAddr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(mac)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const PATHS: &str = "/metrics /healthz /readyz /v1/stats /v1/routes /v1/status";

/// The node API's routes: GET (and HEAD, which axum answers from the GET handler without the
/// body) on six fixed paths, `405` with `Allow: GET, HEAD` for other methods, `404` elsewhere.
/// Queries are ignored. Every answer carries `Cache-Control: no-store`.
pub fn router(state: NodeState) -> Router {
    let only_get = |handler: MethodRouter<NodeState>| handler.fallback(method_not_allowed);
    Router::new()
        .route("/metrics", only_get(get(metrics)))
        .route("/healthz", only_get(get(|| async { text(StatusCode::OK, "ok\n") })))
        .route("/readyz", only_get(get(readyz)))
        .route(
            "/v1/stats",
            only_get(get(|State(s): State<NodeState>| async move { json(&s.stats_report()) })),
        )
        .route(
            "/v1/routes",
            only_get(get(|State(s): State<NodeState>| async move { json(&s.routes_report()) })),
        )
        .route(
            "/v1/status",
            only_get(get(|State(s): State<NodeState>| async move {
                json(&s.status_report_at(SystemTime::now()))
            })),
        )
        .fallback(not_found)
        .layer(axum::middleware::map_response(no_store))
        .with_state(state)
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, TEXT)], body.into()).into_response()
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => ([(header::CONTENT_TYPE, JSON)], body).into_response(),
        Err(e) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the answer: {e}\n"))
        }
    }
}

async fn metrics(State(state): State<NodeState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = MetricsFormat::from_accept(accept);
    let body = state.render_metrics_at(SystemTime::now(), format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

async fn readyz(State(state): State<NodeState>) -> Response {
    let r = state.readiness();
    if r.ready {
        text(StatusCode::OK, "ready\n")
    } else {
        let body: String = r.reasons.iter().map(|l| format!("not ready: {l}\n")).collect();
        text(StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

async fn method_not_allowed(method: Method) -> Response {
    let mut resp =
        text(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed; use GET\n"));
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    resp
}

async fn not_found(uri: Uri) -> Response {
    text(StatusCode::NOT_FOUND, format!("no such path {:?}; this API serves {PATHS}\n", uri.path()))
}

async fn no_store(mut resp: Response) -> Response {
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The node API could not listen on its address.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the node API (--metrics-addr): {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why the bind failed.
    #[source]
    pub source: std::io::Error,
}

/// The node API server: bind it, then spawn [`Server::run`].
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    state: NodeState,
}

impl Server {
    /// Listens on `addr` (port 0 picks a free port; see [`Server::local_addr`]).
    ///
    /// # Errors
    /// [`BindError`] when the address is in use, not local, or needs privileges.
    pub async fn bind(addr: SocketAddr, state: NodeState) -> Result<Server, BindError> {
        let listener =
            TcpListener::bind(addr).await.map_err(|source| BindError { addr, source })?;
        Ok(Server { listener, state })
    }

    /// The address the server listens on.
    ///
    /// # Errors
    /// The socket's address cannot be read (not expected for a bound socket).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is dropped or aborted. Each connection runs in its own task, at most
    /// [`MAX_CONNECTIONS`] at once; accept errors (such as running out of descriptors) are logged
    /// and retried after a pause.
    pub async fn run(self) {
        let app = router(self.state);
        let mut http = http1::Builder::new();
        // One request per connection; heads longer than MAX_REQUEST_HEAD get 431 from hyper, and
        // a head not complete within REQUEST_TIMEOUT closes the connection. A client may shut
        // down its sending side after the request (`printf … | socat`, `nc -N`) and still gets
        // the answer.
        http.keep_alive(false)
            .half_close(true)
            .max_buf_size(MAX_REQUEST_HEAD)
            .timer(TokioTimer::new())
            .header_read_timeout(REQUEST_TIMEOUT)
            .title_case_headers(true);
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return; // the semaphore is never closed
            };
            match self.listener.accept().await {
                Ok((stream, _peer)) => {
                    let conn = http.serve_connection(
                        TokioIo::new(stream),
                        TowerToHyperService::new(app.clone()),
                    );
                    tokio::spawn(async move {
                        // The whole exchange, answer included, has REQUEST_TIMEOUT.
                        match tokio::time::timeout(REQUEST_TIMEOUT, conn).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, "node API: connection failed")
                            }
                            Err(_) => {
                                tracing::debug!("node API: client too slow, connection closed")
                            }
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "node API: accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linen_dataplane::pipeline::{Action, DropReason, WorkerStats};
    use std::collections::{HashMap, HashSet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn route(subnet: &str, vtep: &str, mac: u8) -> RouteInfo {
        RouteInfo {
            subnet: subnet.parse().unwrap(),
            vtep: vtep.parse().unwrap(),
            vtep_mac: MacAddr([0x02, 0, 0, 0, 0, mac]),
        }
    }

    /// Two workers with distinct counts, every drop reason counted on worker 1 (reason i counted
    /// i + 1 times), a lease, routes and etcd state.
    fn populated(now: SystemTime) -> NodeState {
        let state = NodeState::new();
        state.set_datapath("xdp");
        state.set_datapath_up(true);
        let w0 = Arc::new(WorkerStats::new());
        w0.add_rx(10);
        w0.record(&Action::ToKernel);
        let w1 = Arc::new(WorkerStats::new());
        w1.add_rx(300);
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            for _ in 0..=i {
                w1.add_drop(*reason);
            }
        }
        let io = Arc::new(LoopStats::default());
        io.busy_batches.store(7, Relaxed);
        assert_eq!(state.add_worker("xdp-eth0-q0", w0, None), 0);
        assert_eq!(state.add_worker("xdp-eth0-q1", w1, Some(io)), 1);
        state.set_routes(vec![
            route("10.244.2.0/24", "192.168.50.2", 2),
            route("10.244.3.0/24", "192.168.50.3", 3),
        ]);
        state.set_routes_synced(true);
        state.set_lease(Some(LeaseInfo {
            subnet: "10.244.1.0/24".parse().unwrap(),
            expires: Some(now + Duration::from_secs(3600)),
        }));
        state.set_etcd_connected(true);
        state.set_watch_revision(42);
        state
    }

    /// A parsed sample line: name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    fn valid_metric_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn valid_label_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !n.starts_with("__")
    }

    /// A strict reader of the text exposition format, for what the renderer emits: checks that
    /// each family has HELP then TYPE before its samples, names and labels are valid, label
    /// values are properly quoted, no series repeats, and counters end in `_total`.
    fn parse_exposition(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "the exposition ends with a newline");
        let mut types: HashMap<String, String> = HashMap::new();
        let mut helped: HashSet<String> = HashSet::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            assert!(!line.is_empty(), "no blank lines");
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a text");
                assert!(valid_metric_name(name), "HELP name {name}");
                assert!(!help.is_empty());
                assert!(helped.insert(name.to_string()), "one HELP per family: {name}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert!(helped.contains(name), "HELP before TYPE for {name}");
                assert!(["counter", "gauge"].contains(&kind), "type {kind}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter {name} ends in _total");
                }
                assert!(types.insert(name.to_string(), kind.to_string()).is_none());
                continue;
            }
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), Vec::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels close");
                    let mut labels = Vec::new();
                    let mut rest = body;
                    while !rest.is_empty() {
                        let (k, after) = rest.split_once("=\"").expect("label =\"");
                        assert!(valid_label_name(k), "label name {k}");
                        let mut v = String::new();
                        let mut chars = after.char_indices();
                        let end = loop {
                            match chars.next().expect("label value closes") {
                                (i, '"') => break i,
                                (_, '\\') => match chars.next().expect("escape").1 {
                                    'n' => v.push('\n'),
                                    c @ ('\\' | '"') => v.push(c),
                                    c => panic!("bad escape \\{c}"),
                                },
                                (_, c) => v.push(c),
                            }
                        };
                        labels.push((k.to_string(), v));
                        rest = &after[end + 1..];
                        rest = rest.strip_prefix(',').unwrap_or(rest);
                    }
                    (name.to_string(), labels)
                }
            };
            assert!(valid_metric_name(&name), "metric name {name}");
            assert!(name.starts_with("linen_"), "prefix: {name}");
            assert!(types.contains_key(&name), "TYPE before the samples of {name}");
            assert!(seen.insert(series.to_string()), "series repeated: {series}");
            samples.push((name, labels, value));
        }
        samples
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels.iter().all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.2)
    }

    #[test]
    fn prometheus_text_has_every_metric_and_reason() {
        let now = SystemTime::now();
        let state = populated(now);
        let text = state.render_prometheus_at(now);
        let samples = parse_exposition(&text);

        assert_eq!(value(&samples, "linen_ready", &[]), Some(1.0));
        assert_eq!(value(&samples, "linen_datapath_info", &[("kind", "xdp")]), Some(1.0));
        assert_eq!(value(&samples, "linen_datapath_up", &[]), Some(1.0));
        assert_eq!(value(&samples, "linen_workers", &[]), Some(2.0));
        let info = [("worker", "1"), ("name", "xdp-eth0-q1")];
        assert_eq!(value(&samples, "linen_worker_info", &info), Some(1.0));
        assert_eq!(value(&samples, "linen_worker_rx_total", &[("worker", "0")]), Some(10.0));
        assert_eq!(value(&samples, "linen_worker_rx_total", &[("worker", "1")]), Some(300.0));
        assert_eq!(value(&samples, "linen_worker_to_kernel_total", &[("worker", "0")]), Some(1.0));
        assert_eq!(value(&samples, "linen_worker_tx_total", &[("worker", "1")]), Some(0.0));
        assert_eq!(value(&samples, "linen_worker_replies_total", &[("worker", "1")]), Some(0.0));
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            let labels0 = [("worker", "0"), ("reason", reason.name())];
            let labels1 = [("worker", "1"), ("reason", reason.name())];
            assert_eq!(value(&samples, "linen_worker_drops_total", &labels0), Some(0.0));
            assert_eq!(
                value(&samples, "linen_worker_drops_total", &labels1),
                Some((i + 1) as f64),
                "{reason}"
            );
        }
        let drops = samples.iter().filter(|s| s.0 == "linen_worker_drops_total").count();
        assert_eq!(drops, 2 * DropReason::COUNT);
        // Loop counters only for the worker that registered them.
        assert_eq!(
            value(&samples, "linen_worker_busy_batches_total", &[("worker", "1")]),
            Some(7.0)
        );
        assert_eq!(value(&samples, "linen_worker_busy_batches_total", &[("worker", "0")]), None);
        assert_eq!(value(&samples, "linen_routes", &[]), Some(2.0));
        assert_eq!(value(&samples, "linen_routes_synced", &[]), Some(1.0));
        assert_eq!(value(&samples, "linen_lease_held", &[]), Some(1.0));
        assert_eq!(value(&samples, "linen_lease_info", &[("subnet", "10.244.1.0/24")]), Some(1.0));
        let expiry = value(&samples, "linen_lease_expiry_timestamp_seconds", &[]).unwrap();
        assert!((expiry - unix_secs_f64(now) - 3600.0).abs() < 1.0, "{expiry}");
        assert_eq!(value(&samples, "linen_etcd_connected", &[]), Some(1.0));
        assert_eq!(value(&samples, "linen_watch_revision", &[]), Some(42.0));
        assert_eq!(
            value(&samples, "linen_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
            Some(1.0)
        );
        assert!(text.contains("# TYPE linen_worker_drops_total counter\n"), "{text}");
        assert!(
            text.contains("linen_worker_drops_total{worker=\"1\",reason=\"unknown_vtep\"} 11\n")
        );
    }

    #[test]
    fn empty_state_renders_valid_text_and_is_not_ready() {
        let state = NodeState::new();
        let samples = parse_exposition(&state.render_prometheus());
        assert_eq!(value(&samples, "linen_ready", &[]), Some(0.0));
        assert_eq!(value(&samples, "linen_workers", &[]), Some(0.0));
        assert_eq!(value(&samples, "linen_lease_held", &[]), Some(0.0));
        // Absent, not zero: a node without etcd has no etcd series.
        assert_eq!(value(&samples, "linen_etcd_connected", &[]), None);
        assert!(!samples.iter().any(|s| s.0 == "linen_worker_drops_total"));
        let r = state.readiness();
        assert!(!r.ready);
        assert_eq!(
            r.reasons,
            ["no subnet lease held", "routes not synced", "no datapath configured"]
        );
    }

    #[test]
    fn masquerade_series_follow_the_checks() {
        let state = NodeState::new();
        let samples = parse_exposition(&state.render_prometheus());
        assert_eq!(value(&samples, "linen_ip_masq_enabled", &[]), Some(0.0));
        assert_eq!(value(&samples, "linen_ip_masq_rules_ok", &[]), None);
        state.record_masq(true, false);
        state.record_masq(true, true);
        state.record_masq(false, false);
        let samples = parse_exposition(&state.render_prometheus());
        assert_eq!(value(&samples, "linen_ip_masq_enabled", &[]), Some(1.0));
        assert_eq!(value(&samples, "linen_ip_masq_rules_ok", &[]), Some(0.0));
        assert_eq!(value(&samples, "linen_ip_masq_restores_total", &[]), Some(1.0));
        state.record_masq(true, true);
        let samples = parse_exposition(&state.render_prometheus());
        assert_eq!(value(&samples, "linen_ip_masq_rules_ok", &[]), Some(1.0));
        assert_eq!(value(&samples, "linen_ip_masq_restores_total", &[]), Some(2.0));
    }

    #[test]
    fn label_values_are_escaped() {
        let state = NodeState::new();
        state.set_datapath("we\"ird\\kind\nx");
        let samples = parse_exposition(&state.render_prometheus());
        assert_eq!(
            value(&samples, "linen_datapath_info", &[("kind", "we\"ird\\kind\nx")]),
            Some(1.0)
        );
    }

    #[test]
    fn readiness_rules() {
        let now = SystemTime::now();
        let state = populated(now);
        assert_eq!(state.readiness_at(now), Readiness { ready: true, reasons: vec![] });

        // An expired lease is not held.
        let r = state.readiness_at(now + Duration::from_secs(3700));
        assert!(!r.ready);
        assert_eq!(r.reasons, ["lease for 10.244.1.0/24 expired 100 s ago"]);
        let samples =
            parse_exposition(&state.render_prometheus_at(now + Duration::from_secs(3700)));
        assert_eq!(value(&samples, "linen_lease_held", &[]), Some(0.0));

        state.set_etcd_connected(false);
        assert_eq!(
            state.readiness_at(now).reasons,
            ["etcd unreachable; forwarding continues on 2 known routes"]
        );
        state.set_etcd_connected(true);

        state.set_datapath_up(false);
        assert_eq!(state.readiness_at(now).reasons, ["datapath xdp not up"]);
        state.set_datapath_up(true);

        state.set_routes_synced(false);
        assert_eq!(state.readiness_at(now).reasons, ["routes not synced"]);
        state.set_routes_synced(true);

        // A lease without expiry (static peers) is held forever.
        state
            .set_lease(Some(LeaseInfo { subnet: "10.244.9.0/24".parse().unwrap(), expires: None }));
        assert!(state.readiness_at(now + Duration::from_secs(1 << 30)).ready);
    }

    #[test]
    fn reports_round_trip_through_json() {
        let now = SystemTime::now();
        let state = populated(now);
        let stats = state.stats_report();
        assert_eq!(stats.total.rx, 310);
        assert_eq!(stats.total.drops_total, (1..=DropReason::COUNT as u64).sum::<u64>());
        assert_eq!(stats.workers[1].counters.drops.len(), DropReason::COUNT);
        assert_eq!(stats.workers[1].io.unwrap().busy_batches, 7);
        let back: StatsReport =
            serde_json::from_str(&serde_json::to_string(&stats).unwrap()).unwrap();
        assert_eq!(back, stats);

        let routes = state.routes_report();
        let json = serde_json::to_value(&routes).unwrap();
        assert_eq!(json["routes"][0]["vtep_mac"], "02:00:00:00:00:02");
        assert_eq!(json["routes"][0]["subnet"], "10.244.2.0/24");
        assert_eq!(json["watch_revision"], 42);
        let back: RoutesReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, routes);

        let status = state.status_report_at(now);
        assert!(status.ready);
        assert_eq!(status.lease.as_ref().unwrap().expires_in_s, Some(3600));
        assert_eq!(status.workers, ["xdp-eth0-q0", "xdp-eth0-q1"]);
        let back: StatusReport =
            serde_json::from_str(&serde_json::to_string(&status).unwrap()).unwrap();
        assert_eq!(back, status);
    }

    #[test]
    fn route_from_a_static_peer() {
        let peer = crate::static_peers::StaticPeer {
            subnet: "10.244.7.0/24".parse().unwrap(),
            public_ip: "192.168.50.7".parse().unwrap(),
            vtep_mac: [0x02, 0, 0, 0, 0, 7],
        };
        assert_eq!(RouteInfo::from(&peer), route("10.244.7.0/24", "192.168.50.7", 7));
    }

    #[tokio::test]
    async fn observes_a_peer_watcher_through_an_outage() {
        use crate::lease::VxlanLease;
        use crate::registry::MemoryRegistry;
        use crate::watch::{PeerWatcher, WatchUpdate};

        let reg = MemoryRegistry::new();
        let lease = VxlanLease {
            public_ip: "192.168.50.2".parse().unwrap(),
            vni: 1,
            vtep_mac: MacAddr([0x02, 0, 0, 0, 0, 2]),
        };
        reg.put_raw("10.244.2.0-24", lease.to_json());
        let mut w = PeerWatcher::new(reg.clone(), None);
        let state = NodeState::new();
        state.set_datapath("tap");
        state.set_datapath_up(true);
        state
            .set_lease(Some(LeaseInfo { subnet: "10.244.1.0/24".parse().unwrap(), expires: None }));
        assert_eq!(state.readiness().reasons, ["routes not synced"]);

        let step = Duration::from_secs(5);
        let update = tokio::time::timeout(step, w.next()).await.expect("first listing");
        state.observe_watch(&w, &update);
        assert!(state.readiness().ready, "{:?}", state.readiness());
        let routes = state.routes_report();
        assert_eq!(routes.routes, [route("10.244.2.0/24", "192.168.50.2", 2)]);
        assert_eq!(routes.watch_revision, Some(reg.revision()));

        reg.set_down(true);
        let update = tokio::time::timeout(step, w.next()).await.expect("outage seen");
        assert!(matches!(update, WatchUpdate::Disconnected { .. }), "{update:?}");
        state.observe_watch(&w, &update);
        assert_eq!(
            state.readiness().reasons,
            ["etcd unreachable; forwarding continues on 1 known routes"]
        );
        assert_eq!(state.routes_report().count, 1, "routes kept through the outage");

        // etcd is back and a node joins: ready again, with the new route.
        reg.set_down(false);
        reg.put_raw(
            "10.244.3.0-24",
            VxlanLease {
                public_ip: "192.168.50.3".parse().unwrap(),
                vtep_mac: MacAddr([0x02, 0, 0, 0, 0, 3]),
                ..lease
            }
            .to_json(),
        );
        let update = tokio::time::timeout(step, w.next()).await.expect("change after the outage");
        state.observe_watch(&w, &update);
        assert!(state.readiness().ready, "{:?}", state.readiness());
        assert_eq!(state.routes_report().count, 2);
    }

    /// Sends `request`, shuts down the sending side (as `printf … | socat` does) and reads the
    /// whole answer.
    async fn raw_request(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let resp = raw_request(addr, req.as_bytes()).await;
        let (head, body) = resp.split_once("\r\n\r\n").expect("head and body");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("Content-Length")
            .parse()
            .unwrap();
        assert_eq!(len, body.len(), "Content-Length matches the body");
        (status, head.to_string(), body.to_string())
    }

    #[tokio::test]
    async fn http_server_serves_every_path_and_readiness_flips() {
        let now = SystemTime::now();
        let state = NodeState::new();
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), state.clone()).await.unwrap();
        let addr = server.local_addr().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        let task = tokio::spawn(server.run());

        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("not ready: no subnet lease held\n"), "{body}");

        // The daemon comes up: readiness flips to 200 without restarting the server.
        let full = populated(now);
        state.set_datapath("xdp");
        state.set_datapath_up(true);
        state.set_routes(full.routes_report().routes);
        state.set_routes_synced(true);
        state.set_lease(Some(LeaseInfo {
            subnet: "10.244.1.0/24".parse().unwrap(),
            expires: Some(now + Duration::from_secs(3600)),
        }));
        let w = Arc::new(WorkerStats::new());
        w.add_drop(DropReason::UnknownVtep);
        state.add_worker("xdp-eth0-q0", w, None);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ready\n"));

        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(head.contains(PROMETHEUS_CONTENT_TYPE), "{head}");
        let samples = parse_exposition(&body);
        let labels = [("worker", "0"), ("reason", "unknown_vtep")];
        assert_eq!(value(&samples, "linen_worker_drops_total", &labels), Some(1.0));

        let (status, head, body) = get(addr, "/v1/stats").await;
        assert_eq!(status, 200);
        assert!(head.contains("Content-Type: application/json"));
        let stats: StatsReport = serde_json::from_str(&body).unwrap();
        assert_eq!(stats.workers[0].counters.drops["unknown_vtep"], 1);

        let (status, _, body) = get(addr, "/v1/routes").await;
        assert_eq!(status, 200);
        let routes: RoutesReport = serde_json::from_str(&body).unwrap();
        assert_eq!(routes.count, 2);

        let (status, _, body) = get(addr, "/v1/status").await;
        assert_eq!(status, 200);
        let st: StatusReport = serde_json::from_str(&body).unwrap();
        assert!(st.ready && st.etcd_connected.is_none());

        // etcd outage: readiness reports it.
        state.set_etcd_connected(false);
        let (status, _, body) = get(addr, "/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("etcd unreachable"), "{body}");

        let (status, _, body) = get(addr, "/missing").await;
        assert_eq!(status, 404);
        assert!(body.starts_with("no such path \"/missing\"; this API serves /metrics "), "{body}");
        let (status, head, _) = get(addr, "/metrics?x=1").await;
        assert_eq!(status, 200, "the query is ignored");
        assert!(head.contains("Cache-Control: no-store\r\n"), "{head}");
        let post = raw_request(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        assert!(post.ends_with("POST is not allowed; use GET\n"), "{post}");

        // OpenMetrics only for a scraper that asks for it.
        let om = raw_request(
            addr,
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        )
        .await;
        assert!(om.contains(&format!("Content-Type: {OPENMETRICS_CONTENT_TYPE}\r\n")), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE linen_worker_drops counter\n"), "{om}");
        assert!(om.contains("linen_worker_drops_total{worker=\"0\",reason=\"unknown_vtep\"} 1\n"));
        let head = raw_request(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
        let bad = raw_request(addr, b"nonsense\r\n\r\n").await;
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        // A head that fills the limit without ending (sent whole, so the server leaves nothing
        // unread and closes cleanly).
        let big = format!("GET /{}", "a".repeat(MAX_REQUEST_HEAD - 5));
        assert!(raw_request(addr, big.as_bytes()).await.starts_with("HTTP/1.1 431 "));

        task.abort();
    }

    /// Clients that shut down their sending side after the request (`printf … | socat`) get
    /// every answer: hyper must not take the early end of input for an aborted request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn half_closed_requests_are_answered() {
        let state = populated(SystemTime::now());
        let server = Server::bind("127.0.0.1:0".parse().unwrap(), state).await.unwrap();
        let addr = server.local_addr().unwrap();
        let task = tokio::spawn(server.run());
        let mut unanswered = 0;
        for _ in 0..100 {
            let answer = raw_request(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await;
            if !answer.contains("linen_worker_drops_total{") {
                unanswered += 1;
            }
        }
        assert_eq!(unanswered, 0, "of 100 half-closed requests");
        task.abort();
    }

    #[test]
    fn accept_header_picks_the_format() {
        use MetricsFormat::{OpenMetrics, Prometheus};
        assert_eq!(MetricsFormat::from_accept(None), Prometheus);
        assert_eq!(MetricsFormat::from_accept(Some("*/*")), Prometheus);
        assert_eq!(MetricsFormat::from_accept(Some("text/plain;version=0.0.4")), Prometheus);
        assert_eq!(MetricsFormat::from_accept(Some("application/openmetrics-text")), OpenMetrics);
        // What Prometheus sends.
        let prometheus = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
                          application/openmetrics-text;version=0.0.1;q=0.4,\
                          text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(MetricsFormat::from_accept(Some(prometheus)), OpenMetrics);
        assert_eq!(
            MetricsFormat::from_accept(Some("application/openmetrics-text;q=0, text/plain")),
            Prometheus
        );
        assert_eq!(OpenMetrics.content_type(), OPENMETRICS_CONTENT_TYPE);
        assert_eq!(Prometheus.content_type(), "text/plain; version=0.0.4; charset=utf-8");
    }

    #[test]
    fn openmetrics_text_has_the_same_samples() {
        let now = SystemTime::now();
        let state = populated(now);
        state.record_masq(true, true);
        let om = state.render_metrics_at(now, MetricsFormat::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        // Samples (not comments) are the same lines in both formats.
        let samples = |t: &str| -> Vec<String> {
            t.lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect()
        };
        let text = state.render_prometheus_at(now);
        assert_eq!(samples(&om), samples(&text));
        assert!(
            om.contains("# TYPE linen_ip_masq_restores counter\nlinen_ip_masq_restores_total 1\n")
        );
        assert!(text.contains(
            "# TYPE linen_ip_masq_restores_total counter\nlinen_ip_masq_restores_total 1\n"
        ));
    }

    #[tokio::test]
    async fn bind_error_names_the_address() {
        let first = Server::bind("127.0.0.1:0".parse().unwrap(), NodeState::new()).await.unwrap();
        let addr = first.local_addr().unwrap();
        let err = Server::bind(addr, NodeState::new()).await.unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
