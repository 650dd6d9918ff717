//! [`Published`]: the read-copy-update cell that hands route snapshots to the workers.
//!
//! Readers call [`Published::load`] once per batch and keep the returned [`Snapshot`] guard for
//! the batch: every lookup under one guard sees one complete snapshot. `load` is arc-swap's
//! lock-free fast path (a thread-local debt slot, no reference-count traffic on a shared line);
//! it never blocks and never takes a lock.
//!
//! The writer swaps a new snapshot in with [`Published::publish`]. The snapshot it replaced is
//! *retired*: the cell keeps one reference to it and drops it on a later `publish` (or
//! [`Published::reclaim`]) once no reader holds it any more. The last reference to an old
//! snapshot is therefore always released by the writer, so a reader never pays for freeing a
//! table (tens of megabytes and a hundred thousand values) in the middle of a batch.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

/// A value published RCU-style: lock-free reads, replace-and-retire writes.
pub struct Published<T> {
    current: ArcSwap<T>,
    /// Replaced snapshots that readers may still hold. Touched only by writers.
    retired: Mutex<Vec<Arc<T>>>,
}

/// A reader's view of one published snapshot, held for the duration of a batch.
///
/// Holding a guard keeps its snapshot alive; drop it before blocking or sleeping so the writer
/// can reclaim old snapshots. A thread holding more than a few guards at once still works but
/// falls back to reference counting (arc-swap's slow path).
pub struct Snapshot<'a, T> {
    guard: arc_swap::Guard<Arc<T>>,
    _cell: PhantomData<&'a Published<T>>,
}

impl<T> Deref for Snapshot<'_, T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T: Send + Sync> Published<T> {
    /// A cell publishing `value`.
    pub fn new(value: T) -> Self {
        Self { current: ArcSwap::from_pointee(value), retired: Mutex::new(Vec::new()) }
    }

    /// The current snapshot. Never blocks and never locks; meant to be called once per batch.
    #[inline]
    pub fn load(&self) -> Snapshot<'_, T> {
        Snapshot { guard: self.current.load(), _cell: PhantomData }
    }

    /// Swaps `value` in as the current snapshot.
    ///
    /// Readers that loaded the old snapshot keep using it until they drop their guards; the old
    /// snapshot is retired and freed by a later `publish`/`reclaim` after that. Writers may call
    /// this from several threads; they serialise on a writer-only lock readers never touch.
    pub fn publish(&self, value: T) {
        let old = self.current.swap(Arc::new(value));
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        retired.push(old);
        Self::sweep(&mut retired);
    }

    /// Frees what can be freed, builds the next snapshot with `build`, and publishes it.
    ///
    /// Sweeping first matters when snapshots recycle their memory (as [`super::Table`]s built
    /// by one [`super::TableBuilder`] do): the snapshot replaced last time is usually free by
    /// now, and its arrays are then ready for `build` to reuse instead of mapping fresh ones.
    pub fn publish_with(&self, build: impl FnOnce() -> T) {
        self.reclaim();
        self.publish(build());
    }

    /// Frees retired snapshots no reader holds any more; returns how many are still held.
    pub fn reclaim(&self) -> usize {
        let mut retired = self.retired.lock().unwrap_or_else(PoisonError::into_inner);
        Self::sweep(&mut retired);
        retired.len()
    }

    fn sweep(retired: &mut Vec<Arc<T>>) {
        // arc-swap's `swap` has already converted every reader's borrowed slot for the old
        // pointer into a counted reference, so a count of 1 means only this list holds it.
        retired.retain(|snapshot| Arc::strong_count(snapshot) > 1);
    }
}

impl<T: Send + Sync + Default> Default for Published<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T> std::fmt::Debug for Published<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published").finish_non_exhaustive()
    }
}
