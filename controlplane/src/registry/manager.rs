//! The lease manager: claims this node's pod subnet in the registry and keeps it.
//!
//! Policy (the mechanism is the [`Registry`]):
//!
//! 1. **Reuse** a lease whose `PublicIP` is ours (a restart, or a flannel node replaced by linen):
//!    rewritten with our current VtepMAC under a fresh TTL, guarded by its mod revision.
//! 2. Else the subnet recorded in our **subnet.env**, if the config still allows it and nobody
//!    holds it.
//! 3. Else a **random free subnet among the first 100** free ones counting from `SubnetMin`
//!    (random, so nodes starting together rarely collide).
//!
//! Every claim is a transaction `If(Version(key) == 0) Then Put(key, lease)`. A lost race does not
//! end the daemon (flannel exits there): the subnet is marked taken and the next one is tried.
//!
//! The TTL (24 h by default) is an etcd lease kept alive `renew_margin` (60 min) before it ends;
//! failed renewals are retried with backoff. If our key disappears (deleted by an operator,
//! expired during a long outage) the manager claims a subnet again, preferring the one it had.
//! Leases are never deleted on shutdown, so a restarted node gets its subnet back.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::{ConfigError, Ipv4Config, NetworkConfig};
use crate::lease::{decode_lease, parse_subnet_key, subnet_key, LeaseValue, MacAddr, VxlanLease};
use crate::registry::{LeaseWatch, Registry, RegistryError, WatchEvent, WatchMessage};
use crate::subnet_env::{SubnetEnv, SubnetEnvError};

/// flannel's lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long before expiry a lease is renewed by default.
pub const DEFAULT_RENEW_MARGIN: Duration = Duration::from_secs(3600);
/// How many free subnets (from `SubnetMin`) the random pick chooses among.
pub const RANDOM_POOL: usize = 100;
/// How many claims one acquisition attempts before giving up (each lost race costs one).
const MAX_CLAIMS: usize = 32;

/// What this node announces and how it keeps its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOptions {
    /// Our underlay (VTEP) IPv4 address, published as `PublicIP`.
    pub public_ip: Ipv4Addr,
    /// MAC of our VXLAN device, published as `VtepMAC`.
    pub vtep_mac: MacAddr,
    /// Lease TTL (default 24 h).
    pub ttl: Duration,
    /// Renew this long before expiry (default 60 min). When not smaller than `ttl`, renewal
    /// happens at half the TTL.
    pub renew_margin: Duration,
    /// First retry delay after a failed etcd call; doubles up to `max_retry_interval`.
    pub retry_interval: Duration,
    /// Longest retry delay.
    pub max_retry_interval: Duration,
    /// Where to write subnet.env (`None`: do not write it).
    pub subnet_file: Option<PathBuf>,
    /// `FLANNEL_MTU` to write.
    pub mtu: u32,
    /// `FLANNEL_IPMASQ` to write.
    pub ip_masq: bool,
}

impl LeaseOptions {
    /// Defaults: 24 h TTL, 60 min margin, retries from 1 s up to 30 s, no subnet file, no masquerade.
    pub fn new(public_ip: Ipv4Addr, vtep_mac: MacAddr, mtu: u32) -> LeaseOptions {
        LeaseOptions {
            public_ip,
            vtep_mac,
            ttl: DEFAULT_TTL,
            renew_margin: DEFAULT_RENEW_MARGIN,
            retry_interval: Duration::from_secs(1),
            max_retry_interval: Duration::from_secs(30),
            subnet_file: None,
            mtu,
            ip_masq: false,
        }
    }

    /// Time from a renewal to the next one.
    pub fn renew_after(&self) -> Duration {
        if self.renew_margin < self.ttl {
            self.ttl - self.renew_margin
        } else {
            self.ttl / 2
        }
    }
}

/// A subnet this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The pod subnet.
    pub subnet: Ipv4Net,
    /// What we published.
    pub attrs: VxlanLease,
    /// The etcd TTL lease the key is attached to.
    pub etcd_lease_id: i64,
    /// Revision of our last write of the key.
    pub key_revision: i64,
    /// When the TTL runs out unless renewed.
    pub expires_at: Instant,
}

impl Lease {
    /// The key below `<prefix>/subnets/`.
    pub fn key(&self) -> String {
        subnet_key(self.subnet)
    }
}

