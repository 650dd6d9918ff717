//! The peer watch: every other node's vxlan lease, kept current from etcd.
//!
//! [`PeerWatcher::next`] first lists `<prefix>/subnets/` at revision R and yields the whole set
//! (`resync: true`), then watches from R + 1 and yields each change as [`PeerEvent`]s. It keeps a
//! full map of peers ([`PeerWatcher::peers`]), so a caller can either apply the events one by one
//! (kernel routes and neighbours) or rebuild a whole route snapshot from the map after each update —
//! both views always agree.
//!
//! - A broken stream (etcd restarted, network cut) is reopened from the last revision seen, with
//!   backoff; [`WatchUpdate::Disconnected`] is yielded once per outage so the daemon can report it.
//!   Known peers stay in the map meanwhile: forwarding continues on them.
//! - When that revision has been compacted away, the watcher re-lists and yields the difference
//!   between what it knew and what is there now (again `resync: true`).
//! - A changed VtepMAC or PublicIP on an existing key is an [`PeerEvent::Upsert`] of that subnet.
//! - Our own lease (from the [`crate::manager::LeaseHandle`]) never appears as a peer, nor does any
//!   other lease carrying our PublicIP (a stale lease of ours from before a subnet change must not
//!   become a route to ourselves); when our lease changes, the map is re-filtered and the
//!   difference yielded.
//! - Values that do not decode, keys that are not subnets and non-vxlan leases are skipped (the
//!   key's previous peer, if any, is removed — its value no longer describes a vxlan node) with a
//!   rate-limited warning.
//!
//! Nothing here panics on what other nodes wrote, and one bad value never stalls the stream.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::lease::{decode_lease, parse_subnet_key, LeaseValue, MacAddr};
use crate::manager::Lease;
use crate::registry::{LeaseWatch, Registry, RegistryError, WatchEvent, WatchMessage};

/// Another node, as its lease describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its pod subnet.
    pub subnet: Ipv4Net,
    /// Its underlay (VTEP) IPv4 address.
    pub public_ip: Ipv4Addr,
    /// MAC of its VXLAN device.
    pub vtep_mac: MacAddr,
    /// The VNI it announced.
    pub vni: u32,
}

/// One change to the peer set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// A peer appeared or changed (PublicIP, VtepMAC or VNI).
    Upsert(Peer),
    /// A peer is gone.
    Remove {
        /// Its subnet.
        subnet: Ipv4Net,
    },
}

/// A batch of changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    /// The etcd revision the peer map now reflects.
    pub revision: i64,
    /// True for a full (re-)listing: the first sync, or after compaction. The events are then the
    /// difference between the previous map and the listing.
    pub resync: bool,
    /// The changes, at most one per subnet.
    pub events: Vec<PeerEvent>,
}

/// What [`PeerWatcher::next`] yields.
#[derive(Debug)]
pub enum WatchUpdate {
    /// The peer map changed (or the first sync finished, possibly with no peers).
    Peers(PeerUpdate),
    /// etcd became unreachable. The watcher keeps retrying inside `next`; known peers stay.
    Disconnected {
        /// The error that broke the connection.
        error: RegistryError,
    },
}

/// At most `PER_WINDOW` warnings per `WINDOW`; the rest are counted and reported later.
#[derive(Debug)]
struct WarnLimiter {
    window_start: Instant,
    in_window: u32,
    suppressed: u64,
}

const WINDOW: Duration = Duration::from_secs(60);
const PER_WINDOW: u32 = 10;

impl WarnLimiter {
    fn new() -> Self {
        WarnLimiter { window_start: Instant::now(), in_window: 0, suppressed: 0 }
    }

