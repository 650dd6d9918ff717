//! The three measurements and the testbeds they run on (see the module docs of
//! [`crate::ctlbench`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use linen_testbed::cluster::{Cluster, ClusterBuilder, Overlay, ETCD_IP, ETCD_PORT, ETCD_PREFIX};
use linen_testbed::{wait_for, Netns, Testbed};
use serde_json::{json, Map, Value};

use super::probe::{self, lease_value, Prober, Sink};
use super::{quantile, Measurement, Options};

/// A failed measurement, with what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The testbed could not be built.
    #[error("testbed: {0}")]
    Setup(String),
    /// etcd refused a request.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A socket or file operation failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Underlay address of the sink namespace that owns the fake VTEPs.
pub const SINK_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 240);
/// The range the fake VTEP (PublicIP) addresses come from.
pub const FAKE_VTEPS: &str = "172.16.0.0/12";
/// The third octets of the `10.244.x.0/24` subnets measurements 1 and 3 use (nodes hold 1, 2).
const FAKE_THIRD: std::ops::RangeInclusive<u8> = 10..=249;

fn endpoint() -> String {
    format!("http://{ETCD_IP}:{ETCD_PORT}")
}

fn subnet_key(subnet: &str) -> String {
    format!("{ETCD_PREFIX}/subnets/{subnet}")
}

/// The i-th fake VTEP address, `172.16.0.1` upwards.
fn fake_vtep(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i as u32)
}

