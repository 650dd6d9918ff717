//! linend's etcd mode: the glue between the lease manager, the peer watch, the kernel and the
//! datapath's route table.
//!
//! Start-up order (driven by `linend`):
//!
//! 1. [`connect`]: build the etcd client and read `<prefix>/config` (retried while etcd is
//!    unreachable or the config is not written yet; an invalid config is an error).
//! 2. The caller creates the overlay device (its MAC is the VtepMAC) and the datapath with an
//!    empty route table.
//! 3. [`EtcdNode::start`]: claim a subnet (retried until it succeeds; the lease manager writes
//!    subnet.env), program the overlay device with our subnet, start renewing the lease and run
//!    the peer watch in a task. A device handed over by an earlier process keeps its routes
//!    meanwhile: with the peers that process stored ([`StartPeers::Known`]) the kernel and the
//!    route table are converged to them at once, without a known list the device is left as it
//!    is until the first listing from etcd ([`StartPeers::Kept`]).
//!
//! On every peer update the task converges the kernel (`linen.1`'s address, per-peer routes and
//! permanent neighbours) to the full peer map and publishes a new route snapshot in which every
//! peer's VTEP is a known peer (decapsulation accepts only those). When our own lease changes
//! subnet (it was deleted and the old subnet got taken meanwhile), the overlay device is
//! re-addressed. While etcd is unreachable nothing changes: the datapath keeps forwarding on the
//! last routes, and the watcher resynchronises after reconnecting.
//!
//! flannel's `Backend.DirectRouting`: with it on, a peer whose public IP the kernel reaches
//! directly over the underlay device (its route to that IP has no gateway: the same L2 segment —
//! flanneld's rule) gets `<subnet> via <public IP> dev <underlay>` instead of the overlay route,
//! neighbour and VXLAN; other peers keep VXLAN. The direct route replaces the overlay route in
//! place (same destination and metric), and back, so a switch never leaves a subnet without a
//! route. The datapath's table keeps its encapsulation entry for a direct peer: the kernel sends
//! nothing for that subnet to the overlay device, so the entry is unused until the peer is
//! routed through VXLAN again; and the peer stays a known VTEP, so VXLAN it still sends (a
//! flannel node that has not switched yet) is decapsulated. The task re-reads `<prefix>/config`
//! every [`CONFIG_RECHECK`] and follows a changed `DirectRouting` at run time; other config
//! changes need a restart and are logged as such. Direct routes are removed on shutdown, with the
//! overlay device's, unless the datapath is left to the next process
//! ([`EtcdNode::shutdown_for_restart`]).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use ipnet::Ipv4Net;
use linen_dataplane::pipeline::{Config, NextHop, Peer as RoutePeer, Routes, RoutesBuilder};
use linen_dataplane::route::Published;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::cli::{load_config, EtcdFlags, LoadConfigError};
use crate::config::NetworkConfig;
use crate::kernel::{
    DirectRoute, Kernel, KernelError, NeighbourChange, OverlayRoute, OverlayState, OVERLAY_DEV,
};
use crate::manager::{Lease, LeaseError, LeaseHandle, LeaseManager, LeaseOptions};
use crate::registry::{EtcdRegistry, RegistryError};
use crate::watch::{PeerWatcher, WatchUpdate};

