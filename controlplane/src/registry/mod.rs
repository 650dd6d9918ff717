//! The `Registry` trait: the etcd operations linen's lease manager and watch need, and nothing
//! more. Keys are given relative to `<prefix>/subnets/` (e.g. `10.244.8.0-24`); the implementation
//! adds the prefix. Values are raw bytes: decoding is [`crate::lease`]'s job, so a registry never
//! judges what other nodes wrote.
//!
//! Two implementations: [`EtcdRegistry`] (etcd v3 through etcd-client, optional TLS client
//! certificates) and [`MemoryRegistry`] (in-process, for unit tests; it can also lose races and
//! compact its history on demand).

use std::future::Future;
use std::time::Duration;

// flannel's formats and the state built on the registry
pub mod config;
pub mod lease;
pub mod manager;
pub mod subnet_env;
pub mod watch;

mod etcd;
mod memory;

pub use etcd::{EtcdOptions, EtcdRegistry, EtcdWatch, TlsFiles};
pub use memory::{MemoryRegistry, MemoryWatch};

/// One lease key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Key below `<prefix>/subnets/`, e.g. `10.244.8.0-24`.
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
    /// Revision of the last write to this key.
    pub mod_revision: i64,
    /// The etcd lease (TTL) attached, 0 for none.
    pub lease_id: i64,
}

/// Every lease key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The store revision the listing reflects; a watch continues from `revision + 1`.
    pub revision: i64,
    /// The keys, in key order.
    pub leases: Vec<KeyValue>,
}

/// A change to one lease key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Created or overwritten.
    Put(KeyValue),
    /// Deleted (or its TTL lease expired).
    Delete {
        /// Key below `<prefix>/subnets/`.
        key: String,
        /// Revision of the deletion.
        mod_revision: i64,
    },
}

/// What a watch yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// Changes up to and including `revision`.
    Events {
        /// Store revision after these events (a later watch resumes at `revision + 1`).
        revision: i64,
        /// The changes, in order. May be empty (progress notification).
        events: Vec<WatchEvent>,
    },
    /// The requested start revision is gone: re-list and diff (then watch from the listing).
    Compacted {
        /// The oldest revision the store still has.
        compact_revision: i64,
    },
}

/// A registry failure. `op` names what was attempted, `target` where (endpoints or "memory").
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The store could not be reached or refused the operation.
    #[error("etcd at {target}: {op} failed: {message}")]
    Unavailable {
        /// The operation (`"list leases"`, `"keep-alive"`, …).
        op: &'static str,
        /// Where (endpoints).
        target: String,
        /// The underlying error.
        message: String,
    },
    /// The watch stream ended; open a new one from the last seen revision.
    #[error("watch on {target} closed: {message}")]
    WatchClosed {
        /// Where (endpoints).
        target: String,
        /// Why, as far as known.
        message: String,
    },
    /// Local setup failed (reading TLS files, bad endpoint).
    #[error("etcd client setup: {0}")]
    Setup(String),
}

