//! An in-process [`Registry`] for unit tests, with knobs to simulate what etcd does to a client:
//! lost create races, compaction of history, TTL expiry, dropped watch streams and outages.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use super::{KeyValue, LeaseWatch, Listing, Registry, RegistryError, WatchEvent, WatchMessage};

#[derive(Debug, Default)]
struct State {
    revision: i64,
    config: Option<Vec<u8>>,
    kvs: BTreeMap<String, KeyValue>,
    leases: HashMap<i64, Duration>,
    next_lease: i64,
    history: Vec<(i64, WatchEvent)>,
    compacted: i64,
    /// Values other nodes slip in ahead of our next creates (simulated lost races).
    race_values: Vec<Vec<u8>>,
    /// Incremented to kill every open watch.
    watch_generation: u64,
    down: bool,
}

/// The in-memory registry. Clones share one store.
#[derive(Debug, Clone, Default)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl MemoryRegistry {
    /// An empty store at revision 1 (like a fresh etcd).
    pub fn new() -> MemoryRegistry {
        let r = MemoryRegistry::default();
        r.lock().revision = 1;
        r.lock().next_lease = 0x1000;
        r
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_up(&self, s: &State, op: &'static str) -> Result<(), RegistryError> {
        if s.down {
            return Err(RegistryError::Unavailable {
                op,
                target: "memory".into(),
                message: "simulated outage".into(),
            });
        }
        Ok(())
    }

    fn put_locked(&self, s: &mut State, key: &str, value: Vec<u8>, lease_id: i64) {
        s.revision += 1;
        let kv = KeyValue { key: key.to_string(), value, mod_revision: s.revision, lease_id };
        s.kvs.insert(key.to_string(), kv.clone());
        let rev = s.revision;
        s.history.push((rev, WatchEvent::Put(kv)));
        self.changed.notify_waiters();
    }

    fn delete_locked(&self, s: &mut State, key: &str) {
        if s.kvs.remove(key).is_some() {
            s.revision += 1;
            let rev = s.revision;
            s.history.push((rev, WatchEvent::Delete { key: key.to_string(), mod_revision: rev }));
            self.changed.notify_waiters();
        }
    }

    /// Writes a lease key directly, as another node would (no transaction).
    pub fn put_raw(&self, key: &str, value: impl Into<Vec<u8>>) {
        let mut s = self.lock();
        self.put_locked(&mut s, key, value.into(), 0);
    }

    /// Deletes a lease key directly, as an operator would.
    pub fn delete_raw(&self, key: &str) {
        let mut s = self.lock();
        self.delete_locked(&mut s, key);
    }

    /// Sets `<prefix>/config`.
    pub fn set_config(&self, value: impl Into<Vec<u8>>) {
        self.lock().config = Some(value.into());
    }

    /// The next `values.len()` creates each lose their race: just before the transaction another
    /// node writes the given value at the key being created.
    pub fn lose_next_creates(&self, values: Vec<Vec<u8>>) {
        let mut s = self.lock();
        s.race_values = values;
        s.race_values.reverse();
    }

    /// Forgets history up to and including the current revision, as `etcdctl compact` does;
    /// watches positioned before it get [`WatchMessage::Compacted`].
    pub fn compact(&self) {
        let mut s = self.lock();
        s.compacted = s.revision;
        let rev = s.revision;
        s.history.retain(|(r, _)| *r > rev);
        self.changed.notify_waiters();
    }

    /// Expires a TTL lease now: the lease and every key attached to it disappear.
    pub fn expire(&self, lease_id: i64) {
        let mut s = self.lock();
        s.leases.remove(&lease_id);
        let keys: Vec<String> =
            s.kvs.values().filter(|kv| kv.lease_id == lease_id).map(|kv| kv.key.clone()).collect();
        for k in keys {
            self.delete_locked(&mut s, &k);
        }
    }

    /// Kills every open watch stream (their next call returns an error).
    pub fn drop_watches(&self) {
        self.lock().watch_generation += 1;
        self.changed.notify_waiters();
    }

    /// Simulates an outage: while down every call fails and open watches die.
    pub fn set_down(&self, down: bool) {
        let mut s = self.lock();
        s.down = down;
        if down {
            s.watch_generation += 1;
        }
        self.changed.notify_waiters();
    }

    /// Replaces the whole store with `keys` at revision `revision`, as restoring an older etcd
    /// backup does (revisions go backwards); open watches die.
    pub fn restore(&self, revision: i64, keys: Vec<(String, Vec<u8>)>) {
        let mut s = self.lock();
        s.kvs.clear();
        s.history.clear();
        s.revision = revision;
        s.compacted = revision;
        for (k, v) in keys {
            s.kvs.insert(
                k.clone(),
                KeyValue { key: k, value: v, mod_revision: revision, lease_id: 0 },
            );
        }
        s.watch_generation += 1;
        self.changed.notify_waiters();
    }

    /// Current store revision.
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    /// A copy of one key.
    pub fn get_raw(&self, key: &str) -> Option<KeyValue> {
        self.lock().kvs.get(key).cloned()
    }

    /// Live TTL lease ids.
    pub fn live_leases(&self) -> Vec<i64> {
        self.lock().leases.keys().copied().collect()
    }
}