    fn allow(&mut self) -> bool {
        if self.window_start.elapsed() >= WINDOW {
            if self.suppressed > 0 {
                warn!(suppressed = self.suppressed, "more unusable lease values were skipped");
            }
            self.window_start = Instant::now();
            self.in_window = 0;
            self.suppressed = 0;
        }
        if self.in_window < PER_WINDOW {
            self.in_window += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

/// Follows every other node's lease. See the module docs.
pub struct PeerWatcher<R: Registry> {
    registry: R,
    own_rx: Option<watch::Receiver<Option<Lease>>>,
    own: Option<(Ipv4Net, Ipv4Addr)>,
    all: BTreeMap<Ipv4Net, Peer>,
    revision: i64,
    need_resync: bool,
    stream: Option<R::Watch>,
    connected: bool,
    reported_down: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
    max_backoff: Duration,
    limiter: WarnLimiter,
}

impl<R: Registry> PeerWatcher<R> {
    /// A watcher that hides the lease published on `own` (pass
    /// [`crate::manager::LeaseHandle::subscribe`]; `None` to see every lease, as `linenctl` does).
    pub fn new(registry: R, own: Option<watch::Receiver<Option<Lease>>>) -> Self {
        let own_subnet = own.as_ref().and_then(|rx| rx.borrow().as_ref().map(own_key));
        PeerWatcher {
            registry,
            own_rx: own,
            own: own_subnet,
            all: BTreeMap::new(),
            revision: 0,
            need_resync: true,
            stream: None,
            connected: false,
            reported_down: false,
            retry_at: None,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            limiter: WarnLimiter::new(),
        }
    }

    /// Caps the reconnect backoff (default 2 s; it starts at 200 ms).
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Every known peer (our own lease excluded), by subnet.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> + '_ {
        self.all.values().filter(move |p| !self.is_own(p))
    }

    /// The peer holding `subnet`, if any (never our own).
    pub fn peer(&self, subnet: Ipv4Net) -> Option<&Peer> {
        self.view(subnet)
    }

    /// The revision the peer map reflects (0 before the first sync).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Whether the watch stream is currently established.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the first listing has been applied.
    pub fn is_synced(&self) -> bool {
        self.revision > 0
    }

    fn is_own(&self, p: &Peer) -> bool {
        self.own.is_some_and(|(subnet, ip)| p.subnet == subnet || p.public_ip == ip)
    }

    fn view(&self, subnet: Ipv4Net) -> Option<&Peer> {
        if self.own.is_some_and(|(s, _)| s == subnet) {
            return None;
        }
        self.all.get(&subnet).filter(|p| !self.is_own(p))
    }

    fn diff(before: Option<Peer>, after: Option<Peer>, subnet: Ipv4Net, out: &mut Vec<PeerEvent>) {
        match (before, after) {
            (b, Some(a)) if b != Some(a) => out.push(PeerEvent::Upsert(a)),
            (Some(_), None) => out.push(PeerEvent::Remove { subnet }),
            _ => {}
        }
    }

    /// Decodes one key/value into the map entry it stands for (`None`: no peer at that key).
    fn decode(&mut self, key: &str, value: &[u8]) -> Option<(Ipv4Net, Option<Peer>)> {
        let Some(subnet) = parse_subnet_key(key) else {
            if self.limiter.allow() {
                warn!(key, "skipping a key under subnets/ that is not a subnet");
            }
            return None;
        };
        let peer = match decode_lease(value) {
            Ok(LeaseValue::Vxlan(l)) => {
                Some(Peer { subnet, public_ip: l.public_ip, vtep_mac: l.vtep_mac, vni: l.vni })
            }
            Ok(LeaseValue::OtherBackend(b)) => {
                if self.limiter.allow() {
                    warn!(%subnet, backend = %b, "skipping a lease of a non-vxlan node");
                }
                None
            }
            Err(e) => {
                if self.limiter.allow() {
                    warn!(%subnet, error = %e, "skipping a malformed lease value");
                }
                None
            }
        };
        Some((subnet, peer))
    }

    fn set(&mut self, subnet: Ipv4Net, peer: Option<Peer>, out: &mut Vec<PeerEvent>) {
        let before = self.view(subnet).copied();
        match peer {
            Some(p) => self.all.insert(subnet, p),
            None => self.all.remove(&subnet),
        };
        let after = self.view(subnet).copied();
        Self::diff(before, after, subnet, out);
    }

    fn set_own(&mut self, own: Option<(Ipv4Net, Ipv4Addr)>, out: &mut Vec<PeerEvent>) {
        if own == self.own {
            return;
        }
        // Rare (re-acquisition): re-filter every key.
        let touched: Vec<Ipv4Net> = self
            .all
            .keys()
            .copied()
            .chain([self.own, own].into_iter().flatten().map(|(s, _)| s))
            .collect();
        let touched: Vec<Ipv4Net> =
            touched.into_iter().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let before: Vec<Option<Peer>> = touched.iter().map(|s| self.view(*s).copied()).collect();
        self.own = own;
        for (s, b) in touched.into_iter().zip(before) {
            let after = self.view(s).copied();
            Self::diff(b, after, s, out);
        }
    }

    async fn resync(&mut self) -> Result<PeerUpdate, RegistryError> {
        let listing = self.registry.list_leases().await?;
        let mut fresh = BTreeMap::new();
        for kv in &listing.leases {
            if let Some((subnet, Some(peer))) = self.decode(&kv.key, &kv.value) {
                fresh.insert(subnet, peer);
            }
        }
        let mut events = Vec::new();
        let gone: Vec<Ipv4Net> =
            self.all.keys().filter(|s| !fresh.contains_key(s)).copied().collect();
        for s in gone {
            self.set(s, None, &mut events);
        }
        for (s, p) in fresh {
            self.set(s, Some(p), &mut events);
        }
        self.revision = listing.revision;
        self.need_resync = false;
        self.stream = None;
        Ok(PeerUpdate { revision: self.revision, resync: true, events })
    }

    fn failed(&mut self, error: RegistryError) -> Option<WatchUpdate> {
        self.stream = None;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        self.connected = false;
        if !self.reported_down {
            self.reported_down = true;
            warn!(target_etcd = %self.registry.target(), error = %error,
                known_peers = self.peers().count(),
                "etcd watch lost; forwarding continues on the known peers while reconnecting");
            return Some(WatchUpdate::Disconnected { error });
        }
        None
    }

    fn reconnected(&mut self) {
        if !self.connected {
            info!(target_etcd = %self.registry.target(), revision = self.revision, "etcd watch established");
        }
        self.connected = true;
        self.reported_down = false;
        self.backoff = Duration::from_millis(200);
    }

    /// Waits for the next change. Cancel-safe between awaits only in the sense that a dropped
    /// call loses no state except a batch being received; callers normally loop on it.
    pub async fn next(&mut self) -> WatchUpdate {
        loop {
            if let Some(at) = self.retry_at.take() {
                tokio::time::sleep_until(at.into()).await;
            }
            if self.need_resync {
                match self.resync().await {
                    Ok(update) => return WatchUpdate::Peers(update),
                    Err(e) => match self.failed(e) {
                        Some(u) => return u,
                        None => continue,
                    },
                }
            }
            if self.stream.is_none() && !self.connected && self.revision > 0 {
                // Back after an outage. If the store's revision is now below ours, etcd was
                // restored from a backup or replaced: our resume point means nothing there.
                match self.registry.current_revision().await {
                    Ok(current) if current < self.revision => {
                        warn!(
                            ours = self.revision,
                            current,
                            "etcd revision went backwards (restored or replaced?); re-listing"
                        );
                        self.need_resync = true;
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => match self.failed(e) {
                        Some(u) => return u,
                        None => continue,
                    },
                }
            }
            if self.stream.is_none() {
                match self.registry.watch_leases(self.revision + 1).await {
                    Ok(s) => {
                        self.stream = Some(s);
                        self.reconnected();
                    }
                    Err(e) => match self.failed(e) {
                        Some(u) => return u,
                        None => continue,
                    },
                }
            }
            enum Got {
                Own(Option<(Ipv4Net, Ipv4Addr)>),
                OwnClosed,
                Msg(Result<WatchMessage, RegistryError>),
            }
            let got = {
                let own_rx = self.own_rx.as_mut();
                let stream = self.stream.as_mut();
                tokio::select! {
                    changed = async {
                        match own_rx {
                            Some(rx) => rx.changed().await.map(|_| rx.borrow_and_update().as_ref().map(own_key)),
                            None => std::future::pending().await,
                        }
                    } => match changed { Ok(s) => Got::Own(s), Err(_) => Got::OwnClosed },
                    m = async {
                        match stream {
                            Some(s) => s.next().await,
                            None => std::future::pending().await,
                        }
                    } => Got::Msg(m),
                }
            };
            let mut events = Vec::new();
            match got {
                Got::OwnClosed => {
                    // The lease manager stopped: keep hiding the subnet we last held.
                    self.own_rx = None;
                }
                Got::Own(None) => {
                    // Re-acquiring: keep hiding the old subnet until a new one is known.
                }
                Got::Own(s) => {
                    self.set_own(s, &mut events);
                    if !events.is_empty() {
                        return WatchUpdate::Peers(PeerUpdate {
                            revision: self.revision,
                            resync: false,
                            events,
                        });
                    }
                }
                Got::Msg(Ok(WatchMessage::Events { revision, events: changes })) => {
                    for ev in changes {
                        match ev {
                            WatchEvent::Put(kv) => {
                                if let Some((subnet, peer)) = self.decode(&kv.key, &kv.value) {
                                    self.set(subnet, peer, &mut events);
                                }
                            }
                            WatchEvent::Delete { key, .. } => {
                                if let Some(subnet) = parse_subnet_key(&key) {
                                    self.set(subnet, None, &mut events);
                                }
                            }
                        }
                    }
                    self.revision = self.revision.max(revision);
                    if !events.is_empty() {
                        return WatchUpdate::Peers(PeerUpdate {
                            revision: self.revision,
                            resync: false,
                            events: coalesce(events),
                        });
                    }
                }
                Got::Msg(Ok(WatchMessage::Compacted { compact_revision })) => {
                    warn!(
                        from = self.revision + 1,
                        compact_revision, "etcd compacted past our watch position; re-listing"
                    );
                    self.need_resync = true;
                    self.stream = None;
                }
                Got::Msg(Err(e)) => {
                    if let Some(u) = self.failed(e) {
                        return u;
                    }
                }
            }
        }
    }
}

fn own_key(l: &Lease) -> (Ipv4Net, Ipv4Addr) {
    (l.subnet, l.attrs.public_ip)
}

/// Keeps only the last event per subnet, in order of last change. Linear in the batch size.
fn coalesce(events: Vec<PeerEvent>) -> Vec<PeerEvent> {
    let subnet = |e: &PeerEvent| match e {
        PeerEvent::Upsert(p) => p.subnet,
        PeerEvent::Remove { subnet } => *subnet,
    };
    let mut last = std::collections::HashMap::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        last.insert(subnet(e), i);
    }
    events.into_iter().enumerate().filter(|(i, e)| last[&subnet(e)] == *i).map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::VxlanLease;
    use crate::registry::MemoryRegistry;

    fn value(ip: [u8; 4], mac_last: u8) -> Vec<u8> {
        VxlanLease {
            public_ip: Ipv4Addr::from(ip),
            vni: 1,
            vtep_mac: MacAddr([2, 0, 0, 0, 0, mac_last]),
        }
        .to_json()
        .into_bytes()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    async fn next_in_time(w: &mut PeerWatcher<MemoryRegistry>) -> WatchUpdate {
        tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("watch update in time")
    }

    async fn peers(w: &mut PeerWatcher<MemoryRegistry>) -> PeerUpdate {
        match next_in_time(w).await {
            WatchUpdate::Peers(u) => u,
            WatchUpdate::Disconnected { error } => panic!("unexpected disconnect: {error}"),
        }
    }

    fn own_lease(subnet: &str) -> Lease {
        Lease {
            subnet: net(subnet),
            attrs: VxlanLease {
                public_ip: Ipv4Addr::new(192, 168, 0, 1),
                vni: 1,
                vtep_mac: MacAddr([2; 6]),
            },
            etcd_lease_id: 1,
            key_revision: 1,
            expires_at: Instant::now(),
        }
    }

    #[tokio::test]
    async fn snapshot_then_changes_with_own_filtered_and_bad_values_skipped() {
        let reg = MemoryRegistry::new();
        reg.put_raw("10.244.1.0-24", value([192, 168, 0, 1], 1)); // ours
        reg.put_raw("10.244.2.0-24", value([192, 168, 0, 2], 2));
        reg.put_raw("10.244.3.0-24", b"{not json".to_vec());
        reg.put_raw("10.244.4.0-24", br#"{"PublicIP":"192.168.0.4","BackendType":"udp"}"#.to_vec());
        reg.put_raw("garbage", value([192, 168, 0, 5], 5));
        reg.put_raw("10.244.9.0-24", value([192, 168, 0, 1], 1)); // a stale lease of ours
        let (_tx, rx) = watch::channel(Some(own_lease("10.244.1.0/24")));
        let mut w = PeerWatcher::new(reg.clone(), Some(rx));
        let u = peers(&mut w).await;
        assert!(u.resync);
        assert_eq!(u.revision, reg.revision());
        assert_eq!(
            u.events,
            vec![PeerEvent::Upsert(Peer {
                subnet: net("10.244.2.0/24"),
                public_ip: Ipv4Addr::new(192, 168, 0, 2),
                vtep_mac: MacAddr([2, 0, 0, 0, 0, 2]),
                vni: 1
            })]
        );
        // Add, MAC change, delete, bad value on a known key.
        reg.put_raw("10.244.5.0-24", value([192, 168, 0, 5], 5));
        let u = peers(&mut w).await;
        assert!(!u.resync);
        assert!(matches!(u.events[..], [PeerEvent::Upsert(p)] if p.subnet == net("10.244.5.0/24")));
        reg.put_raw("10.244.5.0-24", value([192, 168, 0, 5], 0x55));
        let u = peers(&mut w).await;
        assert!(
            matches!(u.events[..], [PeerEvent::Upsert(p)] if p.vtep_mac == MacAddr([2, 0, 0, 0, 0, 0x55]))
        );
        reg.put_raw("10.244.5.0-24", value([192, 168, 0, 5], 0x55)); // same value: no event
        reg.delete_raw("10.244.2.0-24");
        let u = peers(&mut w).await;
        assert_eq!(u.events, vec![PeerEvent::Remove { subnet: net("10.244.2.0/24") }]);
        reg.put_raw("10.244.5.0-24", b"[]".to_vec());
        let u = peers(&mut w).await;
        assert_eq!(u.events, vec![PeerEvent::Remove { subnet: net("10.244.5.0/24") }]);
        // Our own key changing never shows up.
        reg.put_raw("10.244.1.0-24", value([192, 168, 0, 1], 9));
        reg.put_raw("10.244.6.0-24", value([192, 168, 0, 6], 6));
        let u = peers(&mut w).await;
        assert!(matches!(u.events[..], [PeerEvent::Upsert(p)] if p.subnet == net("10.244.6.0/24")));
        assert_eq!(w.peers().map(|p| p.subnet).collect::<Vec<_>>(), vec![net("10.244.6.0/24")]);
    }

    #[tokio::test]
    async fn compaction_resyncs_with_a_correct_diff() {
        let reg = MemoryRegistry::new();
        reg.put_raw("10.244.2.0-24", value([192, 168, 0, 2], 2));
        reg.put_raw("10.244.3.0-24", value([192, 168, 0, 3], 3));
        let mut w = PeerWatcher::new(reg.clone(), None);
        assert_eq!(peers(&mut w).await.events.len(), 2);
        reg.put_raw("10.244.9.0-24", value([192, 168, 0, 9], 9));
        assert_eq!(peers(&mut w).await.events.len(), 1);
        // While the watch is down, things change and history is compacted.
        reg.drop_watches();
        assert!(matches!(next_in_time(&mut w).await, WatchUpdate::Disconnected { .. }));
        reg.delete_raw("10.244.9.0-24");
        reg.delete_raw("10.244.2.0-24");
        reg.put_raw("10.244.3.0-24", value([192, 168, 0, 3], 0x33));
        reg.put_raw("10.244.4.0-24", value([192, 168, 0, 4], 4));
        reg.put_raw("10.244.7.0-24", value([192, 168, 0, 7], 7));
        reg.delete_raw("10.244.7.0-24");
        reg.compact();
        let u = peers(&mut w).await;
        assert!(u.resync);
        let mut ev = u.events.clone();
        ev.sort_by_key(|e| match e {
            PeerEvent::Upsert(p) => p.subnet,
            PeerEvent::Remove { subnet } => *subnet,
        });
        assert_eq!(ev.len(), 4, "{ev:?}");
        assert_eq!(ev[0], PeerEvent::Remove { subnet: net("10.244.2.0/24") });
        assert!(
            matches!(ev[1], PeerEvent::Upsert(p) if p.vtep_mac == MacAddr([2, 0, 0, 0, 0, 0x33]))
        );
        assert!(matches!(ev[2], PeerEvent::Upsert(p) if p.subnet == net("10.244.4.0/24")));
        assert_eq!(ev[3], PeerEvent::Remove { subnet: net("10.244.9.0/24") });
        // And the watch continues afterwards.
        reg.put_raw("10.244.8.0-24", value([192, 168, 0, 8], 8));
        assert!(
            matches!(peers(&mut w).await.events[..], [PeerEvent::Upsert(p)] if p.subnet == net("10.244.8.0/24"))
        );
    }

    #[tokio::test]
    async fn disconnect_resumes_from_last_revision_without_losing_events() {
        let reg = MemoryRegistry::new();
        let mut w = PeerWatcher::new(reg.clone(), None);
        assert!(peers(&mut w).await.events.is_empty());
        reg.set_down(true);
        assert!(matches!(next_in_time(&mut w).await, WatchUpdate::Disconnected { .. }));
        assert!(!w.is_connected());
        reg.set_down(false);
        reg.put_raw("10.244.2.0-24", value([192, 168, 0, 2], 2));
        let u = peers(&mut w).await;
        assert!(!u.resync, "resumed, not re-listed");
        assert_eq!(u.events.len(), 1);
        assert!(w.is_connected());
    }

    #[tokio::test]
    async fn revision_going_backwards_forces_a_resync() {
        let reg = MemoryRegistry::new();
        for i in 2..8u8 {
            reg.put_raw(&format!("10.244.{i}.0-24"), value([192, 168, 0, i], i));
        }
        let mut w = PeerWatcher::new(reg.clone(), None);
        assert_eq!(peers(&mut w).await.events.len(), 6);
        reg.put_raw("10.244.9.0-24", value([192, 168, 0, 9], 9));
        assert_eq!(peers(&mut w).await.events.len(), 1);
        // An old backup: revision 3, holding only .2 and .20.
        reg.restore(
            3,
            vec![
                ("10.244.2.0-24".into(), value([192, 168, 0, 2], 2)),
                ("10.244.20.0-24".into(), value([192, 168, 0, 20], 20)),
            ],
        );
        assert!(matches!(next_in_time(&mut w).await, WatchUpdate::Disconnected { .. }));
        let u = peers(&mut w).await;
        assert!(u.resync);
        assert_eq!(u.revision, 3);
        assert_eq!(u.events.len(), 7, "{:?}", u.events); // 6 removed, 1 added
        assert_eq!(
            w.peers().map(|p| p.subnet).collect::<Vec<_>>(),
            vec![net("10.244.2.0/24"), net("10.244.20.0/24")]
        );
    }

    #[tokio::test]
    async fn own_subnet_change_refilters() {
        let reg = MemoryRegistry::new();
        reg.put_raw("10.244.1.0-24", value([192, 168, 0, 11], 1));
        reg.put_raw("10.244.2.0-24", value([192, 168, 0, 2], 2));
        let (tx, rx) = watch::channel(Some(own_lease("10.244.1.0/24")));
        let mut w = PeerWatcher::new(reg.clone(), Some(rx));
        assert_eq!(peers(&mut w).await.events.len(), 1);
        // We moved to .2 (say the old key was handed over): .1 becomes a peer, .2 disappears.
        tx.send_replace(Some(own_lease("10.244.2.0/24")));
        let u = peers(&mut w).await;
        assert_eq!(u.events.len(), 2, "{:?}", u.events);
        assert!(u.events.contains(&PeerEvent::Remove { subnet: net("10.244.2.0/24") }));
        assert!(w.peer(net("10.244.1.0/24")).is_some());
    }

    /// The daemon runs the watcher inside a spawned task: its future must be `Send`.
    #[allow(dead_code)]
    fn next_is_send(w: &mut PeerWatcher<crate::registry::EtcdRegistry>) {
        fn send<T: Send>(_: T) {}
        send(w.next());
    }

    #[test]
    fn coalesce_keeps_last_per_subnet() {
        let a = net("10.0.1.0/24");
        let b = net("10.0.2.0/24");
        let ev = coalesce(vec![
            PeerEvent::Remove { subnet: a },
            PeerEvent::Remove { subnet: b },
            PeerEvent::Remove { subnet: a },
        ]);
        assert_eq!(ev, vec![PeerEvent::Remove { subnet: b }, PeerEvent::Remove { subnet: a }]);
    }
}