fn fake_mac(i: usize, salt: u8) -> [u8; 6] {
    [0x02, 0xcb, salt, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

fn sh(ns: &Netns, script: &str) -> Result<String, BenchError> {
    let out = ns.sh_output(script);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(BenchError::Setup(format!(
            "in {}: `{script}`: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Two linend nodes (one pod each) in etcd mode, plus a sink namespace on the underlay that owns
/// [`FAKE_VTEPS`] (so encapsulated frames to fake nodes arrive at a socket there) and from which
/// the benchmark talks to etcd.
pub struct TwoNodes {
    // Held only to be torn down with this; drop order: the sink's testbed, then the cluster.
    _extra: Testbed,
    sink: Netns,
    cluster: Cluster,
}

impl TwoNodes {
    /// Builds it.
    ///
    /// # Errors
    /// [`BenchError::Setup`] naming the step that failed.
    pub fn build(opts: &Options) -> Result<TwoNodes, BenchError> {
        let cluster = ClusterBuilder::new("ctl")
            .nodes(2, Overlay::linen(&opts.datapath))
            .pods_per_node(1)
            .linend(&opts.linend)
            .etcd()
            .build()
            .map_err(setup)?;
        let mut extra = Testbed::new("ctlx");
        let sink = extra.netns("sink");
        let sw = cluster
            .testbed()
            .namespaces()
            .iter()
            .find(|n| n.name.ends_with("-sw"))
            .ok_or_else(|| setup("the cluster has no switch namespace"))?
            .clone();
        extra.veth(&sink, "eth0", &sw, "psink");
        sh(&sw, "ip link set psink master br0")?;
        sh(
            &sink,
            &format!("ip addr add {SINK_IP}/24 dev eth0 && ip route add local {FAKE_VTEPS} dev lo"),
        )?;
        for n in cluster.nodes() {
            route_fake_vteps(&n.host, SINK_IP)?;
        }
        Ok(TwoNodes { _extra: extra, sink, cluster })
    }
}

/// Routes [`FAKE_VTEPS`] in a node via `gw` on the underlay and resolves `gw`, so linend finds
/// an underlay next hop for every fake node.
fn route_fake_vteps(host: &Netns, gw: Ipv4Addr) -> Result<(), BenchError> {
    sh(host, &format!("ip route replace {FAKE_VTEPS} via {gw} dev eth0"))?;
    let ok = wait_for(Duration::from_secs(5), || {
        host.sh_output(&format!("ping -c 1 -W 1 {gw}")).status.success().then_some(())
    });
    ok.ok_or_else(|| setup(format!("{gw} does not answer from {}", host.name)))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn log_since(p: &Path, offset: u64) -> String {
    let text = std::fs::read(p).unwrap_or_default();
    String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default()).into_owned()
}

/// The value of `key=` on a tracing log line.
fn field(line: &str, key: &str) -> Option<f64> {
    let pat = format!(" {key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// linend's per-update log lines for updates from the etcd watch: (peers, publish_us, total_us).
/// linend also publishes when the underlay's neighbours change (the next hops are looked up
/// again), at moments the kernel's neighbour table decides; those are not lease changes and are
/// left out: a publication counts only when the line before it of the two kinds is a watch
/// update ("peer update").
fn applied_updates(log: &str) -> Vec<(f64, f64, f64)> {
    let mut from_watch = false;
    let mut updates = Vec::new();
    for l in log.lines() {
        if l.contains("peer update") {
            from_watch = true;
        } else if l.contains("underlay neighbours changed") {
            from_watch = false;
        } else if l.contains("routes published and") {
            if from_watch {
                if let (Some(p), Some(pu), Some(t)) =
                    (field(l, "peers"), field(l, "publish_us"), field(l, "total_us"))
                {
                    updates.push((p, pu, t));
                }
            }
            from_watch = false;
        }
    }
    updates
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn num(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |x| json!((x * 1000.0).round() / 1000.0))
}

/// linend's own split over `updates`, in ms: `<prefix>_{publish,programmed}_{p50,p99,max}_ms`.
fn linend_split(f: &mut Map<String, Value>, updates: &[(f64, f64, f64)]) {
    let mut publish: Vec<f64> = updates.iter().map(|u| u.1 / 1e3).collect();
    let mut total: Vec<f64> = updates.iter().map(|u| u.2 / 1e3).collect();
    f.insert("linend_updates".into(), updates.len().into());
    for (name, v) in [("publish", &mut publish), ("programmed", &mut total)] {
        f.insert(format!("linend_{name}_p50_ms"), num(quantile(v, 0.5)));
        f.insert(format!("linend_{name}_p99_ms"), num(quantile(v, 0.99)));
        f.insert(format!("linend_{name}_max_ms"), num(quantile(v, 1.0)));
    }
}

/// Measurement 1: lease put → first encapsulated probe to the new VTEP, over `opts.leases`
/// new leases (see the module docs).
///
/// # Errors
/// Setup, etcd or socket failures.
pub fn lease_to_datapath(
    b: &TwoNodes,
    opts: &Options,
    run: usize,
) -> Result<Measurement, BenchError> {
    let n1 = &b.cluster.nodes()[0];
    let log = n1.linend.as_ref().map(|l| l.log.clone()).ok_or_else(|| setup("n1 has no linend"))?;
    let log_start = file_len(&log);
    let probe_every = Duration::from_micros(50);
    let prober = Prober::start(&n1.pods[0], probe_every);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _sink = Sink::start(&b.sink, tx)?;
    let sink_ns = b.sink.clone();
    let leases = opts.leases;
    let (latencies, acks, missed, probing, probes) = std::thread::scope(|s| {
        s.spawn(|| {
            probe::enter(&sink_ns);
            runtime().block_on(async {
                let mut client = Client::connect([endpoint()], None).await?;
                let mut lat = Vec::with_capacity(leases);
                let mut acks = Vec::with_capacity(leases);
                let (mut missed, mut probing, mut probes) = (0usize, Duration::ZERO, 0u64);
                let third: Vec<u8> = FAKE_THIRD.collect();
                for i in 0..leases {
                    let t = third[i % third.len()];
                    let key = subnet_key(&format!("10.244.{t}.0-24"));
                    let target = Ipv4Addr::new(10, 244, t, 1);
                    let value = lease_value(fake_vtep(i), fake_mac(i, 1));
                    while rx.try_recv().is_ok() {}
                    let sent_before = prober.sent();
                    prober.target.store(u32::from(target), Ordering::Release);
                    let t0 = Instant::now();
                    client.put(key.as_str(), value, None).await?;
                    acks.push(ms(t0.elapsed()));
                    let deadline = tokio::time::Instant::from_std(t0 + Duration::from_secs(2));
                    loop {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some((dst, at))) if dst == target => {
                                lat.push(ms(at.duration_since(t0)));
                                break;
                            }
                            Ok(Some(_)) => {}
                            _ => {
                                missed += 1;
                                break;
                            }
                        }
                    }
                    probing += t0.elapsed();
                    probes += prober.sent() - sent_before;
                    prober.target.store(0, Ordering::Release);
                    client.delete(key.as_str(), None).await?;
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                Ok::<_, BenchError>((lat, acks, missed, probing, probes))
            })
        })
        .join()
        .expect("lease thread")
    })?;
    drop(prober);
    let mut f = Map::new();
    let mut lat = latencies;
    f.insert("leases".into(), leases.into());
    f.insert("detected".into(), lat.len().into());
    f.insert("missed".into(), missed.into());
    f.insert("p50_ms".into(), num(quantile(&mut lat, 0.5)));
    f.insert("p99_ms".into(), num(quantile(&mut lat, 0.99)));
    f.insert("max_ms".into(), num(quantile(&mut lat, 1.0)));
    let mut acks = acks;
    f.insert("put_ack_p50_ms".into(), num(quantile(&mut acks, 0.5)));
    f.insert("put_ack_p99_ms".into(), num(quantile(&mut acks, 0.99)));
    let interval = (probes > 0).then(|| probing.as_secs_f64() * 1e6 / probes as f64);
    f.insert("probe_interval_us".into(), num(interval));
    linend_split(&mut f, &applied_updates(&log_since(&log, log_start)));
    f.insert("datapath".into(), opts.datapath.clone().into());
    Ok(Measurement { name: "lease_to_datapath", run, fields: f })
}

/// Measurement 3: the sequenced stream n1 pod → n2 pod while etcd gets `opts.churn_rate` lease
/// changes per second for `opts.churn_secs`.
///
/// # Errors
/// Setup, etcd or socket failures.
pub fn churn(b: &TwoNodes, opts: &Options, run: usize) -> Result<Measurement, BenchError> {
    let (n1, n2) = (&b.cluster.nodes()[0], &b.cluster.nodes()[1]);
    let log = n1.linend.as_ref().map(|l| l.log.clone()).ok_or_else(|| setup("n1 has no linend"))?;
    let count = (opts.churn_secs * f64::from(opts.stream_pps)) as u64;
    let port = 7777;
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = probe::stream_receiver(&n2.pods[0], port, count as usize, stop.clone())?;
    let rcvbuf_before = udp_rcvbuf_errors(&n2.pods[0]);
    let sink_ns = b.sink.clone();
    let (src, dst) = (n1.pods[0].clone(), n2.pod_ip(0));
    let n2_key = subnet_key(&format!("10.244.{}.0-24", n2.index));
    let (pps, secs, rate) = (opts.stream_pps, opts.churn_secs, opts.churn_rate.max(1));
    let mut log_start = 0;
    let (ops, op_errors, churn_secs, send_secs) = std::thread::scope(|s| {
        s.spawn(|| {
            probe::enter(&sink_ns);
            runtime().block_on(async {
                let client = Client::connect([endpoint()], None).await?;
                let mut c = client.clone();
                let n2_value = c
                    .get(n2_key.as_str(), None)
                    .await?
                    .kvs()
                    .first()
                    .map(|kv| kv.value().to_vec())
                    .ok_or_else(|| setup("n2 holds no lease"))?;
                let ttl_lease = c.lease_grant(24 * 3600, None).await?.id();
                // Half the pool present before the churn starts.
                let pool: Vec<u8> = FAKE_THIRD.collect();
                let mut present = vec![false; pool.len()];
                for (i, t) in pool.iter().enumerate().step_by(2) {
                    let key = subnet_key(&format!("10.244.{t}.0-24"));
                    c.put(key, lease_value(fake_vtep(i), fake_mac(i, 2)), None).await?;
                    present[i] = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                log_start = file_len(&log);
                let sender = probe::stream_sender(&src, dst, port, count, pps);
                let start = Instant::now();
                let mut tick =
                    tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let in_flight = Arc::new(tokio::sync::Semaphore::new(64));
                let mut tasks = tokio::task::JoinSet::new();
                let mut rng = 0x2545_f491_4f6c_dd1du64;
                let mut issued = 0u64;
                let total = (secs * f64::from(rate)) as u64;
                while issued < total && start.elapsed() < Duration::from_secs_f64(secs * 2.0) {
                    tick.tick().await;
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let i = (rng % pool.len() as u64) as usize;
                    let key = subnet_key(&format!("10.244.{}.0-24", pool[i]));
                    let salt = (issued % 200) as u8 + 3;
                    let mut c = client.clone();
                    let permit = in_flight.clone().acquire_owned().await.expect("semaphore");
                    let n2v = n2_value.clone();
                    let n2k = n2_key.clone();
                    let kind = issued % 4;
                    let op = match (kind, present[i]) {
                        (3, _) => 3,     // renewal of n2's lease
                        (0, false) => 0, // add
                        (1, true) => 1,  // delete
                        (_, true) => 2,  // value update
                        (_, false) => 0, // add
                    };
                    match op {
                        0 => present[i] = true,
                        1 => present[i] = false,
                        _ => {}
                    }
                    tasks.spawn(async move {
                        let r = match op {
                            1 => c.delete(key, None).await.map(|_| ()),
                            3 => c
                                .put(n2k, n2v, Some(PutOptions::new().with_lease(ttl_lease)))
                                .await
                                .map(|_| ()),
                            _ => c
                                .put(key, lease_value(fake_vtep(i), fake_mac(i, salt)), None)
                                .await
                                .map(|_| ()),
                        };
                        drop(permit);
                        r
                    });
                    issued += 1;
                    while let Some(done) = tasks.try_join_next() {
                        let _ = done;
                    }
                }
                let mut errors = 0u64;
                while let Some(done) = tasks.join_next().await {
                    if !matches!(done, Ok(Ok(()))) {
                        errors += 1;
                    }
                }
                let churn_secs = start.elapsed().as_secs_f64();
                let send_secs =
                    tokio::task::spawn_blocking(move || sender.join().expect("stream sender"))
                        .await
                        .expect("join");
                // Leave the pool empty for the next measurement.
                for t in &pool {
                    c.delete(subnet_key(&format!("10.244.{t}.0-24")), None).await?;
                }
                Ok::<_, BenchError>((issued, errors, churn_secs, send_secs))
            })
        })
        .join()
        .expect("churn thread")
    })?;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (received, reordered, duplicates) = receiver.join().expect("stream receiver");
    let rcvbuf_errors = udp_rcvbuf_errors(&n2.pods[0]).zip(rcvbuf_before).map(|(a, b)| a - b);
    let log_text = log_since(&log, log_start);
    let updates = applied_updates(&log_text);
    let mut f = Map::new();
    f.insert("seconds".into(), num(Some(send_secs)));
    f.insert("lease_changes".into(), ops.into());
    f.insert("lease_change_errors".into(), op_errors.into());
    f.insert("changes_per_s".into(), num(Some(ops as f64 / churn_secs)));
    f.insert("stream_pps".into(), pps.into());
    f.insert("sent".into(), count.into());
    f.insert("received".into(), received.into());
    f.insert("lost".into(), count.saturating_sub(received).into());
    f.insert("reordered".into(), reordered.into());
    f.insert("duplicates".into(), duplicates.into());
    f.insert("receiver_rcvbuf_errors".into(), rcvbuf_errors.map_or(Value::Null, Value::from));
    let events: f64 = log_text
        .lines()
        .filter(|l| l.contains("peer update"))
        .filter_map(|l| field(l, "changes"))
        .sum();
    f.insert("linend_watch_events".into(), num(Some(events)));
    linend_split(&mut f, &updates);
    let errors = log_text.lines().filter(|l| l.contains(" ERROR ") || l.contains(" WARN ")).count();
    f.insert("linend_warnings".into(), errors.into());
    f.insert("datapath".into(), opts.datapath.clone().into());
    Ok(Measurement { name: "churn", run, fields: f })
}

fn udp_rcvbuf_errors(ns: &Netns) -> Option<i64> {
    let snmp = String::from_utf8_lossy(&ns.sh_output("cat /proc/net/snmp").stdout).into_owned();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (udp.next()?, udp.next()?);
    let i = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// One node whose linend the benchmark restarts against an etcd pre-filled with many leases.
pub struct SyncBed {
    cluster: Cluster,
    leases: usize,
}

impl SyncBed {
    /// Builds a one-node cluster, stops its linend, widens the network to `10.0.0.0/8` and writes
    /// `leases` flanneld-format leases `10.a.b.0/24` with distinct PublicIPs and VtepMACs.
    ///
    /// # Errors
    /// Setup or etcd failures.
    pub fn build(opts: &Options) -> Result<SyncBed, BenchError> {
        let cluster = ClusterBuilder::new("ctls")
            .nodes(1, Overlay::linen(&opts.datapath))
            .pods_per_node(0)
            .linend(&opts.linend)
            .etcd()
            .build()
            .map_err(setup)?;
        let host = cluster.nodes()[0].host.clone();
        route_fake_vteps(&host, ETCD_IP)?;
        let stuck = cluster.stop_linend(Duration::from_secs(10));
        if !stuck.is_empty() {
            return Err(setup(format!("linend on {stuck:?} ignored SIGTERM")));
        }
        let leases = opts.sync_leases;
        std::thread::scope(|s| {
            s.spawn(|| {
                probe::enter(&host);
                runtime().block_on(async {
                    let mut c = Client::connect([endpoint()], None).await?;
                    let config =
                        r#"{"Network":"10.0.0.0/8","SubnetLen":24,"Backend":{"Type":"vxlan"}}"#;
                    c.put(format!("{ETCD_PREFIX}/config"), config, None).await?;
                    let mut tasks = tokio::task::JoinSet::new();
                    for chunk in (0..leases).collect::<Vec<_>>().chunks(64) {
                        for &i in chunk {
                            let mut c = c.clone();
                            // 10.1.0.0/24 upwards: never 10.244.1.0/24, the node's own.
                            let subnet = format!("10.{}.{}.0-24", 1 + i / 256, i % 256);
                            let value = lease_value(fake_vtep(i), fake_mac(i, 0));
                            tasks.spawn(
                                async move { c.put(subnet_key(&subnet), value, None).await },
                            );
                        }
                        while let Some(r) = tasks.join_next().await {
                            r.expect("put task")?;
                        }
                    }
                    Ok::<_, BenchError>(())
                })
            })
            .join()
            .expect("fill thread")
        })?;
        Ok(SyncBed { cluster, leases })
    }
}

/// A process's `VmRSS` and, from `smaps`, its RSS without the AF_XDP mappings, and the RSS of
/// those mappings, in KiB.
fn rss_kib(pid: u32) -> (Option<u64>, Option<u64>, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let vm_rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return (vm_rss, None, 0);
    };
    let u = linen_dataplane::io::xsk::UmemConfig::default();
    let umem_kib = u64::from(u.frame_count) * u64::from(u.frame_size) / 1024;
    let (total, xdp) = smaps_rss(&smaps, umem_kib);
    (vm_rss, Some(total - xdp), xdp)
}

/// Sums `Rss:` over the mappings of an `smaps` text: (all, AF_XDP ones). AF_XDP mappings are
/// the UMEM (anonymous, exactly `umem_kib` large, as linend maps it) and the rings (mapped from
/// the socket, so named `socket:[…]`).
fn smaps_rss(smaps: &str, umem_kib: u64) -> (u64, u64) {
    let (mut total, mut xdp) = (0u64, 0u64);
    let mut path: Option<&str> = None;
    let mut is_xdp = false;
    let kib = |rest: &str| -> u64 {
        rest.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    for line in smaps.lines() {
        if let Some(rest) = line.strip_prefix("Size:") {
            is_xdp = match path {
                Some(p) => p.starts_with("socket:"),
                None => kib(rest) == umem_kib,
            };
        } else if let Some(rest) = line.strip_prefix("Rss:") {
            total += kib(rest);
            if is_xdp {
                xdp += kib(rest);
            }
        } else if line
            .split_whitespace()
            .next()
            .is_some_and(|w| w.contains('-') && !w.ends_with(':'))
        {
            // A mapping header: range, perms, offset, device, inode, [path].
            path = line.split_whitespace().nth(5);
            is_xdp = false;
        }
    }
    (total, xdp)
}

/// Measurement 2: starts linend against the pre-filled etcd and times the sync.
///
/// # Errors
/// linend failing to start or sync within 60 s, or a setup failure.
pub fn initial_sync(bed: &SyncBed, opts: &Options, run: usize) -> Result<Measurement, BenchError> {
    let node = &bed.cluster.nodes()[0];
    let dir = bed.cluster.dir();
    let log: PathBuf = dir.join(format!("sync{run}.linend.log"));
    let log_file = std::fs::File::create(&log)?;
    let mut cmd: Command = node.host.command(&opts.linend.to_string_lossy());
    cmd.args(["--etcd-endpoints", &endpoint(), "--iface", "eth0"])
        .args(["--datapath", &opts.datapath])
        .arg("--subnet-file")
        .arg(dir.join(format!("{}.subnet.env", node.name)))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log_file);
    let t0 = Instant::now();
    let pid = bed.cluster.testbed().spawn(cmd);
    let want = bed.leases as f64;
    let found = wait_for(Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(u) = applied_updates(&text).into_iter().find(|u| u.0 >= want) {
            return Some(Ok((t0.elapsed(), u)));
        }
        if !linen_testbed::cluster::running(pid) {
            return Some(Err(text));
        }
        std::thread::sleep(Duration::from_millis(2));
        None
    });
    let result = match found {
        Some(Ok((elapsed, update))) => {
            let (vm_rss, rss_wo, excluded) = rss_kib(pid);
            let routes = count_lines(&node.host, "ip -4 route show dev linen.1");
            let neighs = count_lines(&node.host, "ip -4 neigh show dev linen.1");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let mut f = Map::new();
            f.insert("leases".into(), bed.leases.into());
            f.insert("synced_routes".into(), (update.0 as u64).into());
            f.insert("kernel_routes".into(), routes.map_or(Value::Null, Value::from));
            f.insert("kernel_neighbours".into(), neighs.map_or(Value::Null, Value::from));
            f.insert("sync_ms".into(), num(Some(ms(elapsed))));
            f.insert("linend_publish_ms".into(), num(Some(update.1 / 1e3)));
            f.insert("linend_programmed_ms".into(), num(Some(update.2 / 1e3)));
            f.insert("vm_rss_kib".into(), vm_rss.map_or(Value::Null, Value::from));
            f.insert("rss_without_umem_kib".into(), rss_wo.map_or(Value::Null, Value::from));
            f.insert("umem_rss_kib".into(), excluded.into());
            let errors =
                text.lines().filter(|l| l.contains(" ERROR ") || l.contains(" WARN ")).count();
            f.insert("linend_warnings".into(), errors.into());
            f.insert("datapath".into(), opts.datapath.clone().into());
            Ok(Measurement { name: "initial_sync", run, fields: f })
        }
        Some(Err(text)) => Err(setup(format!("linend exited: {}", tail(&text)))),
        None => Err(setup(format!(
            "linend did not sync {} leases within 60 s: {}",
            bed.leases,
            tail(&std::fs::read_to_string(&log).unwrap_or_default())
        ))),
    };
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ =
        wait_for(Duration::from_secs(10), || (!linen_testbed::cluster::running(pid)).then_some(()));
    bed.cluster.testbed().kill(pid);
    result
}

fn count_lines(ns: &Netns, cmd: &str) -> Option<u64> {
    let out = ns.sh_output(cmd);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).lines().count() as u64)
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linend_update_lines_parse() {
        let log = "2026-11-22T05:00:00.000001Z  INFO linen_controlplane::node: peer update revision=9 resync=false changes=1 peers=3\n\
                   2026-11-22T05:00:00.000002Z  INFO linen_controlplane::node: routes published and linen.1 programmed peers=3 publish_us=120 total_us=480\n";
        assert_eq!(applied_updates(log), vec![(3.0, 120.0, 480.0)]);
        // A neighbour refresh publishes too, but is no lease change.
        let refresh = format!(
            "{log}2026-11-22T05:00:00.100000Z  INFO linen_controlplane::node: underlay neighbours changed; next hops looked up again\n\
             2026-11-22T05:00:00.100002Z  INFO linen_controlplane::node: routes published and linen.1 programmed peers=3 publish_us=90 total_us=95\n"
        );
        assert_eq!(applied_updates(&refresh), vec![(3.0, 120.0, 480.0)]);
        assert_eq!(field(log.lines().next().unwrap(), "changes"), Some(1.0));
        assert_eq!(field("x peers=", "peers"), None);
    }

    #[test]
    fn smaps_rss_leaves_out_umem_and_rings() {
        let smaps = "\
55d0c0000000-55d0c0100000 r-xp 00000000 fd:01 1234 /usr/bin/linend
Size:               1024 kB
Rss:                 800 kB
7f0000000000-7f0001000000 rw-p 00000000 00:00 0
Size:              16384 kB
Rss:               16384 kB
7f0001000000-7f0001400000 rw-p 00000000 00:00 0
Size:               4096 kB
Rss:                 300 kB
7f0002000000-7f0002010000 rw-s 00000000 00:08 99 socket:[99]
Size:                 64 kB
Rss:                  64 kB
VmFlags: rd wr sh mr mw me ms sd
";
        assert_eq!(smaps_rss(smaps, 16384), (800 + 16384 + 300 + 64, 16384 + 64));
        assert_eq!(smaps_rss(smaps, 8192), (800 + 16384 + 300 + 64, 64));
        assert_eq!(smaps_rss("", 16384), (0, 0));
    }

    #[test]
    fn fake_addresses_are_distinct() {
        assert_eq!(fake_vtep(0), Ipv4Addr::new(172, 16, 0, 1));
        assert_eq!(fake_vtep(10_000), Ipv4Addr::new(172, 16, 39, 17));
        assert_ne!(fake_mac(255, 0), fake_mac(256, 0));
    }
}