/// Why etcd mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The etcd client could not be built (bad endpoint, unreadable TLS files).
    #[error("etcd: {0}")]
    Registry(#[from] RegistryError),
    /// The network config in etcd is unusable.
    #[error("network config: {0}")]
    Config(#[from] LoadConfigError),
    /// The lease manager refused the config (e.g. IPv4 disabled).
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// Programming the overlay device failed.
    #[error("programming {OVERLAY_DEV}: {0}")]
    Kernel(#[from] KernelError),
}

/// Builds the etcd client from `flags` and reads the network config. While etcd is unreachable
/// or `<prefix>/config` is missing, it logs and retries (backing off up to 10 s); a config that
/// does not validate is returned as an error at once.
///
/// # Errors
/// [`NodeError::Registry`] for a client that cannot be built, [`NodeError::Config`] for an
/// invalid config.
pub async fn connect(flags: &EtcdFlags) -> Result<(EtcdRegistry, NetworkConfig), NodeError> {
    let registry = EtcdRegistry::connect(&flags.options()).await?;
    let mut delay = Duration::from_millis(200);
    loop {
        match load_config(&registry).await {
            Ok(cfg) => return Ok((registry, cfg)),
            Err(e @ (LoadConfigError::Registry(_) | LoadConfigError::Missing { .. })) => {
                warn!(error = %e, retry_in = ?delay, "cannot read the network config yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the node task drives: the datapath's published route table and how to build routes.
#[derive(Debug, Clone)]
pub struct DatapathHandles {
    /// The table the workers read.
    pub routes: Arc<Published<Routes>>,
    /// The pipeline configuration (local VTEP, VNI, port, MTU) next hops are built from.
    pub config: Config,
    /// The underlay interface's index (egress of every encapsulated frame).
    pub underlay_ifindex: u32,
    /// The overlay MTU programmed on the overlay device.
    pub mtu: u32,
    /// What the node API reports: routes, watch revision, etcd reachability.
    pub state: crate::metrics::NodeState,
}

/// One remote node as the route builder needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteNode {
    /// Its pod subnet.
    pub subnet: Ipv4Net,
    /// Its public IP (VTEP).
    pub public_ip: Ipv4Addr,
    /// Its VtepMAC.
    pub vtep_mac: [u8; 6],
}

/// Underlay next-hop MACs already resolved, by peer public IP.
pub type NextHopCache = HashMap<Ipv4Addr, [u8; 6]>;

/// Builds the route snapshot for `peers`: one route per peer subnet, every peer's VTEP a known
/// peer. Underlay next-hop MACs come from `cache`, else from the kernel, all missing ones in one
/// batch (a resolved one is added to `cache`); an unresolved one is left empty (the datapath then
/// lets the kernel send and resolve) and looked up again next time.
pub async fn build_routes(
    kernel: &Kernel,
    cfg: &Config,
    ifindex: u32,
    peers: &[RemoteNode],
    cache: &mut NextHopCache,
) -> Routes {
    let mut missing: Vec<Ipv4Addr> =
        peers.iter().map(|p| p.public_ip).filter(|ip| !cache.contains_key(ip)).collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        match kernel.next_hop_macs(&missing).await {
            Ok(answers) => {
                let mut failed = 0usize;
                let mut first = None;
                for (ip, answer) in missing.iter().zip(answers) {
                    match answer {
                        Ok(Some((_, mac))) => {
                            cache.insert(*ip, mac);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            failed += 1;
                            first.get_or_insert((*ip, e));
                        }
                    }
                }
                if let Some((peer, error)) = first {
                    // One line per update, not one per peer: thousands of peers may share it.
                    warn!(%peer, %error, failed, "cannot look up the underlay next hop");
                }
            }
            Err(e) => warn!(error = %e, "cannot look up underlay next hops"),
        }
    }
    let mut b = RoutesBuilder::new();
    for p in peers {
        let underlay_mac = cache.get(&p.public_ip).copied();
        let peer = RoutePeer { vtep: p.public_ip, vtep_mac: p.vtep_mac, underlay_mac, ifindex };
        b.insert(ipnet::IpNet::V4(p.subnet), NextHop::new(cfg, &peer));
        b.add_peer(p.public_ip);
    }
    b.build()
}

/// What the overlay device holds when [`EtcdNode::start`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPeers {
    /// A new device: only our address is programmed before the first listing.
    New,
    /// A device handed over by an earlier process, whose peers are not known here: its routes
    /// and neighbours are left as they are until the first listing converges them.
    Kept,
    /// A device handed over with these peers (stored by the earlier process): the kernel and
    /// the route table are converged to them right after the claim.
    Known(Vec<RemoteNode>),
}

/// A node running in etcd mode: the lease keeper and the peer-watch task.
#[derive(Debug)]
pub struct EtcdNode {
    lease: LeaseHandle,
    task: tokio::task::JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    subnet: watch::Receiver<Ipv4Net>,
    peers: watch::Receiver<Vec<RemoteNode>>,
}

impl EtcdNode {
    /// Claims a subnet (retrying until it gets one), programs `linen.1` with it (see
    /// [`StartPeers`]), starts the lease keeper and the peer-watch task. `lease_opts` carries our
    /// public IP and VtepMAC (the overlay device's MAC) and the subnet file to write.
    ///
    /// # Errors
    /// [`NodeError::Lease`] when the config has no IPv4 network, [`NodeError::Kernel`] when the
    /// overlay device cannot be programmed.
    pub async fn start(
        registry: EtcdRegistry,
        config: &NetworkConfig,
        lease_opts: LeaseOptions,
        kernel: Kernel,
        dp: DatapathHandles,
        start_peers: StartPeers,
    ) -> Result<EtcdNode, NodeError> {
        let manager = LeaseManager::new(registry.clone(), config, lease_opts)?;
        let network = config.require_ipv4().map_err(LoadConfigError::from)?.network;
        let lease = manager.acquire_retrying().await;
        info!(subnet = %lease.subnet, key = %lease.key(), "lease held; subnet file written");
        if start_peers == StartPeers::New {
            kernel.apply_overlay(OVERLAY_DEV, &overlay_state(lease.subnet, dp.mtu, &[])).await?;
        }
        let handle = manager.spawn(lease.clone());
        let watcher = PeerWatcher::new(registry.clone(), Some(handle.subscribe()));
        let (subnet_tx, subnet_rx) = watch::channel(lease.subnet);
        let (peers_tx, peers_rx) = watch::channel(Vec::new());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        // Underlay next hops follow the kernel's neighbour table on the underlay interface.
        let neighbours = match crate::kernel::watch_neighbours(dp.underlay_ifindex) {
            Ok(rx) => Some(rx),
            Err(e) => {
                warn!(error = %e, "cannot follow the underlay neighbours; next hops are looked up again only on resync");
                None
            }
        };
        let underlay = match kernel.link_by_index(dp.underlay_ifindex).await {
            Ok(link) => link.name,
            Err(_) => format!("#{}", dp.underlay_ifindex),
        };
        let mut sync = Sync {
            kernel,
            dp,
            watcher,
            own: handle.subscribe(),
            subnet: lease.subnet,
            subnet_tx,
            peers_tx,
            peers: Vec::new(),
            next_hops: NextHopCache::new(),
            programmed: None,
            neighbours,
            hops_refresh_at: None,
            hops_refreshed: Instant::now(),
            registry,
            config: config.clone(),
            network,
            underlay,
            config_error: None,
            direct_reach: HashMap::new(),
            direct: None,
        };
        if let StartPeers::Known(mut peers) = start_peers {
            peers.sort_by_key(|p| p.subnet);
            info!(peers = peers.len(), "converging the handed-over overlay to the stored peers");
            sync.peers = peers;
            sync.apply(Instant::now(), true).await;
        }
        let task = tokio::spawn(sync.run(stop_rx));
        Ok(EtcdNode {
            lease: handle,
            task,
            stop: Some(stop_tx),
            subnet: subnet_rx,
            peers: peers_rx,
        })
    }

    /// The peers routed to, updated after every applied change (for the hand-over's stored
    /// list).
    pub fn peers(&self) -> watch::Receiver<Vec<RemoteNode>> {
        self.peers.clone()
    }

    /// The lease held right now (`None` while a new subnet is being claimed).
    pub fn lease(&self) -> Option<Lease> {
        self.lease.current()
    }

    /// The subnet the overlay device is programmed with.
    pub fn subnet(&self) -> Ipv4Net {
        *self.subnet.borrow()
    }

    /// Whether the peer-watch task has ended (it only ends when stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the peer watch and the lease keeper and removes the direct routes. The lease stays
    /// in etcd until its TTL ends, so a restarted node gets its subnet back.
    pub async fn shutdown(self) {
        self.stop(true).await;
    }

    /// Stops the peer watch and the lease keeper and leaves the direct routes in place, for the
    /// next process that takes the datapath over.
    pub async fn shutdown_for_restart(self) {
        self.stop(false).await;
    }

    async fn stop(mut self, remove_direct_routes: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(remove_direct_routes);
        }
        let _ = (&mut self.task).await;
        self.lease.shutdown().await;
    }
}

/// What `linen.1` is programmed with: this node's `subnet` and `mtu`, a route and a permanent
/// neighbour per peer.
pub fn overlay_state(subnet: Ipv4Net, mtu: u32, peers: &[RemoteNode]) -> OverlayState {
    OverlayState {
        local_subnet: subnet,
        mtu,
        routes: peers
            .iter()
            .map(|p| OverlayRoute { subnet: p.subnet, vtep_mac: p.vtep_mac })
            .collect(),
    }
}

/// The state of the peer-watch task.
struct Sync {
    kernel: Kernel,
    dp: DatapathHandles,
    watcher: PeerWatcher<EtcdRegistry>,
    own: watch::Receiver<Option<Lease>>,
    subnet: Ipv4Net,
    subnet_tx: watch::Sender<Ipv4Net>,
    /// The peers routed to, for whoever stores them.
    peers_tx: watch::Sender<Vec<RemoteNode>>,
    peers: Vec<RemoteNode>,
    /// Resolved underlay next hops; emptied on every full resync so they are looked up afresh.
    next_hops: NextHopCache,
    /// What the kernel was last programmed with successfully; `None` until the first full
    /// apply and after a failure, so that the next apply converges from a fresh listing.
    programmed: Option<OverlayState>,
    /// Changes of the underlay interface's neighbours (`None` when they cannot be followed).
    neighbours: Option<mpsc::UnboundedReceiver<NeighbourChange>>,
    /// When the next hops are looked up again after a neighbour change (at most once per
    /// [`HOPS_REFRESH_GAP`]).
    hops_refresh_at: Option<Instant>,
    /// When they were last looked up again.
    hops_refreshed: Instant,
    /// Where the network config is re-read from.
    registry: EtcdRegistry,
    /// The network config as last read; only `Backend.DirectRouting` is followed at run time.
    config: NetworkConfig,
    /// The cluster network (direct routes are recognised inside it).
    network: Ipv4Net,
    /// The underlay device's name (for messages).
    underlay: String,
    /// The last reason the re-read config could not be used (logged once per reason).
    config_error: Option<String>,
    /// Whether each peer public IP is reachable directly over the underlay (no gateway), as
    /// the kernel answered; emptied whenever next hops are looked up afresh.
    direct_reach: HashMap<Ipv4Addr, bool>,
    /// The direct routes last programmed; `None` when unknown (at start, after a failure), so
    /// that the next apply converges from a listing.
    direct: Option<Vec<DirectRoute>>,
}

/// How often the network config is re-read to follow `Backend.DirectRouting`.
pub const CONFIG_RECHECK: Duration = Duration::from_secs(5);

/// The shortest time between two look-ups of every underlay next hop caused by neighbour
/// changes: a busy underlay segment changes neighbour states often, and a look-up of thousands
/// of peers costs a route request each.
const HOPS_REFRESH_GAP: Duration = Duration::from_secs(1);

/// The next change on `rx`, or never when there is no channel.
async fn next_change(
    rx: &mut Option<mpsc::UnboundedReceiver<NeighbourChange>>,
) -> Option<NeighbourChange> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// At most this many watch updates that are already waiting are folded into one apply, so a
/// burst of lease changes costs one snapshot build and one kernel diff instead of one each.
const MAX_COALESCED: usize = 256;

impl Sync {
    async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<bool>) {
        let mut recheck =
            tokio::time::interval_at(tokio::time::Instant::now() + CONFIG_RECHECK, CONFIG_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // `PeerWatcher::next` loses nothing when dropped between awaits (a received batch is
        // processed without awaiting), so selecting on it with our own lease is safe.
        loop {
            tokio::select! {
                remove = &mut stop => {
                    if remove.unwrap_or(true) {
                        self.remove_direct_routes().await;
                    }
                    return;
                }
                _ = recheck.tick() => self.recheck_config().await,
                change = next_change(&mut self.neighbours) => {
                    let Some(first) = change else {
                        warn!("lost the underlay neighbour watch; next hops are looked up again only on resync");
                        self.neighbours = None;
                        continue;
                    };
                    let mut relevant = self.hop_changed(first);
                    while let Some(more) = self.neighbours.as_mut().and_then(|rx| rx.try_recv().ok()) {
                        relevant |= self.hop_changed(more);
                    }
                    if relevant && self.hops_refresh_at.is_none() {
                        self.hops_refresh_at =
                            Some((self.hops_refreshed + HOPS_REFRESH_GAP).max(Instant::now()));
                    }
                }
                _ = tokio::time::sleep_until(self.hops_refresh_at.unwrap_or_else(Instant::now).into()),
                    if self.hops_refresh_at.is_some() => {
                    self.hops_refresh_at = None;
                    self.hops_refreshed = Instant::now();
                    self.next_hops.clear();
                    self.direct_reach.clear();
                    info!("underlay neighbours changed; next hops looked up again");
                    self.apply(Instant::now(), false).await;
                }
                changed = self.own.changed() => {
                    if changed.is_err() {
                        // The lease keeper stopped (shutdown): nothing more to follow.
                        if (&mut stop).await.unwrap_or(true) {
                            self.remove_direct_routes().await;
                        }
                        return;
                    }
                    let lease = self.own.borrow_and_update().clone();
                    match lease {
                        None => warn!("our lease vanished from etcd; claiming a subnet again (forwarding continues)"),
                        Some(l) if l.subnet != self.subnet => {
                            warn!(old = %self.subnet, new = %l.subnet, "our subnet changed; re-addressing the overlay");
                            self.subnet = l.subnet;
                            self.subnet_tx.send_replace(l.subnet);
                            self.apply(Instant::now(), true).await;
                        }
                        Some(_) => {}
                    }
                }
                update = self.watcher.next() => {
                    let received = Instant::now();
                    self.dp.state.observe_watch(&self.watcher, &update);
                    match update {
                        WatchUpdate::Peers(u) => {
                            let (mut resync, mut changes, mut revision) =
                                (u.resync, u.events.len(), u.revision);
                            // Take the updates that are already waiting (never awaiting: see
                            // above), so that a burst is applied once.
                            for _ in 0..MAX_COALESCED {
                                let Some(more) = self.watcher.next().now_or_never() else { break };
                                self.dp.state.observe_watch(&self.watcher, &more);
                                match more {
                                    WatchUpdate::Peers(m) => {
                                        resync |= m.resync;
                                        changes += m.events.len();
                                        revision = m.revision;
                                    }
                                    WatchUpdate::Disconnected { error } => {
                                        error!(
                                            "etcd unreachable: {error}; forwarding continues on {} known peer routes, reconnecting",
                                            self.watcher.peers().count()
                                        );
                                        break;
                                    }
                                }
                            }
                            self.peers = self
                                .watcher
                                .peers()
                                .map(|p| RemoteNode { subnet: p.subnet, public_ip: p.public_ip, vtep_mac: p.vtep_mac.0 })
                                .collect();
                            self.peers.sort_by_key(|p| p.subnet);
                            if resync {
                                self.next_hops.clear();
                                self.direct_reach.clear();
                            }
                            info!(
                                revision,
                                resync,
                                changes,
                                peers = self.peers.len(),
                                "peer update"
                            );
                            // A resync (first listing, after compaction or a restored store)
                            // converges the kernel from a fresh listing; other updates write
                            // only the difference to what was programmed last.
                            self.apply(received, resync).await;
                        }
                        WatchUpdate::Disconnected { error } => {
                            error!(
                                "etcd unreachable: {error}; forwarding continues on {} known peer routes, reconnecting",
                                self.peers.len()
                            );
                        }
                    }
                }
            }
        }
    }

    /// The direct routes the current peers get: none without `DirectRouting`, else one per peer
    /// whose public IP the kernel reaches over the underlay device without a gateway (asked
    /// once per IP, in one pipelined batch, and remembered until next hops are looked up again).
    async fn direct_routes(&mut self) -> Vec<DirectRoute> {
        if !self.config.backend.direct_routing {
            return Vec::new();
        }
        let mut missing: Vec<Ipv4Addr> = self
            .peers
            .iter()
            .map(|p| p.public_ip)
            .filter(|ip| !self.direct_reach.contains_key(ip))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let answers = self.kernel.route_gets(&missing).await;
        let mut failed = None;
        for (ip, answer) in missing.iter().zip(answers) {
            match answer {
                Ok(r) => {
                    let direct =
                        r.gateway.is_none() && !r.local && r.oif == Some(self.dp.underlay_ifindex);
                    self.direct_reach.insert(*ip, direct);
                }
                // Not remembered: asked again at the next update.
                Err(e) => {
                    failed.get_or_insert((*ip, e));
                }
            }
        }
        if let Some((peer, error)) = failed {
            warn!(%peer, %error, "cannot look up the route to a peer; it stays on VXLAN");
        }
        self.peers
            .iter()
            .filter(|p| self.direct_reach.get(&p.public_ip) == Some(&true))
            .map(|p| DirectRoute { subnet: p.subnet, gateway: p.public_ip })
            .collect()
    }

    /// The direct routes wanted now, and `known` (the ones programmed last) as it stands after
    /// programming the new ones. If that fails every peer stays on VXLAN until the next update:
    /// nothing is wanted and nothing counts as known, so [`Sync::finish_direct_routes`] lists and
    /// removes whatever did get programmed (after the overlay routes replaced it).
    async fn add_direct_routes(
        &mut self,
        known: Option<Vec<DirectRoute>>,
    ) -> (Vec<DirectRoute>, Option<Vec<DirectRoute>>) {
        let direct = self.direct_routes().await;
        let added: Vec<DirectRoute> = match &known {
            Some(k) => {
                let k: HashSet<&DirectRoute> = k.iter().collect();
                direct.iter().filter(|r| !k.contains(r)).copied().collect()
            }
            None => direct.clone(),
        };
        let index = self.dp.underlay_ifindex;
        match self.kernel.replace_direct_routes(index, &self.underlay, &added).await {
            Ok(()) => (direct, known),
            Err(e) => {
                error!("DirectRouting: {e}; every peer stays on VXLAN until the next update");
                (Vec::new(), None)
            }
        }
    }

    /// Removes the direct routes no longer wanted and records what is programmed.
    async fn finish_direct_routes(
        &mut self,
        direct: Vec<DirectRoute>,
        known: Option<Vec<DirectRoute>>,
        vxlan: usize,
    ) {
        let (index, network) = (self.dp.underlay_ifindex, self.network);
        let removed = self
            .kernel
            .remove_direct_routes(index, &self.underlay, network, &direct, known.as_deref())
            .await;
        match removed {
            Ok(()) => {
                if known.as_ref() != Some(&direct) && (!direct.is_empty() || known.is_some()) {
                    info!(
                        direct = direct.len(),
                        vxlan, "DirectRouting: peers on this underlay segment routed without VXLAN"
                    );
                }
                self.direct = Some(direct);
            }
            Err(e) => error!("removing direct routes failed: {e}; retried at the next update"),
        }
    }

    /// Re-reads the network config; a changed `Backend.DirectRouting` is applied at once, other
    /// changes are logged once as needing a restart. While etcd is unreachable the watch reports
    /// the outage; this check stays quiet.
    async fn recheck_config(&mut self) {
        let cfg = match load_config(&self.registry).await {
            Ok(c) => c,
            Err(LoadConfigError::Registry(_)) => return,
            Err(e) => {
                if self.config_error.as_deref() != Some(&e.to_string()) {
                    warn!("cannot use the network config: {e}; keeping the running one");
                    self.config_error = Some(e.to_string());
                }
                return;
            }
        };
        self.config_error = None;
        if cfg == self.config {
            return;
        }
        let direct_routing = cfg.backend.direct_routing;
        let mut rest = cfg.clone();
        rest.backend.direct_routing = self.config.backend.direct_routing;
        if rest != self.config {
            warn!(
                "the network config in etcd changed beyond Backend.DirectRouting; restart linend to apply it (Network, SubnetLen, VNI, Port and MTU are read at start)"
            );
        }
        let switched = direct_routing != self.config.backend.direct_routing;
        // Remember the whole config, so the warning above comes once per change.
        self.config = cfg;
        if switched {
            info!(
                direct_routing,
                "Backend.DirectRouting changed in the network config; following it"
            );
            self.direct_reach.clear();
            self.apply(Instant::now(), false).await;
        }
    }

    /// Removes the direct routes programmed (on shutdown: they would outlive the overlay).
    async fn remove_direct_routes(mut self) {
        let known = self.direct.take();
        if known.as_ref().is_some_and(Vec::is_empty) {
            return;
        }
        let (index, network) = (self.dp.underlay_ifindex, self.network);
        if let Err(e) = self
            .kernel
            .remove_direct_routes(index, &self.underlay, network, &[], known.as_deref())
            .await
        {
            warn!("cannot remove the direct routes: {e}");
        }
    }

    /// Whether a neighbour change can change a peer's underlay next hop: a cached hop's MAC
    /// changed or went away, or a neighbour appeared with a MAC no peer uses yet (an unresolved
    /// peer, or a gateway that changed its MAC), or changes were lost. A known MAC merely changing state
    /// does not.
    fn hop_changed(&self, change: NeighbourChange) -> bool {
        let NeighbourChange::Changed(ip, mac) = change else { return true };
        match (self.next_hops.get(&ip), mac) {
            (Some(old), Some(new)) => *old != new,
            (Some(_), None) => true,
            (None, Some(new)) => !self.next_hops.values().any(|m| *m == new),
            (None, None) => false,
        }
    }

    /// Publishes the route snapshot for the current peers, then programs the kernel: the whole
    /// state from a listing when `full` (or when nothing is known to be programmed), else only
    /// the difference to the last programmed state (falling back to the full path on failure).
    async fn apply(&mut self, received: Instant, full: bool) {
        let routes = build_routes(
            &self.kernel,
            &self.dp.config,
            self.dp.underlay_ifindex,
            &self.peers,
            &mut self.next_hops,
        )
        .await;
        self.dp.routes.publish(routes);
        self.peers_tx.send_replace(self.peers.clone());
        let published = received.elapsed();
        // DirectRouting: new direct routes go in first, each replacing its subnet's overlay
        // route in place; the overlay then covers the other peers; direct routes no longer
        // wanted go last, once their subnets' overlay routes have replaced them.
        let known = if full { None } else { self.direct.take() };
        let (direct, known) = self.add_direct_routes(known).await;
        let routed: HashSet<Ipv4Net> = direct.iter().map(|r| r.subnet).collect();
        let vxlan: Vec<RemoteNode> =
            self.peers.iter().filter(|p| !routed.contains(&p.subnet)).copied().collect();
        let state = overlay_state(self.subnet, self.dp.mtu, &vxlan);
        let result = match self.programmed.take() {
            Some(old) if !full => {
                match self.kernel.apply_overlay_changes(OVERLAY_DEV, &old, &state).await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        warn!("programming {OVERLAY_DEV} changes failed: {e}; converging from a listing");
                        self.kernel.apply_overlay(OVERLAY_DEV, &state).await
                    }
                }
            }
            _ => self.kernel.apply_overlay(OVERLAY_DEV, &state).await,
        };
        self.finish_direct_routes(direct, known, vxlan.len()).await;
        match result {
            Ok(()) => {
                self.programmed = Some(state);
                info!(
                    peers = self.peers.len(),
                    publish_us = published.as_micros() as u64,
                    total_us = received.elapsed().as_micros() as u64,
                    "routes published and {OVERLAY_DEV} programmed"
                )
            }
            Err(e) => {
                error!("programming {OVERLAY_DEV} failed: {e}; the datapath has the new routes")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_state_lists_every_peer() {
        let peers = [
            RemoteNode {
                subnet: "10.244.2.0/24".parse().unwrap(),
                public_ip: Ipv4Addr::new(192, 168, 0, 2),
                vtep_mac: [2, 0, 0, 0, 0, 2],
            },
            RemoteNode {
                subnet: "10.244.3.0/24".parse().unwrap(),
                public_ip: Ipv4Addr::new(192, 168, 0, 3),
                vtep_mac: [2, 0, 0, 0, 0, 3],
            },
        ];
        let s = overlay_state("10.244.1.0/24".parse().unwrap(), 1450, &peers);
        assert_eq!(s.local_subnet.to_string(), "10.244.1.0/24");
        assert_eq!(s.mtu, 1450);
        let got: Vec<_> = s.routes.iter().map(|r| (r.subnet.to_string(), r.vtep_mac)).collect();
        assert_eq!(
            got,
            vec![
                ("10.244.2.0/24".to_string(), [2, 0, 0, 0, 0, 2]),
                ("10.244.3.0/24".to_string(), [2, 0, 0, 0, 0, 3])
            ]
        );
    }
}