/// The etcd operations of flannel's subnet registry.
///
/// Futures are `Send` so a daemon can run them on a multi-threaded runtime.
pub trait Registry: Send + Sync + 'static {
    /// The watch stream type.
    type Watch: LeaseWatch;

    /// Reads `<prefix>/config`; `None` when absent.
    fn get_config(&self) -> impl Future<Output = Result<Option<Vec<u8>>, RegistryError>> + Send;

    /// Writes `<prefix>/config`.
    fn put_config(&self, value: Vec<u8>) -> impl Future<Output = Result<(), RegistryError>> + Send;

    /// Lists every key below `<prefix>/subnets/` with the revision of the listing.
    fn list_leases(&self) -> impl Future<Output = Result<Listing, RegistryError>> + Send;

    /// The store's current revision (no keys transferred).
    fn current_revision(&self) -> impl Future<Output = Result<i64, RegistryError>> + Send;

    /// Reads one lease key.
    fn get_lease(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<KeyValue>, RegistryError>> + Send;

    /// Creates `key` only if it does not exist (`Txn If(Version(key) == 0) Then Put`), attached to
    /// the TTL lease `lease_id` (0: none). `Ok(false)` means another writer holds the key.
    fn create_lease(
        &self,
        key: &str,
        value: Vec<u8>,
        lease_id: i64,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;

    /// Overwrites `key` only if it was last written at `expected_mod_revision`
    /// (`Txn If(ModRevision(key) == expected) Then Put`). `Ok(false)` means it changed meanwhile.
    fn update_lease(
        &self,
        key: &str,
        value: Vec<u8>,
        lease_id: i64,
        expected_mod_revision: i64,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;

    /// Deletes `key` (no error if absent).
    fn delete_lease(&self, key: &str) -> impl Future<Output = Result<(), RegistryError>> + Send;

    /// Grants a TTL lease; returns its id.
    fn grant(&self, ttl: Duration) -> impl Future<Output = Result<i64, RegistryError>> + Send;

    /// Refreshes a TTL lease. `Ok(None)` when it no longer exists (expired or revoked), otherwise
    /// the TTL it now has.
    fn keep_alive(
        &self,
        lease_id: i64,
    ) -> impl Future<Output = Result<Option<Duration>, RegistryError>> + Send;

    /// Revokes a TTL lease (deleting keys attached to it). No error if already gone.
    fn revoke(&self, lease_id: i64) -> impl Future<Output = Result<(), RegistryError>> + Send;

    /// Watches `<prefix>/subnets/` starting at `from_revision` (inclusive).
    fn watch_leases(
        &self,
        from_revision: i64,
    ) -> impl Future<Output = Result<Self::Watch, RegistryError>> + Send;

    /// Where this registry points (for log messages).
    fn target(&self) -> String;
}

/// A watch stream over lease keys.
pub trait LeaseWatch: Send + 'static {
    /// The next batch of changes, or [`WatchMessage::Compacted`]. An error means the stream is
    /// dead: open a new one from the last revision seen.
    fn next(&mut self) -> impl Future<Output = Result<WatchMessage, RegistryError>> + Send;
}

impl<R: Registry> Registry for std::sync::Arc<R> {
    type Watch = R::Watch;
    fn get_config(&self) -> impl Future<Output = Result<Option<Vec<u8>>, RegistryError>> + Send {
        (**self).get_config()
    }
    fn put_config(&self, value: Vec<u8>) -> impl Future<Output = Result<(), RegistryError>> + Send {
        (**self).put_config(value)
    }
    fn list_leases(&self) -> impl Future<Output = Result<Listing, RegistryError>> + Send {
        (**self).list_leases()
    }
    fn current_revision(&self) -> impl Future<Output = Result<i64, RegistryError>> + Send {
        (**self).current_revision()
    }
    fn get_lease(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<KeyValue>, RegistryError>> + Send {
        (**self).get_lease(key)
    }
    fn create_lease(
        &self,
        key: &str,
        value: Vec<u8>,
        lease_id: i64,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send {
        (**self).create_lease(key, value, lease_id)
    }
    fn update_lease(
        &self,
        key: &str,
        value: Vec<u8>,
        lease_id: i64,
        expected_mod_revision: i64,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send {
        (**self).update_lease(key, value, lease_id, expected_mod_revision)
    }
    fn delete_lease(&self, key: &str) -> impl Future<Output = Result<(), RegistryError>> + Send {
        (**self).delete_lease(key)
    }
    fn grant(&self, ttl: Duration) -> impl Future<Output = Result<i64, RegistryError>> + Send {
        (**self).grant(ttl)
    }
    fn keep_alive(
        &self,
        lease_id: i64,
    ) -> impl Future<Output = Result<Option<Duration>, RegistryError>> + Send {
        (**self).keep_alive(lease_id)
    }
    fn revoke(&self, lease_id: i64) -> impl Future<Output = Result<(), RegistryError>> + Send {
        (**self).revoke(lease_id)
    }
    fn watch_leases(
        &self,
        from_revision: i64,
    ) -> impl Future<Output = Result<Self::Watch, RegistryError>> + Send {
        (**self).watch_leases(from_revision)
    }
    fn target(&self) -> String {
        (**self).target()
    }
}
