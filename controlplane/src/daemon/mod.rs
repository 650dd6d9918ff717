//! linen's node daemon, `linend`: its options, datapath set-up, modes and run loop. The binary
//! `linend` parses [`Args`] and calls [`main`].
//!
//! etcd mode (the default, `--etcd-endpoints …`): the network config comes from
//! `<prefix>/config`, the node claims a subnet with a flannel-compatible lease (VtepMAC =
//! `linen.1`'s MAC), writes the subnet file, and follows every other node's lease: each change
//! reprograms `linen.1` and publishes a new route table to the datapath
//! (see `crate::node`).
//!
//! Static-peers mode (`--static-peers FILE`): the node's subnet and its peers come from a file
//! (see `crate::static_peers`), no etcd.
//!
//! In both modes linend finds the underlay, creates and programs the overlay device `linen.1`
//! (a multi-queue TAP with segmentation offload: address, MTU, routes, permanent neighbours; its
//! MAC, the VtepMAC, derived from the machine ID, see `crate::vtep_mac`), writes the
//! flannel-format subnet file for the CNI plugin, and runs the datapath until SIGTERM or SIGINT,
//! then removes what it created (an etcd lease stays, so a restart keeps the subnet).
//!
//! Under a service manager with a file-descriptor store (systemd's `Type=notify` with
//! `FileDescriptorStoreMax=`, found through `$NOTIFY_SOCKET`), linend stores the descriptors of
//! its datapath there as soon as it has created them, and on SIGTERM leaves `linen.1`, the XDP
//! program, the sockets, the masquerade table and direct routes in place: the next start takes
//! them over (`$LISTEN_FDS`) and forwards what the kernel queued meanwhile, so a restart, an
//! upgrade or a crash loses no packet to a missing device (see `crate::handover`).
//! `systemctl stop` releases the store and with it the datapath; `linend --cleanup` then removes
//! the masquerade table and direct routes too.
//!
//! `--ip-masq` installs flannel's masquerade rules in the nftables table `ip linen` (see
//! `crate::masq` and docs/ipmasq.md), re-checks them every `--ip-masq-resync`
//! seconds and removes the table on shutdown. `--can-reach IP` takes the underlay interface and
//! public IP from the kernel's route to `IP` (see `crate::can_reach`).
//!
//! Datapaths: `xdp` (AF_XDP on the underlay NIC, `linen.1` a multi-queue TAP with segmentation
//! offload, one pinnable worker per queue,
//! see `crate::xdp_node`), `tap` (TAP device + UDP socket, the fallback) and `auto`
//! (tries `xdp`, falls back to `tap` and logs why).

// Rooms: the etcd mode (`node`), the static-peers mode with its SIGHUP reload (`static_peers`),
// the AF_XDP datapath's devices (`xdp_node`), the descriptor-store protocol (`handover`) and
// linend's use of it (`keep`), the options, the worker threads, the stats file, `--cleanup`.
// This file holds the start-up sequence and the run loop that ties them together.
pub mod handover;
pub mod node;
pub mod static_peers;
pub mod xdp_node;

mod cleanup;
mod keep;
mod options;
mod stats_file;
mod workers;

pub use options::{Args, Datapath, TapSend};

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::can_reach;
use crate::cli::load_config;
use crate::handover::{DatapathKind, Description, Handover, Received, StateFiles, Store, Wanted};
use crate::kernel::{Kernel, OVERLAY_DEV, VXLAN_OVERHEAD};
use crate::lease::MacAddr;
use crate::manager::LeaseOptions;
use crate::masq::{self, MasqKeeper, MasqSpec, Masquerade, NftCommand};
use crate::metrics::{self, LeaseInfo, NodeState, RouteInfo};
use crate::node::{DatapathHandles, EtcdNode, StartPeers};
use crate::static_peers::StaticNode;
use crate::subnet_env::{self, SubnetEnv};
use crate::vtep_mac;
use crate::xdp_node::XdpNodeConfig;

use linen_dataplane::io::fdstore::Notifier;
use linen_dataplane::io::tap::{TapConfig, TapQueue, UnderlaySend};
use linen_dataplane::io::xsk::XskQueue;
use linen_dataplane::pipeline::{Config, RoutesBuilder, WorkerStats};
use linen_dataplane::route::Published;
use linen_dataplane::worker::{PollConfig, VxlanHandler};
use tracing::{debug, error, info, warn};

use cleanup::cleanup;
use keep::{adopt_tap, adopt_xdp, release, release_names, store_datapath, store_peers};
use static_peers::{reload, static_routes};
use workers::{spawn_worker, stop_workers};