impl Registry for MemoryRegistry {
    type Watch = MemoryWatch;

    async fn get_config(&self) -> Result<Option<Vec<u8>>, RegistryError> {
        let s = self.lock();
        self.check_up(&s, "read config")?;
        Ok(s.config.clone())
    }

    async fn put_config(&self, value: Vec<u8>) -> Result<(), RegistryError> {
        let mut s = self.lock();
        self.check_up(&s, "write config")?;
        s.config = Some(value);
        Ok(())
    }

    async fn list_leases(&self) -> Result<Listing, RegistryError> {
        let s = self.lock();
        self.check_up(&s, "list leases")?;
        Ok(Listing { revision: s.revision, leases: s.kvs.values().cloned().collect() })
    }

    async fn current_revision(&self) -> Result<i64, RegistryError> {
        let s = self.lock();
        self.check_up(&s, "read revision")?;
        Ok(s.revision)
    }

    async fn get_lease(&self, key: &str) -> Result<Option<KeyValue>, RegistryError> {
        let s = self.lock();
        self.check_up(&s, "read lease")?;
        Ok(s.kvs.get(key).cloned())
    }

    async fn create_lease(
        &self,
        key: &str,
        value: Vec<u8>,
        lease_id: i64,
    ) -> Result<bool, RegistryError> {
        let mut s = self.lock();
        self.check_up(&s, "create lease")?;
        if let Some(theirs) = s.race_values.pop() {
            if !s.kvs.contains_key(key) {
                self.put_locked(&mut s, key, theirs, 0);
            }
        }
        if s.kvs.contains_key(key) {
            return Ok(false);
        }
        if lease_id != 0 && !s.leases.contains_key(&lease_id) {
            return Err(RegistryError::Unavailable {
                op: "create lease",
                target: "memory".into(),
                message: "requested lease not found".into(),
            });
        }
        self.put_locked(&mut s, key, value, lease_id);
        Ok(true)
    }

    async fn update_lease(
        &self,
        key: &str,
        value: Vec<u8>,
        lease_id: i64,
        expected_mod_revision: i64,
    ) -> Result<bool, RegistryError> {
        let mut s = self.lock();
        self.check_up(&s, "update lease")?;
        let current = s.kvs.get(key).map(|kv| kv.mod_revision).unwrap_or(0);
        if current != expected_mod_revision {
            return Ok(false);
        }
        self.put_locked(&mut s, key, value, lease_id);
        Ok(true)
    }

    async fn delete_lease(&self, key: &str) -> Result<(), RegistryError> {
        let mut s = self.lock();
        self.check_up(&s, "delete lease")?;
        self.delete_locked(&mut s, key);
        Ok(())
    }

    async fn grant(&self, ttl: Duration) -> Result<i64, RegistryError> {
        let mut s = self.lock();
        self.check_up(&s, "grant TTL lease")?;
        s.next_lease += 1;
        let id = s.next_lease;
        s.leases.insert(id, ttl);
        Ok(id)
    }

    async fn keep_alive(&self, lease_id: i64) -> Result<Option<Duration>, RegistryError> {
        let s = self.lock();
        self.check_up(&s, "keep-alive")?;
        Ok(s.leases.get(&lease_id).copied())
    }

    async fn revoke(&self, lease_id: i64) -> Result<(), RegistryError> {
        {
            let s = self.lock();
            self.check_up(&s, "revoke TTL lease")?;
        }
        self.expire(lease_id);
        Ok(())
    }

    async fn watch_leases(&self, from_revision: i64) -> Result<MemoryWatch, RegistryError> {
        let s = self.lock();
        self.check_up(&s, "watch leases")?;
        Ok(MemoryWatch {
            registry: self.clone(),
            next: from_revision,
            generation: s.watch_generation,
        })
    }

    fn target(&self) -> String {
        "memory".into()
    }
}

/// A watch on a [`MemoryRegistry`].
#[derive(Debug)]
pub struct MemoryWatch {
    registry: MemoryRegistry,
    next: i64,
    generation: u64,
}

impl LeaseWatch for MemoryWatch {
    async fn next(&mut self) -> Result<WatchMessage, RegistryError> {
        loop {
            let notified = self.registry.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let s = self.registry.lock();
                if s.watch_generation != self.generation {
                    return Err(RegistryError::WatchClosed {
                        target: "memory".into(),
                        message: "simulated disconnect".into(),
                    });
                }
                if self.next <= s.compacted {
                    return Ok(WatchMessage::Compacted { compact_revision: s.compacted + 1 });
                }
                let events: Vec<WatchEvent> = s
                    .history
                    .iter()
                    .filter(|(r, _)| *r >= self.next)
                    .map(|(_, e)| e.clone())
                    .collect();
                if !events.is_empty() {
                    let revision = s.history.last().map(|(r, _)| *r).unwrap_or(s.revision);
                    self.next = revision + 1;
                    return Ok(WatchMessage::Events { revision, events });
                }
            }
            notified.await;
        }
    }
}