/// Why a lease could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// etcd failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The network config is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// subnet.env could not be written.
    #[error("writing subnet file: {0}")]
    SubnetFile(#[from] SubnetEnvError),
    /// Every subnet between SubnetMin and SubnetMax is taken.
    #[error("no free subnet in {network} between {min} and {max}: every /{len} is leased; widen Network or remove stale leases")]
    NoFreeSubnet {
        /// Cluster network.
        network: Ipv4Net,
        /// SubnetMin.
        min: Ipv4Addr,
        /// SubnetMax.
        max: Ipv4Addr,
        /// SubnetLen.
        len: u8,
    },
    /// Other nodes won every race we entered.
    #[error("lost {0} subnet races in a row; too many nodes claiming at once — will retry")]
    TooManyRaces(usize),
}

/// Claims and renews this node's lease over a [`Registry`].
#[derive(Debug, Clone)]
pub struct LeaseManager<R> {
    registry: R,
    net: Ipv4Config,
    vni: u32,
    opts: LeaseOptions,
}

impl<R: Registry + Clone> LeaseManager<R> {
    /// A manager for `config` (which must enable IPv4).
    ///
    /// # Errors
    /// [`LeaseError::Config`] when IPv4 is disabled.
    pub fn new(
        registry: R,
        config: &NetworkConfig,
        opts: LeaseOptions,
    ) -> Result<Self, LeaseError> {
        let net = *config.require_ipv4()?;
        Ok(LeaseManager { registry, net, vni: config.backend.vni, opts })
    }

    /// The options in force.
    pub fn options(&self) -> &LeaseOptions {
        &self.opts
    }

    fn attrs(&self) -> VxlanLease {
        VxlanLease { public_ip: self.opts.public_ip, vni: self.vni, vtep_mac: self.opts.vtep_mac }
    }

    fn previous_subnet(&self) -> Option<Ipv4Net> {
        let path = self.opts.subnet_file.as_ref()?;
        let env = SubnetEnv::read(path).ok()?;
        self.net.allows(env.subnet).then_some(env.subnet)
    }

    /// Claims a subnet following the order in the module docs, writes subnet.env and returns the
    /// lease. Lost races are retried with other subnets.
    ///
    /// # Errors
    /// [`LeaseError::Registry`] if etcd fails, [`LeaseError::NoFreeSubnet`] when the network is
    /// full, [`LeaseError::TooManyRaces`] after many lost races, [`LeaseError::SubnetFile`].
    pub async fn acquire(&self) -> Result<Lease, LeaseError> {
        let value = self.attrs().to_json().into_bytes();
        let mut lost: HashSet<Ipv4Net> = HashSet::new();
        let mut tried_previous = false;
        for _ in 0..MAX_CLAIMS {
            let listing = self.registry.list_leases().await?;
            let mut used = HashSet::new();
            let mut mine = None;
            for kv in &listing.leases {
                let Some(subnet) = parse_subnet_key(&kv.key) else { continue };
                used.insert(subnet);
                if mine.is_none() && self.net.allows(subnet) {
                    if let Ok(LeaseValue::Vxlan(l)) = decode_lease(&kv.value) {
                        if l.public_ip == self.opts.public_ip {
                            mine = Some((subnet, kv.clone()));
                        }
                    }
                }
            }
            if let Some((subnet, kv)) = mine {
                let id = self.registry.grant(self.opts.ttl).await?;
                if self.registry.update_lease(&kv.key, value.clone(), id, kv.mod_revision).await? {
                    if kv.lease_id != 0 && kv.lease_id != id {
                        let _ = self.registry.revoke(kv.lease_id).await;
                    }
                    info!(%subnet, "reusing the lease that already carries our public IP");
                    return self.finish(subnet, id).await;
                }
                let _ = self.registry.revoke(id).await;
                continue;
            }
            if !tried_previous {
                tried_previous = true;
                if let Some(subnet) = self.previous_subnet().filter(|s| !used.contains(s)) {
                    if let Some(lease) = self.try_claim(subnet, &value).await? {
                        info!(%subnet, "claimed the subnet recorded in the subnet file");
                        return Ok(lease);
                    }
                    lost.insert(subnet);
                    continue;
                }
            }
            let free: Vec<Ipv4Net> = (0u32..)
                .map_while(|i| self.net.nth_subnet(i))
                .filter(|s| !used.contains(s) && !lost.contains(s))
                .take(RANDOM_POOL)
                .collect();
            if free.is_empty() {
                return Err(LeaseError::NoFreeSubnet {
                    network: self.net.network,
                    min: self.net.subnet_min,
                    max: self.net.subnet_max,
                    len: self.net.subnet_len,
                });
            }
            let subnet = free[fastrand::usize(..free.len())];
            if let Some(lease) = self.try_claim(subnet, &value).await? {
                info!(%subnet, "claimed a free subnet");
                return Ok(lease);
            }
            info!(%subnet, "another node claimed this subnet first; trying another");
            lost.insert(subnet);
        }
        Err(LeaseError::TooManyRaces(MAX_CLAIMS))
    }