/// Sets up logging to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs the daemon as `args` say until SIGTERM or SIGINT (or does `--cleanup`'s work), on a
/// current-thread runtime, and returns the process's exit code.
///
/// `listen` is what [`take_listen_fds`](linen_dataplane::io::fdstore::take_listen_fds) returned: a service manager's descriptors (a
/// datapath handed over by the previous run) must be taken first thing in the process, before
/// anything else runs or opens a file.
pub fn main(args: Args, listen: std::io::Result<Vec<(String, OwnedFd)>>) -> std::process::ExitCode {
    let listen = listen.unwrap_or_else(|e| {
        warn!(error = %e, "cannot take the descriptors the service manager passed");
        Vec::new()
    });
    let notifier = match Notifier::from_env() {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "NOTIFY_SOCKET is unusable; running without the service manager's store");
            None
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = if args.cleanup {
        drop(listen);
        rt.block_on(cleanup(args))
    } else {
        rt.block_on(run(args, listen, notifier))
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn choose_datapath(d: Datapath) -> Result<Datapath, BoxError> {
    match d {
        Datapath::Tap => {
            info!(datapath = "tap", "datapath chosen by --datapath tap");
            Ok(Datapath::Tap)
        }
        // `auto` is decided when the AF_XDP setup has been tried (see `run`).
        Datapath::Auto => Ok(Datapath::Auto),
        Datapath::Xdp => {
            info!(datapath = "xdp", "datapath chosen by --datapath xdp");
            Ok(Datapath::Xdp)
        }
    }
}

/// Where the node's subnet and peers come from.
enum Mode {
    /// A static-peers file (reloaded on SIGHUP).
    Static { path: PathBuf, node: StaticNode },
    /// etcd: the registry and the network config read from it.
    Etcd { registry: Box<crate::registry::EtcdRegistry>, config: Box<crate::config::NetworkConfig> },
    /// etcd mode while etcd has not answered yet, with a handed-over datapath forwarding on the
    /// stored peers meanwhile; it becomes [`Mode::Etcd`] before the subnet is claimed.
    EtcdPending(EtcdConnect),
}

/// The connection to etcd and the network config, being made in a task.
type EtcdConnect = tokio::task::JoinHandle<
    Result<(crate::registry::EtcdRegistry, crate::config::NetworkConfig), crate::node::NodeError>,
>;

/// How long a start with a handed-over datapath waits for etcd before it forwards without it.
const ETCD_WAIT_WITH_HANDOVER: Duration = Duration::from_millis(250);

/// The underlay next-hop MAC of every static peer, as the kernel knows it now (etcd mode keeps its
/// own cache in `node`).
async fn next_hop_macs(kernel: &Kernel, mode: &Mode) -> Vec<Option<[u8; 6]>> {
    let Mode::Static { node, .. } = mode else { return Vec::new() };
    let dsts: Vec<Ipv4Addr> = node.peers.iter().map(|p| p.public_ip).collect();
    match kernel.next_hop_macs(&dsts).await {
        Ok(macs) => macs.into_iter().map(|m| m.ok().flatten().map(|(_, mac)| mac)).collect(),
        Err(_) => vec![None; dsts.len()],
    }
}

async fn run(
    mut args: Args,
    listen: Vec<(String, OwnedFd)>,
    notifier: Option<Notifier>,
) -> Result<(), BoxError> {
    let mut store = notifier.map(Store::new);
    let received = Handover::receive(listen);
    handover::log_received(&received);
    let (mut handed, unusable) = match received {
        Received::Complete(h) => (Some(h), Vec::new()),
        // This process's copies were closed by `receive`; the store's go below.
        Received::Unusable { names, .. } => (None, names),
        Received::Nothing => (None, Vec::new()),
    };
    // --ip-masq: a missing nft is an error before anything is created.
    let masq = if args.ip_masq {
        let mut m = Masquerade::new(NftCommand::default());
        m.probe().map_err(|e| format!("--ip-masq: {e}"))?;
        Some(m)
    } else {
        // Without --ip-masq no masquerade table may stay from an earlier run.
        match Masquerade::new(NftCommand::default()).remove_stale() {
            Ok(true) => warn!(
                "removed the masquerade table ip {} left by an earlier run with --ip-masq",
                masq::TABLE
            ),
            Ok(false) | Err(masq::MasqError::NftMissing { .. }) => {}
            Err(e) => warn!("cannot check for a stale masquerade table: {e}"),
        }
        None
    };
    let masq_resync = Duration::from_secs(args.ip_masq_resync);
    let mut mode = match &args.static_peers {
        Some(path) => Mode::Static { path: path.clone(), node: StaticNode::load(path)? },
        None => {
            info!(endpoints = %args.etcd.etcd_endpoints.join(","), prefix = %args.etcd.etcd_prefix, "etcd mode");
            let flags = args.etcd.clone();
            let mut connect = tokio::spawn(async move { crate::node::connect(&flags).await });
            // A handed-over datapath need not wait for etcd: it forwards with the settings and
            // peers it ran with, and the claim follows once etcd answers.
            let bridge = handed.as_ref().and_then(|h| h.description().vxlan_settings());
            let joined = match bridge {
                Some(_) => tokio::time::timeout(ETCD_WAIT_WITH_HANDOVER, &mut connect).await.ok(),
                None => Some((&mut connect).await),
            };
            match (joined, bridge) {
                (Some(joined), _) => {
                    let (registry, config) =
                        joined.map_err(|e| format!("etcd connect task: {e}"))??;
                    config.require_ipv4()?;
                    args.vni = config.backend.vni;
                    args.port = config.backend.port;
                    args.mtu = args.mtu.or(config.backend.mtu);
                    Mode::Etcd { registry: Box::new(registry), config: Box::new(config) }
                }
                (None, Some((vni, port, mtu))) => {
                    warn!(
                        vni,
                        port,
                        mtu,
                        "etcd has not answered within {ETCD_WAIT_WITH_HANDOVER:?}; forwarding with the handed-over datapath and its stored peers until it does"
                    );
                    args.vni = vni;
                    args.port = port;
                    args.mtu = args.mtu.or(Some(mtu));
                    Mode::EtcdPending(connect)
                }
                (None, None) => return Err("etcd connect: no answer and no hand-over".into()),
            }
        }
    };
    let datapath = choose_datapath(args.datapath)?;
    let cpus = match &args.cpus {
        Some(list) => Some(xdp_node::parse_cpus(list)?),
        None => None,
    };

    let kernel = Kernel::connect()?;
    if !unusable.is_empty() {
        release_names(store.as_ref(), unusable, &kernel).await;
    }
    let static_ip = match &mode {
        Mode::Static { node, .. } => node.public_ip,
        Mode::Etcd { .. } | Mode::EtcdPending(_) => None,
    };
    let public_ip = args.public_ip.or(static_ip);
    let underlay = match args.can_reach {
        Some(target) => {
            let (u, gateway) = can_reach::detect(&kernel, target).await?;
            if let Some(fixed) = static_ip.filter(|ip| *ip != u.ip) {
                return Err(format!(
                    "--can-reach {target} picked {} on {}, but the static-peers file fixes public_ip {fixed}",
                    u.ip, u.link.name
                )
                .into());
            }
            info!(
                can_reach = %target,
                iface = %u.link.name,
                public_ip = %u.ip,
                via = %gateway.map_or_else(|| "on-link".to_string(), |g| g.to_string()),
                "underlay chosen by --can-reach"
            );
            u
        }
        None => kernel.underlay(args.iface.as_deref(), public_ip).await?,
    };
    let mtu = match args.mtu {
        Some(m) => m,
        None => underlay.link.mtu.checked_sub(VXLAN_OVERHEAD).ok_or_else(|| {
            format!(
                "underlay {} MTU {} is too small for VXLAN",
                underlay.link.name, underlay.link.mtu
            )
        })?,
    };
    let overlay_mtu = u16::try_from(mtu).map_err(|_| format!("overlay MTU {mtu} is too large"))?;
    info!(underlay = %underlay.link.name, public_ip = %underlay.ip, mtu = overlay_mtu, "starting");

    // A datapath handed over by the previous run is taken over when it fits this configuration.
    let want = Wanted {
        datapath: match datapath {
            Datapath::Xdp => Some(DatapathKind::Xdp),
            Datapath::Tap => Some(DatapathKind::Tap),
            Datapath::Auto => None,
        },
        device: OVERLAY_DEV.to_string(),
        underlay: underlay.link.name.clone(),
        underlay_ifindex: underlay.link.index,
        vtep: underlay.ip,
        port: args.port,
        queues: args.queues,
    };
    if let Some(h) = handed.take() {
        match h.check(&want) {
            Ok(()) => handed = Some(h),
            Err(why) => {
                warn!("the handed-over datapath does not fit this configuration ({why}); releasing it and building afresh (forwarding pauses meanwhile)");
                release(store.as_ref(), h, &kernel).await;
            }
        }
    }
    // Only the kernel can say that the previous run's peers are still routed: read them before
    // the hand-over's files are kept for this run.
    let stored_peers = handed.as_ref().and_then(Handover::peers);

    // A leftover overlay device (a veth of an older release, a device someone made, or one a
    // store that was just cleared did not close in time) goes first.
    if handed.is_none() && kernel.link_by_name(OVERLAY_DEV).await?.is_some() {
        warn!(dev = OVERLAY_DEV, "removing a stale overlay device");
        kernel.delete_link(OVERLAY_DEV).await?;
    }

    let handed_kind = handed.as_ref().map(|h| h.description().datapath);
    // AF_XDP when asked for (or auto, unless a TAP datapath was handed over): TAP queues,
    // program, sockets; taken over when handed over.
    let mut xdp = None;
    if datapath != Datapath::Tap && handed_kind != Some(DatapathKind::Tap) {
        let xcfg = XdpNodeConfig {
            underlay: underlay.link.name.clone(),
            vtep: underlay.ip,
            port: args.port,
            queues: args.queues,
            overlay_mtu: mtu,
        };
        if let Some(h) = handed.as_mut() {
            match adopt_xdp(h, &xcfg) {
                Ok(x) => {
                    info!(
                        datapath = "xdp",
                        queues = args.queues,
                        "AF_XDP datapath taken over from the previous run"
                    );
                    xdp = Some(x);
                }
                Err(e) => {
                    warn!("cannot take the AF_XDP datapath over ({e}); releasing it and building afresh");
                    if let Some(h) = handed.take() {
                        release(store.as_ref(), h, &kernel).await;
                    }
                }
            }
        }
        let setup = match xdp.take() {
            Some(x) => Ok(x),
            None => xdp_node::setup(&xcfg),
        };
        match setup {
            Ok(x) => {
                if datapath == Datapath::Auto {
                    info!(
                        datapath = "xdp",
                        "datapath auto: AF_XDP works on {}; using it", underlay.link.name
                    );
                }
                xdp = Some(x);
            }
            Err(e) => {
                if datapath == Datapath::Xdp {
                    return Err(format!("--datapath xdp: {e}").into());
                }
                info!(
                    datapath = "tap",
                    "datapath auto: AF_XDP is not usable here ({e}); using the TAP/UDP fallback"
                );
            }
        }
    }
    let (mut xdp_devices, xdp_queues) = match xdp {
        Some((d, q)) => (Some(d), q),
        None => (None, Vec::new()),
    };

    let tap_cfg = TapConfig {
        device: OVERLAY_DEV.to_string(),
        local_ip: underlay.ip,
        port: args.port,
        mtu,
        send: match args.tap_send {
            TapSend::Raw => UnderlaySend::RawIp,
            TapSend::Udp => UnderlaySend::Udp,
        },
    };
    let tap = match xdp_devices {
        Some(_) => None,
        None => {
            let mut adopted = None;
            if let Some(h) = handed.as_mut() {
                match adopt_tap(h, &tap_cfg) {
                    Ok(q) => {
                        info!(datapath = "tap", "TAP datapath taken over from the previous run");
                        adopted = Some(q);
                    }
                    Err(e) => {
                        warn!("cannot take the TAP datapath over ({e}); releasing it and building afresh");
                        if let Some(h) = handed.take() {
                            release(store.as_ref(), h, &kernel).await;
                        }
                    }
                }
            }
            match adopted {
                Some(q) => Some(q),
                None => Some(TapQueue::new(&tap_cfg)?),
            }
        }
    };
    let send_mode = match tap.as_ref().map(TapQueue::send_mode) {
        Some(UnderlaySend::RawIp) => "raw",
        Some(UnderlaySend::Udp) => "udp",
        None => "none",
    };
    if tap.is_some() {
        underlay_gro_hint(&underlay.link.name);
    }

    // From here on the overlay device exists; any failure drops the TAP queues, which removes it
    // (unless the store holds them: then the next start takes them over).
    let adopted = handed.is_some();
    let static_mac = match &mode {
        Mode::Static { node, .. } => node.vtep_mac,
        Mode::Etcd { .. } | Mode::EtcdPending(_) => None,
    };
    let vtep_mac = match static_mac {
        Some(m) => Some(m),
        None => match vtep_mac::for_node(underlay.ip) {
            Ok(m) => Some(m),
            Err(e) => {
                warn!("no machine ID ({e}): {OVERLAY_DEV} keeps the kernel's random MAC, which a reboot changes (and with it this node's lease); provide /etc/machine-id");
                None
            }
        },
    };
    if let Some(mac) = vtep_mac {
        kernel.set_mac(OVERLAY_DEV, mac).await?;
    }

    // The service manager's store: what a new datapath carries is stored right away, so that a
    // crash from here on leaves it to the next start too.
    let state: Option<StateFiles> = match (handed.take(), store.as_mut()) {
        (Some(h), _) => match h.into_state() {
            Ok(st) => Some(st),
            Err(e) => {
                warn!("{e}; a restart rebuilds the datapath");
                if let Some(s) = store.as_mut() {
                    s.set_intact(false);
                }
                None
            }
        },
        (None, Some(st)) => {
            let mut fds = Vec::new();
            let kind = match (&xdp_devices, &tap) {
                (Some(d), _) => {
                    for (i, q) in xdp_queues.iter().enumerate() {
                        let (t, x, u) = xdp_node::queue_fds(q);
                        let i = i as u32;
                        fds.extend([
                            (handover::tap_name(i), t),
                            (handover::xsk_name(i), x),
                            (handover::umem_name(i), u),
                        ]);
                    }
                    if let Some(link) = d.link_fd() {
                        fds.push((handover::XDP_LINK.to_string(), link));
                    }
                    DatapathKind::Xdp
                }
                (None, Some(q)) => {
                    let (t, u) = q.handover_fds();
                    fds.extend([(handover::tap_name(0), t), (handover::UDP.to_string(), u)]);
                    DatapathKind::Tap
                }
                (None, None) => DatapathKind::Tap,
            };
            let description = Description {
                format: handover::FORMAT,
                version: env!("CARGO_PKG_VERSION").to_string(),
                datapath: kind,
                device: OVERLAY_DEV.to_string(),
                underlay: underlay.link.name.clone(),
                underlay_ifindex: underlay.link.index,
                vtep: underlay.ip,
                port: args.port,
                queues: if kind == DatapathKind::Xdp { args.queues } else { 1 },
                umem: (kind == DatapathKind::Xdp).then(xdp_node::geometry),
                vni: Some(args.vni),
                mtu: Some(mtu),
                fds: Description::expected_fds(
                    kind,
                    if kind == DatapathKind::Xdp { args.queues } else { 1 },
                ),
            };
            store_datapath(st, &description, &fds)
        }
        (None, None) => None,
    };
    if let Mode::Static { node, .. } = &mode {
        kernel
            .apply_overlay(OVERLAY_DEV, &node::overlay_state(node.subnet, mtu, &node.peers))
            .await?;
    }
    let overlay = kernel
        .link_by_name(OVERLAY_DEV)
        .await?
        .ok_or("the overlay device vanished during setup")?;
    info!(dev = OVERLAY_DEV, vtep_mac = %MacAddr(overlay.mac), "overlay device ready");

    let mut cfg = Config::new(underlay.ip, underlay.link.mac, overlay.mac);
    cfg.vni = args.vni;
    cfg.port = args.port;
    cfg.udp_checksum = args.udp_checksum;
    cfg.overlay_mtu = overlay_mtu;
    cfg.validate()?;
    // etcd mode after a hand-over: the stored peers route until etcd's listing replaces them,
    // so the workers forward what waited in the queues at once.
    let seeded = match (&mode, &stored_peers) {
        (Mode::Etcd { .. } | Mode::EtcdPending(_), Some(peers)) if adopted => {
            let mut cache = crate::node::NextHopCache::new();
            Some(
                crate::node::build_routes(&kernel, &cfg, underlay.link.index, peers, &mut cache)
                    .await,
            )
        }
        _ => None,
    };
    let routes = Arc::new(Published::new(match (&mode, seeded) {
        (Mode::Static { node, .. }, _) => {
            static_routes(&kernel, &cfg, underlay.link.index, node).await
        }
        (Mode::Etcd { .. } | Mode::EtcdPending(_), Some(r)) => r,
        (Mode::Etcd { .. } | Mode::EtcdPending(_), None) => RoutesBuilder::new().build(),
    }));
    let mut hop_macs = next_hop_macs(&kernel, &mode).await;

    let poll = PollConfig {
        idle_spell: Duration::from_micros(args.idle_spell_us),
        ..PollConfig::default()
    };
    let cpu_of = |i: usize| cpus.as_ref().map(|c| c[i % c.len()]);
    let mut workers = Vec::new();
    let node_state = NodeState::new();
    let mut spawn = |name: String, i: usize, tap: Option<TapQueue>, xsk: Option<XskQueue>| {
        let stats = Arc::new(WorkerStats::new());
        let worker_name = name.clone();
        let handler = VxlanHandler::new(cfg.clone(), routes.clone(), stats.clone());
        let (running, loop_stats) = match (tap, xsk) {
            (Some(q), _) => spawn_worker(name, q, handler, poll, cpu_of(i))?,
            (None, Some(q)) => spawn_worker(name, q, handler, poll, cpu_of(i))?,
            (None, None) => return Ok::<(), std::io::Error>(()),
        };
        node_state.add_worker(&worker_name, stats, Some(loop_stats));
        workers.push(running);
        Ok(())
    };
    if let Some(q) = tap {
        spawn("tap-0".into(), 0, Some(q), None)?;
    }
    for (i, q) in xdp_queues.into_iter().enumerate() {
        spawn(format!("xdp-{i}"), i, None, Some(q))?;
    }

    node_state.set_datapath(if xdp_devices.is_some() { "xdp" } else { "tap" });
    node_state.set_datapath_up(true);
    let api_task = match metrics::Server::bind(args.metrics_addr, node_state.clone()).await {
        Ok(api) => {
            info!(addr = %args.metrics_addr, "node API (/metrics, /healthz, /readyz, /v1) listening");
            Some(tokio::spawn(api.run()))
        }
        Err(e) => {
            error!("node API not served: {e}; forwarding is unaffected (set --metrics-addr to a free address)");
            None
        }
    };

    // etcd mode that forwards without etcd so far: wait for it now; SIGTERM/SIGINT still end the
    // daemon meanwhile (the datapath stays with the service manager for the next start).
    mode = match mode {
        Mode::EtcdPending(connect) => {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let mut int =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
            let joined = tokio::select! {
                j = connect => Some(j),
                _ = term.recv() => { info!("SIGTERM while waiting for etcd"); None }
                _ = int.recv() => { info!("SIGINT while waiting for etcd"); None }
            };
            let connected = match joined {
                None => {
                    stop_workers(workers);
                    return Ok(());
                }
                Some(j) => j
                    .map_err(|e| format!("etcd connect task: {e}").into())
                    .and_then(|r: Result<_, crate::node::NodeError>| r.map_err(BoxError::from)),
            };
            let (registry, config) = match connected.and_then(|(r, c)| {
                c.require_ipv4()?;
                let (vni, port) = (c.backend.vni, c.backend.port);
                let changed = vni != args.vni
                    || port != args.port
                    || c.backend.mtu.is_some_and(|m| m != mtu);
                if changed {
                    return Err(format!(
                        "the network config read from etcd (VNI {vni}, port {port}, MTU {:?}) differs from the one the handed-over datapath runs with (VNI {}, port {}, MTU {mtu}); exiting so that the next start applies it",
                        c.backend.mtu, args.vni, args.port
                    )
                    .into());
                }
                Ok((r, c))
            }) {
                Ok(rc) => rc,
                Err(e) => {
                    stop_workers(workers);
                    return Err(e);
                }
            };
            info!("etcd answered; claiming the subnet");
            Mode::Etcd { registry: Box::new(registry), config: Box::new(config) }
        }
        other => other,
    };
    let etcd_node = match &mode {
        // Resolved above.
        Mode::EtcdPending(_) => None,
        Mode::Static { node, .. } => {
            node_state.set_lease(Some(LeaseInfo { subnet: node.subnet.into(), expires: None }));
            node_state.set_routes(node.peers.iter().map(RouteInfo::from).collect());
            node_state.set_routes_synced(true);
            SubnetEnv { network: node.network, subnet: node.subnet, mtu, ip_masq: args.ip_masq }
                .write(&args.subnet_file)?;
            info!(path = %args.subnet_file.display(), "subnet file written");
            None
        }
        Mode::Etcd { registry, config } => {
            let mut opts = LeaseOptions::new(underlay.ip, MacAddr(overlay.mac), mtu);
            opts.subnet_file = Some(args.subnet_file.clone());
            opts.ip_masq = args.ip_masq;
            let dp = DatapathHandles {
                routes: routes.clone(),
                config: cfg.clone(),
                underlay_ifindex: underlay.link.index,
                mtu,
                state: node_state.clone(),
            };
            let start_peers = match (adopted, stored_peers.clone()) {
                (false, _) => StartPeers::New,
                (true, Some(p)) => StartPeers::Known(p),
                (true, None) => StartPeers::Kept,
            };
            // Claiming waits for etcd; SIGTERM/SIGINT still end the daemon cleanly meanwhile.
            let start = EtcdNode::start(
                (**registry).clone(),
                config,
                opts,
                kernel.clone(),
                dp,
                start_peers,
            );
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            let mut int =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
            tokio::select! {
                n = start => Some(n),
                _ = term.recv() => { info!("SIGTERM before a subnet was claimed"); None }
                _ = int.recv() => { info!("SIGINT before a subnet was claimed"); None }
            }
        }
    };
    // In etcd mode, check etcd every few seconds so /readyz follows an outage and its end even
    // when no lease changes (the peer watch reconnects without reporting it).
    let etcd_probe = match &mode {
        Mode::Etcd { registry, .. } => {
            let registry = (**registry).clone();
            let state = node_state.clone();
            Some(tokio::spawn(async move {
                use crate::registry::Registry;
                let mut every = tokio::time::interval(Duration::from_secs(3));
                loop {
                    every.tick().await;
                    state.set_etcd_connected(registry.current_revision().await.is_ok());
                }
            }))
        }
        Mode::Static { .. } | Mode::EtcdPending(_) => None,
    };
    let etcd_node = match etcd_node {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            stop_workers(workers);
            return Err(e.into());
        }
        None if !matches!(mode, Mode::Static { .. }) => {
            stop_workers(workers);
            return Ok(());
        }
        None => None,
    };

    // --ip-masq: the rules follow the network (static file or etcd config) and our subnet.
    let masq_spec = match (&mode, &etcd_node) {
        (Mode::Static { node, .. }, _) => Some(MasqSpec::new(node.network, node.subnet)),
        (Mode::Etcd { config, .. }, Some(n)) => {
            Some(MasqSpec::new(config.require_ipv4()?.network, n.subnet()))
        }
        (Mode::Etcd { .. }, None) | (Mode::EtcdPending(_), _) => None,
    };
    let masq = match (masq, masq_spec) {
        (Some(m), Some(spec)) => {
            match MasqKeeper::start(m, spec, masq_resync, Some(node_state.clone())).await {
                Ok(k) => Some(k),
                Err(e) => {
                    if let Some(n) = etcd_node {
                        n.shutdown().await;
                    }
                    stop_workers(workers);
                    return Err(format!("--ip-masq: {e}").into());
                }
            }
        }
        _ => None,
    };
    // etcd mode: re-read the network config every resync interval, so the rules follow a
    // changed Network.
    let masq_config = match (&masq, &mode) {
        (Some(k), Mode::Etcd { registry, .. }) => {
            let (handle, registry) = (k.handle(), (**registry).clone());
            Some(tokio::spawn(async move {
                let start = tokio::time::Instant::now() + masq_resync;
                let mut every = tokio::time::interval_at(start, masq_resync);
                loop {
                    every.tick().await;
                    let network =
                        load_config(&registry).await.map_err(|e| e.to_string()).and_then(|c| {
                            c.require_ipv4().map(|v4| v4.network).map_err(|e| e.to_string())
                        });
                    match network {
                        Ok(n) => handle.set_network(n),
                        Err(e) => warn!(
                            "--ip-masq: cannot re-read the network config: {e}; keeping the rules for {}",
                            handle.spec()
                        ),
                    }
                }
            }))
        }
        _ => None,
    };

    let vtep_mac = overlay.mac;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_millis(args.stats_interval_ms.max(10)));
    // Frame-level datapaths need the underlay next hops' MACs: re-read them from the kernel
    // once a second and republish the routes when one changed (an unresolved one falls back to
    // the kernel path meanwhile, which also resolves it).
    let mut hops = tokio::time::interval(Duration::from_secs(1));
    let mut stored = etcd_node.as_ref().map(EtcdNode::peers);
    if let (Some(st), Some(rx)) = (&state, stored.as_mut()) {
        store_peers(st, &rx.borrow_and_update());
    }
    if let Some(s) = &store {
        s.notify("READY=1\nSTATUS=forwarding");
    }
    info!("forwarding");
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => match &mut mode {
                Mode::Static { path, node } => {
                    reload(path, &kernel, &cfg, underlay.link.index, mtu, node, &routes).await;
                    node_state.set_routes(node.peers.iter().map(RouteInfo::from).collect());
                    hop_macs = next_hop_macs(&kernel, &mode).await;
                }
                Mode::Etcd { .. } | Mode::EtcdPending(_) => info!("SIGHUP ignored in etcd mode (peers follow etcd)"),
            },
            _ = hops.tick(), if xdp_devices.is_some() && matches!(mode, Mode::Static { .. }) => {
                let now = next_hop_macs(&kernel, &mode).await;
                if now != hop_macs {
                    if let Mode::Static { node, .. } = &mode {
                        info!("underlay next-hop MACs changed; routes republished");
                        routes.publish(static_routes(&kernel, &cfg, underlay.link.index, node).await);
                    }
                    hop_macs = now;
                }
            }
            _ = tick.tick() => {
                if workers.iter().any(|w| w.thread.is_finished()) {
                    break;
                }
                if let (Some(st), Some(rx)) = (&state, stored.as_mut()) {
                    if rx.has_changed().unwrap_or(false) {
                        store_peers(st, &rx.borrow_and_update());
                    }
                }
                if let Some(n) = &etcd_node {
                    node_state.set_lease(n.lease().as_ref().map(LeaseInfo::from));
                    if let Some(k) = &masq {
                        k.handle().set_subnet(n.subnet());
                    }
                }
                if etcd_node.as_ref().is_some_and(EtcdNode::is_finished) {
                    error!("the etcd peer-watch task ended");
                    break;
                }
                if let Some(path) = &args.stats_file {
                    if let Err(e) = subnet_env::replace_file(path, stats_file::render(&node_state.stats_report(), send_mode, vtep_mac).as_bytes(), false) {
                        warn!(path = %path.display(), error = %e, "cannot write the stats file");
                    }
                }
            }
        }
    }

    // With the whole datapath in the service manager's store, the next start takes it over:
    // leave the device, program, sockets, masquerade table and direct routes in place.
    let keep = state.is_some() && store.as_ref().is_some_and(Store::intact);
    if keep {
        if let Some(s) = &store {
            s.notify("STOPPING=1\nSTATUS=leaving the datapath to the next start");
        }
    }
    node_state.set_datapath_up(false);
    if let Some(t) = api_task {
        t.abort();
    }
    if let Some(t) = etcd_probe {
        t.abort();
    }
    if let Some(t) = masq_config {
        t.abort();
    }
    if let Some(k) = masq {
        if keep {
            k.leave().await;
        } else {
            match k.shutdown().await {
                Ok(()) => info!("masquerade table ip {} removed", masq::TABLE),
                Err(e) => error!(
                    "cannot remove the masquerade table: {e}; remove it with `nft delete table ip {}`",
                    masq::TABLE
                ),
            }
        }
    }
    if let Some(n) = etcd_node {
        if keep {
            n.shutdown_for_restart().await;
        } else {
            n.shutdown().await;
        }
    }
    for w in &workers {
        w.control.stop();
    }
    let mut queues = Vec::new();
    let mut failure: Option<BoxError> = None;
    for w in workers {
        match w.thread.join() {
            Ok(Ok(q)) => queues.push(q),
            Ok(Err(e)) => {
                failure.get_or_insert(e.into());
            }
            Err(_) => {
                failure.get_or_insert("a worker thread panicked".into());
            }
        }
    }
    if let Some(path) = &args.stats_file {
        let _ = subnet_env::replace_file(
            path,
            stats_file::render(&node_state.stats_report(), send_mode, vtep_mac).as_bytes(),
            false,
        );
    }
    if keep {
        // Frames still being transmitted would look free to the next process: let them
        // complete. Then only this process's descriptors close; the store keeps the rest.
        for q in queues {
            if let Ok(mut x) = q.downcast::<XskQueue>() {
                if !x.drain_tx(Duration::from_millis(100)) {
                    warn!("AF_XDP frames still in flight after 100 ms; the next start may reuse them early");
                }
            }
        }
        drop(xdp_devices);
        drop(routes);
        if let Some(e) = failure {
            return Err(e);
        }
        info!(
            "stopped; {OVERLAY_DEV}, its routes and the datapath's queues stay with the service \
             manager for the next start (stopping the service releases them)"
        );
        return Ok(());
    }
    // Programs off first (nothing is steered into closing sockets), then the sockets or the TAP;
    // closing a TAP removes linen.1 together with its address, routes and neighbours.
    if let Some(d) = xdp_devices.as_mut() {
        d.detach();
    }
    drop(queues);
    if kernel.link_by_name(OVERLAY_DEV).await?.is_some() {
        kernel.delete_link(OVERLAY_DEV).await?;
    }
    drop(routes);
    if let Some(e) = failure {
        return Err(e);
    }
    info!("stopped; {OVERLAY_DEV} removed");
    Ok(())
}

/// Tells the operator when the fallback's `UDP_GRO` cannot merge anything: the socket receives
/// merged datagrams only where the underlay device runs the kernel's GRO (on by default on NIC
/// drivers, off on veth). Without it every VXLAN datagram is one socket receive, the largest
/// single cost of the fallback's bulk TCP (docs/benchmarks.md, "What limits each number now").
fn underlay_gro_hint(dev: &str) {
    match linen_dataplane::io::xsk::gro_enabled(dev) {
        Ok(true) => {}
        Ok(false) => info!(
            underlay = dev,
            "GRO is off on {dev}: the TAP/UDP datapath receives VXLAN datagrams one by one; \
             `ethtool -K {dev} gro on` lets UDP_GRO take a super-packet's segments in one read"
        ),
        Err(e) => debug!(underlay = dev, "cannot read {dev}'s GRO setting: {e}"),
    }
}