    /// [`Self::acquire`] until it succeeds, logging each failure and backing off from
    /// `retry_interval` to `max_retry_interval`. For daemon start-up while etcd may still be
    /// unreachable or the network full; cancel it by dropping the future.
    pub async fn acquire_retrying(&self) -> Lease {
        let mut delay = self.opts.retry_interval;
        loop {
            match self.acquire().await {
                Ok(l) => return l,
                Err(e) => {
                    warn!(error = %e, retry_in = ?delay, "claiming a subnet failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.opts.max_retry_interval);
                }
            }
        }
    }

    async fn try_claim(&self, subnet: Ipv4Net, value: &[u8]) -> Result<Option<Lease>, LeaseError> {
        let id = self.registry.grant(self.opts.ttl).await?;
        if self.registry.create_lease(&subnet_key(subnet), value.to_vec(), id).await? {
            return self.finish(subnet, id).await.map(Some);
        }
        let _ = self.registry.revoke(id).await;
        Ok(None)
    }

    async fn finish(&self, subnet: Ipv4Net, id: i64) -> Result<Lease, LeaseError> {
        let key_revision = self
            .registry
            .get_lease(&subnet_key(subnet))
            .await?
            .map(|kv| kv.mod_revision)
            .unwrap_or(0);
        if let Some(path) = &self.opts.subnet_file {
            SubnetEnv {
                network: self.net.network,
                subnet,
                mtu: self.opts.mtu,
                ip_masq: self.opts.ip_masq,
            }
            .write(path)?;
        }
        Ok(Lease {
            subnet,
            attrs: self.attrs(),
            etcd_lease_id: id,
            key_revision,
            expires_at: Instant::now() + self.opts.ttl,
        })
    }

    /// Refreshes the TTL of `lease`. `Ok(None)` means the TTL lease is gone and the subnet must be
    /// claimed again.
    ///
    /// # Errors
    /// [`LeaseError::Registry`] when etcd could not be asked (retry later; the lease may still be alive).
    pub async fn renew(&self, lease: &Lease) -> Result<Option<Lease>, LeaseError> {
        match self.registry.keep_alive(lease.etcd_lease_id).await? {
            Some(ttl) => Ok(Some(Lease { expires_at: Instant::now() + ttl, ..lease.clone() })),
            None => Ok(None),
        }
    }

    /// Runs the manager in the background from an acquired `lease`: renews it, watches our key,
    /// and claims again when it is lost. The handle publishes the current lease (`None` while a
    /// new one is being claimed).
    pub fn spawn(self, lease: Lease) -> LeaseHandle {
        let (tx, rx) = watch::channel(Some(lease.clone()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(self.run(lease, tx, stop_rx));
        LeaseHandle { rx, stop: Some(stop_tx), task }
    }

    async fn run(
        self,
        mut lease: Lease,
        tx: watch::Sender<Option<Lease>>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        enum Wake {
            Stop,
            Timer,
            Watch(Result<WatchMessage, RegistryError>),
        }
        let mut renew_at = Instant::now() + self.opts.renew_after();
        let mut retry = self.opts.retry_interval;
        let mut stream: Option<R::Watch> = None;
        let mut watch_from = lease.key_revision + 1;
        let mut reopen_at = Instant::now();
        loop {
            if stream.is_none() && Instant::now() >= reopen_at {
                match self.registry.watch_leases(watch_from).await {
                    Ok(s) => stream = Some(s),
                    Err(e) => {
                        debug!(error = %e, "lease manager: cannot watch our key yet");
                        reopen_at = Instant::now() + self.opts.retry_interval;
                    }
                }
            }
            let wake_at = if stream.is_none() { renew_at.min(reopen_at) } else { renew_at };
            let wake = tokio::select! {
                _ = &mut stop => Wake::Stop,
                _ = tokio::time::sleep_until(wake_at.into()) => Wake::Timer,
                m = async {
                    match stream.as_mut() {
                        Some(s) => s.next().await,
                        None => std::future::pending().await,
                    }
                } => Wake::Watch(m),
            };
            let mut lost = false;
            match wake {
                Wake::Stop => return,
                Wake::Timer if Instant::now() >= renew_at => match self.renew(&lease).await {
                    Ok(Some(l)) => {
                        debug!(subnet = %l.subnet, "lease renewed");
                        lease = l;
                        renew_at = Instant::now() + self.opts.renew_after();
                        retry = self.opts.retry_interval;
                        tx.send_replace(Some(lease.clone()));
                    }
                    Ok(None) => {
                        warn!(subnet = %lease.subnet, "our lease expired in etcd; claiming a subnet again");
                        lost = true;
                    }
                    Err(e) => {
                        warn!(subnet = %lease.subnet, error = %e, retry_in = ?retry, "lease renewal failed; retrying");
                        renew_at = Instant::now() + retry;
                        retry = (retry * 2).min(self.opts.max_retry_interval);
                    }
                },
                Wake::Timer => {}
                Wake::Watch(Ok(WatchMessage::Events { revision, events })) => {
                    watch_from = revision + 1;
                    let key = lease.key();
                    for ev in events {
                        match ev {
                            WatchEvent::Delete { key: k, .. } if k == key => lost = true,
                            WatchEvent::Put(kv) if kv.key == key => {
                                let still_ours = matches!(decode_lease(&kv.value),
                                    Ok(LeaseValue::Vxlan(l)) if l.public_ip == self.opts.public_ip);
                                lost = !still_ours;
                            }
                            _ => {}
                        }
                    }
                    if lost {
                        warn!(subnet = %lease.subnet, "our lease key was deleted or taken over; claiming a subnet again");
                    }
                }
                Wake::Watch(Ok(WatchMessage::Compacted { .. })) => {
                    stream = None;
                    match self.registry.list_leases().await {
                        Ok(listing) => {
                            watch_from = listing.revision + 1;
                            let key = lease.key();
                            let ours = listing.leases.iter().find(|kv| kv.key == key).is_some_and(|kv| {
                                matches!(decode_lease(&kv.value), Ok(LeaseValue::Vxlan(l)) if l.public_ip == self.opts.public_ip)
                            });
                            lost = !ours;
                        }
                        Err(e) => {
                            debug!(error = %e, "lease manager: re-list after compaction failed");
                            reopen_at = Instant::now() + self.opts.retry_interval;
                            watch_from = 1; // forces another compaction answer, hence another re-list
                        }
                    }
                }
                Wake::Watch(Err(e)) => {
                    debug!(error = %e, "lease manager: watch on our key broke; reopening");
                    stream = None;
                    reopen_at = Instant::now() + self.opts.retry_interval;
                }
            }
            if lost {
                tx.send_replace(None);
                stream = None;
                let old_id = lease.etcd_lease_id;
                lease = tokio::select! {
                    _ = &mut stop => return,
                    l = self.acquire_retrying() => l,
                };
                if old_id != lease.etcd_lease_id {
                    let _ = self.registry.revoke(old_id).await;
                }
                info!(subnet = %lease.subnet, "lease re-acquired");
                watch_from = lease.key_revision + 1;
                reopen_at = Instant::now();
                renew_at = Instant::now() + self.opts.renew_after();
                retry = self.opts.retry_interval;
                tx.send_replace(Some(lease.clone()));
            }
        }
    }
}

/// A running lease manager.
#[derive(Debug)]
pub struct LeaseHandle {
    rx: watch::Receiver<Option<Lease>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseHandle {
    /// A receiver of the current lease; it changes on renewal and re-acquisition, `None` while a
    /// new subnet is being claimed. Pass it to [`crate::watch::PeerWatcher::new`] so our own lease
    /// is filtered out of the peers.
    pub fn subscribe(&self) -> watch::Receiver<Option<Lease>> {
        self.rx.clone()
    }

    /// The lease held right now.
    pub fn current(&self) -> Option<Lease> {
        self.rx.borrow().clone()
    }

    /// Stops renewing (the lease stays in etcd until its TTL ends, so a restart can reuse it).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for LeaseHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MemoryRegistry;

    const CONFIG: &[u8] = br#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;

    fn opts(ip: [u8; 4], dir: &tempfile::TempDir) -> LeaseOptions {
        let mut o = LeaseOptions::new(Ipv4Addr::from(ip), MacAddr([2, 0, 0, 0, 0, ip[3]]), 1450);
        o.subnet_file = Some(dir.path().join("subnet.env"));
        o.retry_interval = Duration::from_millis(20);
        o
    }

    fn manager(reg: &MemoryRegistry, o: LeaseOptions) -> LeaseManager<MemoryRegistry> {
        LeaseManager::new(reg.clone(), &NetworkConfig::from_json(CONFIG).unwrap(), o).unwrap()
    }

    fn other(ip: &str) -> Vec<u8> {
        format!(r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:00:00:00:00:99"}}}}"#).into_bytes()
    }

    #[tokio::test]
    async fn claims_one_of_the_first_hundred_and_writes_flannel_values() {
        let reg = MemoryRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        let lease = manager(&reg, opts([192, 168, 0, 1], &dir)).acquire().await.unwrap();
        let first = u32::from(Ipv4Addr::new(10, 244, 1, 0));
        let idx = (u32::from(lease.subnet.addr()) - first) >> 8;
        assert!(idx < 100, "{}", lease.subnet);
        let kv = reg.get_raw(&lease.key()).unwrap();
        assert_eq!(
            String::from_utf8(kv.value).unwrap(),
            r#"{"PublicIP":"192.168.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}"#
        );
        assert_eq!(kv.lease_id, lease.etcd_lease_id);
        let env = SubnetEnv::read(&dir.path().join("subnet.env")).unwrap();
        assert_eq!((env.subnet, env.mtu), (lease.subnet, 1450));
    }

    #[tokio::test]
    async fn reuses_a_lease_with_our_public_ip_and_updates_the_mac() {
        let reg = MemoryRegistry::new();
        reg.put_raw("10.244.50.0-24", other("192.168.0.1"));
        reg.put_raw("10.244.51.0-24", other("192.168.0.2"));
        let dir = tempfile::tempdir().unwrap();
        let lease = manager(&reg, opts([192, 168, 0, 1], &dir)).acquire().await.unwrap();
        assert_eq!(lease.subnet.to_string(), "10.244.50.0/24");
        let v = reg.get_raw("10.244.50.0-24").unwrap();
        assert!(String::from_utf8(v.value).unwrap().contains("02:00:00:00:00:01"));
        assert_eq!(v.lease_id, lease.etcd_lease_id);
    }

    #[tokio::test]
    async fn prefers_the_subnet_in_subnet_env() {
        let reg = MemoryRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        SubnetEnv {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: "10.244.200.0/24".parse().unwrap(),
            mtu: 1450,
            ip_masq: false,
        }
        .write(&dir.path().join("subnet.env"))
        .unwrap();
        let lease = manager(&reg, opts([192, 168, 0, 1], &dir)).acquire().await.unwrap();
        assert_eq!(lease.subnet.to_string(), "10.244.200.0/24");
        // Taken by someone else: fall back to a random one.
        let reg2 = MemoryRegistry::new();
        reg2.put_raw("10.244.200.0-24", other("192.168.0.9"));
        let lease = manager(&reg2, opts([192, 168, 0, 1], &dir)).acquire().await.unwrap();
        assert_ne!(lease.subnet.to_string(), "10.244.200.0/24");
    }

    #[tokio::test]
    async fn lost_races_are_retried_with_other_subnets() {
        let reg = MemoryRegistry::new();
        reg.lose_next_creates(vec![
            other("192.168.0.7"),
            other("192.168.0.8"),
            other("192.168.0.9"),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let lease = manager(&reg, opts([192, 168, 0, 1], &dir)).acquire().await.unwrap();
        let listing = reg.list_leases().await.unwrap();
        assert_eq!(listing.leases.len(), 4);
        let mine: Vec<_> = listing.leases.iter().filter(|kv| kv.key == lease.key()).collect();
        assert_eq!(mine.len(), 1);
        assert!(String::from_utf8_lossy(&mine[0].value).contains("192.168.0.1"));
        // The TTL leases granted for lost claims were given back.
        assert_eq!(reg.live_leases(), vec![lease.etcd_lease_id]);
    }

    #[tokio::test]
    async fn full_network_is_a_clear_error_and_odd_keys_count_as_taken() {
        let reg = MemoryRegistry::new();
        let cfg =
            NetworkConfig::from_json(br#"{"Network":"10.9.0.0/28","Backend":{"Type":"vxlan"}}"#)
                .unwrap();
        reg.put_raw("10.9.0.4-30", b"garbage".to_vec());
        reg.put_raw("10.9.0.8-30", br#"{"PublicIP":"1.2.3.4","BackendType":"host-gw"}"#.to_vec());
        let dir = tempfile::tempdir().unwrap();
        let m = LeaseManager::new(reg.clone(), &cfg, opts([192, 168, 0, 1], &dir)).unwrap();
        assert_eq!(m.acquire().await.unwrap().subnet.to_string(), "10.9.0.12/30");
        let m2 = LeaseManager::new(reg.clone(), &cfg, opts([192, 168, 0, 2], &dir)).unwrap();
        let err = m2.acquire().await.unwrap_err();
        assert!(matches!(err, LeaseError::NoFreeSubnet { .. }), "{err}");
        assert!(err.to_string().contains("no free subnet in 10.9.0.0/28"));
    }

    async fn wait_until(mut f: impl FnMut() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached within 5 s");
    }

    #[tokio::test]
    async fn deleted_or_expired_key_is_reacquired_and_renewal_keeps_it() {
        let reg = MemoryRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts([192, 168, 0, 1], &dir);
        o.ttl = Duration::from_millis(400);
        o.renew_margin = Duration::from_millis(300);
        let m = manager(&reg, o);
        let lease = m.acquire().await.unwrap();
        let handle = m.spawn(lease.clone());
        let mut rx = handle.subscribe();
        // Renewal: expiry moves forward.
        let first_expiry = lease.expires_at;
        wait_until(|| rx.borrow().as_ref().is_some_and(|l| l.expires_at > first_expiry)).await;
        // Operator deletes the key: same subnet (from subnet.env) comes back.
        reg.delete_raw(&lease.key());
        wait_until(|| reg.get_raw(&lease.key()).is_some()).await;
        rx.mark_changed();
        wait_until(|| rx.borrow().as_ref().is_some_and(|l| l.etcd_lease_id != lease.etcd_lease_id))
            .await;
        let now = handle.current().unwrap();
        assert_eq!(now.subnet, lease.subnet);
        // TTL expires (e.g. a long outage): claimed again.
        reg.expire(now.etcd_lease_id);
        wait_until(|| handle.current().is_some_and(|l| l.etcd_lease_id != now.etcd_lease_id)).await;
        assert_eq!(handle.current().unwrap().subnet, lease.subnet);
        handle.shutdown().await;
    }

    #[tokio::test]
    async fn acquire_retrying_waits_out_an_outage() {
        let reg = MemoryRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        let m = manager(&reg, opts([192, 168, 0, 1], &dir));
        reg.set_down(true);
        assert!(m.acquire().await.is_err());
        let r = reg.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            r.set_down(false);
        });
        let lease =
            tokio::time::timeout(Duration::from_secs(5), m.acquire_retrying()).await.unwrap();
        assert!(reg.get_raw(&lease.key()).is_some());
    }

    #[tokio::test]
    async fn renewal_failures_are_retried() {
        let reg = MemoryRegistry::new();
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts([192, 168, 0, 1], &dir);
        o.ttl = Duration::from_millis(300);
        o.renew_margin = Duration::from_millis(250);
        let m = manager(&reg, o);
        let lease = m.acquire().await.unwrap();
        let handle = m.spawn(lease.clone());
        reg.set_down(true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let during = handle.current().unwrap().expires_at;
        reg.set_down(false);
        wait_until(|| handle.current().is_some_and(|l| l.expires_at > during)).await;
        assert_eq!(handle.current().unwrap().etcd_lease_id, lease.etcd_lease_id);
        handle.shutdown().await;
    }
}
