//! Expanded multibit tries (the DIR-n-m family) over fixed strides.
//!
//! A trie is one flat `Vec<u32>` of *chunks*. The root chunk has `2^STRIDES[0]` entries and sits
//! at offset 0; every deeper chunk has `2^STRIDES[level]` entries. An entry is either
//!
//! - a **leaf**: `0` for "no route" or `index + 1` of the matching prefix's value, or
//! - a **child**: [`CHILD`] `|` the offset of the next level's chunk.
//!
//! Prefixes are *expanded* into every entry they cover at the level where they end, and *pushed*
//! into child chunks when a longer prefix forces a chunk below them, so the entry where a lookup
//! stops already holds the longest match: a lookup is one dependent load per level it descends,
//! with no backtracking.
//!
//! [`Dir24_8`] (the classic DIR-24-8, one load for prefixes up to /24, 64 MiB root) is what
//! [`super::Table`] uses for IPv4; the other IPv4 layouts are kept because the benchmarks compare
//! them (`docs/route.md`). [`V6Trie`] strides IPv6 as 16, then 8 down to /64, then 4.
//!
//! The trie is built once from a prefix list sorted by length (shortest first) and never changed
//! afterwards: [`super::Table`] snapshots are immutable. Building into a recycled array (see
//! [`Recycler`]) avoids page-faulting a large root afresh on every rebuild.

use std::sync::{Arc, Mutex, PoisonError};

/// Marks an entry as a pointer to a child chunk; the low 31 bits are the chunk's offset.
pub const CHILD: u32 = 1 << 31;

/// An address type the trie can be keyed by: a big-endian bit string held in an integer.
pub trait Key: Copy {
    /// Width of the key in bits.
    const BITS: u32;
    /// The `len` bits starting `start` bits from the most significant bit, as an index.
    /// Requires `start < BITS` and `0 < len <= BITS - start`.
    fn bits(self, start: u32, len: u32) -> usize;
}

impl Key for u32 {
    const BITS: u32 = 32;
    #[inline(always)]
    fn bits(self, start: u32, len: u32) -> usize {
        ((self << start) >> (32 - len)) as usize
    }
}

impl Key for u128 {
    const BITS: u32 = 128;
    #[inline(always)]
    fn bits(self, start: u32, len: u32) -> usize {
        // Levels that lie within one 64-bit half (all of [`V6Trie`]'s) shift one register
        // instead of a pair.
        let (high, low) = ((self >> 64) as u64, self as u64);
        if start + len <= 64 {
            ((high << start) >> (64 - len)) as usize
        } else if start >= 64 {
            ((low << (start - 64)) >> (64 - len)) as usize
        } else {
            ((self << start) >> (128 - len)) as usize
        }
    }
}

/// A trie geometry: the key type and the stride of each level (they must sum to the key width).
pub trait Layout {
    /// The address type looked up.
    type Key: Key;
    /// Bits consumed per level, root first; each at most 24.
    const STRIDES: &'static [u32];
}

/// DIR-24-8: a 2^24-entry (64 MiB) root and 256-entry chunks for prefixes longer than /24.
#[derive(Debug)]
pub enum Dir24_8 {}
impl Layout for Dir24_8 {
    type Key = u32;
    const STRIDES: &'static [u32] = &[24, 8];
}

/// DIR-16-8-8: a 2^16-entry (256 KiB) root, then 256-entry chunks for /17–/24 and /25–/32.
#[derive(Debug)]
pub enum Dir16_8_8 {}
impl Layout for Dir16_8_8 {
    type Key = u32;
    const STRIDES: &'static [u32] = &[16, 8, 8];
}

/// DIR-16-4-4-4-4: a 2^16-entry root, then 16-entry (one cache line) chunks.
#[derive(Debug)]
pub enum Dir16_4_4_4_4 {}
impl Layout for Dir16_4_4_4_4 {
    type Key = u32;
    const STRIDES: &'static [u32] = &[16, 4, 4, 4, 4];
}

/// DIR-16-8-4-4: a 2^16-entry root, 256-entry chunks for /17–/24, 16-entry ones beyond.
#[derive(Debug)]
pub enum Dir16_8_4_4 {}
impl Layout for Dir16_8_4_4 {
    type Key = u32;
    const STRIDES: &'static [u32] = &[16, 8, 4, 4];
}

/// DIR-20-4-4-4: a 2^20-entry (4 MiB) root, then 16-entry chunks.
#[derive(Debug)]
pub enum Dir20_4_4_4 {}
impl Layout for Dir20_4_4_4 {
    type Key = u32;
    const STRIDES: &'static [u32] = &[20, 4, 4, 4];
}

/// IPv6: a 2^16-entry root, six levels of 256-entry chunks down to /64 (where node subnets
/// end), then sixteen levels of 16-entry chunks, so a rare long prefix costs one cache line per
/// level rather than a kilobyte.
#[derive(Debug)]
pub enum V6Trie {}
impl Layout for V6Trie {
    type Key = u128;
    const STRIDES: &'static [u32] =
        &[16, 8, 8, 8, 8, 8, 8, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4];
}

/// An immutable expanded multibit trie mapping prefixes to leaf values (`index + 1`).
pub struct Trie<L: Layout> {
    entries: Vec<u32>,
    /// Where `entries` goes when the trie is dropped, for the next build to reuse.
    recycler: Option<Recycler>,
    _layout: std::marker::PhantomData<L>,
}

impl<L: Layout> std::fmt::Debug for Trie<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trie")
            .field("strides", &L::STRIDES)
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// Entry arrays of dropped tries, kept for the next build.
///
/// A large root (64 MiB for DIR-24-8) costs far more to page-fault into a fresh allocation
/// than to overwrite in memory that is already mapped, so tries built with a recycler hand
/// their array back when dropped and the next build starts from it. At most [`SPARES`] arrays
/// are kept; the pool is shared by clones and only touched when a trie is built or dropped
/// (by the writer, off the fast path — see [`super::Published`]).
#[derive(Clone, Debug, Default)]
pub struct Recycler(Arc<Mutex<Vec<Vec<u32>>>>);

/// How many spare arrays a [`Recycler`] keeps.
pub const SPARES: usize = 2;

impl Recycler {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    fn take(&self) -> Option<Vec<u32>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    fn give(&self, entries: Vec<u32>) {
        let mut spares = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if spares.len() < SPARES {
            spares.push(entries);
        }
    }

    /// Bytes held by spare arrays.
    pub fn spare_bytes(&self) -> usize {
        let spares = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        spares.iter().map(|v| v.capacity() * std::mem::size_of::<u32>()).sum()
    }
}

impl<L: Layout> Drop for Trie<L> {
    fn drop(&mut self) {
        if let Some(recycler) = self.recycler.take() {
            recycler.give(std::mem::take(&mut self.entries));
        }
    }
}

/// `slice.fill(value)` as a few large `memmove`s: as fast as `fill` when optimised, and it
/// keeps unoptimised (test) builds from crawling through a 64 MiB root one entry at a time.
fn fill_fast(slice: &mut [u32], value: u32) {
    let seed = slice.len().min(4096);
    slice[..seed].fill(value);
    let mut done = seed;
    while done < slice.len() {
        let n = done.min(slice.len() - done);
        slice.copy_within(..n, done);
        done += n;
    }
}

impl<L: Layout> Trie<L> {
    /// Builds a trie from `(network, prefix_len, leaf)` triples.
    ///
    /// The prefixes must be distinct, have their host bits clear and come **sorted by prefix
    /// length, shortest first** (then a shorter prefix never has to overwrite chunks a longer one
    /// created). `leaf` must be non-zero and below [`CHILD`].
    pub fn build(prefixes: impl IntoIterator<Item = (L::Key, u32, u32)>) -> Self {
        Self::build_with(prefixes, None)
    }

    /// As [`Trie::build`], reusing a spare array from `recycler` when it has one and returning
    /// this trie's array to it on drop.
    pub fn build_with(
        prefixes: impl IntoIterator<Item = (L::Key, u32, u32)>,
        recycler: Option<&Recycler>,
    ) -> Self {
        let root = 1usize << L::STRIDES[0];
        let mut prefixes = prefixes.into_iter().peekable();
        // A default route fills the whole root: write it while initialising instead of after.
        let mut fill = 0;
        if let Some(&(_, 0, leaf)) = prefixes.peek() {
            fill = leaf;
            prefixes.next();
        }
        let spare = recycler.and_then(Recycler::take);
        let recycled = spare.is_some();
        let mut entries = match spare {
            Some(mut entries) => {
                // Overwritten in full below; only the length matters here.
                entries.truncate(root);
                entries.resize(root, 0);
                entries
            }
            // Zeroed allocations come straight from the allocator (lazily mapped zero pages).
            None => vec![0; root],
        };
        if recycled || fill != 0 {
            fill_fast(&mut entries, fill);
        }
        let mut last_len = 0;
        for (key, len, leaf) in prefixes {
            debug_assert!(len >= last_len, "prefixes must come sorted by length");
            debug_assert!(leaf != 0 && leaf < CHILD, "leaf out of range");
            last_len = len;
            Self::insert(&mut entries, key, len, leaf);
        }
        if !recycled {
            // Chunks were appended with amortised doubling; give the slack back (a large
            // allocation shrinks in place, without copying). A recycled array keeps its
            // capacity for the next build.
            entries.shrink_to_fit();
        }
        Self { entries, recycler: recycler.cloned(), _layout: std::marker::PhantomData }
    }

    fn insert(entries: &mut Vec<u32>, key: L::Key, len: u32, leaf: u32) {
        let mut base = 0usize;
        let mut start = 0u32;
        for (level, &stride) in L::STRIDES.iter().enumerate() {
            let end = start + stride;
            let index = base + key.bits(start, stride);
            if len <= end {
                let span = 1usize << (end - len);
                let covered = &mut entries[index..index + span];
                debug_assert!(span > 4096 || covered.iter().all(|e| e & CHILD == 0));
                fill_fast(covered, leaf);
                return;
            }
            let entry = entries[index];
            base = if entry & CHILD != 0 {
                (entry & !CHILD) as usize
            } else {
                // Push the covering leaf (or "no route") down into a fresh chunk.
                let offset = entries.len();
                let child_len = 1usize << L::STRIDES[level + 1];
                assert!(offset + child_len <= CHILD as usize, "route trie too large");
                entries.resize(offset + child_len, entry);
                entries[index] = CHILD | offset as u32;
                offset
            };
            start = end;
        }
        unreachable!("strides cover the whole key");
    }

    /// The leaf of the longest prefix containing `key`: `index + 1`, or 0 when none matches.
    #[inline(always)]
    pub fn lookup(&self, key: L::Key) -> u32 {
        let mut base = 0usize;
        let mut start = 0u32;
        for &stride in L::STRIDES {
            let entry = self.entries[base + key.bits(start, stride)];
            if entry & CHILD == 0 {
                return entry;
            }
            base = (entry & !CHILD) as usize;
            start += stride;
        }
        // The last level never holds children.
        0
    }

    /// Looks up every key of `keys` into the same position of `out` (leaves as for
    /// [`Trie::lookup`]).
    ///
    /// The batch is walked level by level rather than key by key: all loads of one level are
    /// independent of each other, so the CPU keeps many cache misses in flight instead of
    /// waiting out each lookup's chain of dependent loads. Keys that already reached their leaf
    /// re-read entry 0 (always cached) and keep their leaf, so the loop has no data-dependent
    /// branches; a level is skipped once no key in the group needs it.
    ///
    /// # Panics
    /// When `out` is shorter than `keys`.
    #[inline]
    pub fn lookup_batch(&self, keys: &[L::Key], out: &mut [u32]) {
        const GROUP: usize = 32;
        let out = &mut out[..keys.len()];
        for (keys, out) in keys.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
            let first = L::STRIDES[0];
            let mut pending = 0u32;
            for (slot, &key) in out.iter_mut().zip(keys) {
                let entry = self.entries[key.bits(0, first)];
                pending |= entry;
                *slot = entry;
            }
            let mut start = first;
            for &stride in &L::STRIDES[1..] {
                if pending & CHILD == 0 {
                    break;
                }
                pending = 0;
                for (slot, &key) in out.iter_mut().zip(keys) {
                    let entry = *slot;
                    let child = entry & CHILD != 0;
                    let index =
                        if child { (entry & !CHILD) as usize + key.bits(start, stride) } else { 0 };
                    let next = self.entries[index];
                    let entry = if child { next } else { entry };
                    pending |= entry;
                    *slot = entry;
                }
                start += stride;
            }
        }
    }

    /// Bytes of memory the trie holds.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<u32>()
    }
}

impl Trie<V6Trie> {
    /// [`Trie::lookup`] unrolled for [`V6Trie`]'s strides: the levels down to /64 read the
    /// high half of the address, the rest the low half, each with a constant shift.
    #[inline]
    pub fn lookup_v6(&self, key: u128) -> u32 {
        let (high, low) = ((key >> 64) as u64, key as u64);
        let mut entry = self.entries[(high >> 48) as usize];
        for shift in [40u32, 32, 24, 16, 8, 0] {
            if entry & CHILD == 0 {
                return entry;
            }
            entry = self.entries[(entry & !CHILD) as usize + ((high >> shift) & 0xff) as usize];
        }
        for level in (0..16u32).rev() {
            if entry & CHILD == 0 {
                return entry;
            }
            let index = ((low >> (level * 4)) & 0xf) as usize;
            entry = self.entries[(entry & !CHILD) as usize + index];
        }
        debug_assert!(entry & CHILD == 0, "the last level never holds children");
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_cover_the_key() {
        fn total<L: Layout>() -> u32 {
            L::STRIDES.iter().sum()
        }
        assert_eq!(total::<Dir24_8>(), 32);
        assert_eq!(total::<Dir16_8_8>(), 32);
        assert_eq!(total::<Dir16_4_4_4_4>(), 32);
        assert_eq!(total::<Dir16_8_4_4>(), 32);
        assert_eq!(total::<Dir20_4_4_4>(), 32);
        assert_eq!(total::<V6Trie>(), 128);
    }

    #[test]
    fn u128_bits_across_and_within_halves() {
        let key: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        for start in 0..128 {
            for len in 1..=(128 - start).min(24) {
                let want = ((key << start) >> (128 - len)) as usize;
                assert_eq!(key.bits(start, len), want, "start {start} len {len}");
            }
        }
    }

    #[test]
    fn unrolled_v6_lookup_agrees_with_the_generic_one() {
        let strides: Vec<u32> = V6Trie::STRIDES.to_vec();
        assert_eq!(&strides[..7], &[16, 8, 8, 8, 8, 8, 8], "lookup_v6 assumes these strides");
        assert!(strides[7..].iter().all(|&s| s == 4) && strides.len() == 23);
        let base: u128 = 0xfd00_0010_0244_0008_0000_0000_0000_0000;
        let mut prefixes = [
            (0u128, 0u32, 1u32),
            (base, 48, 2),
            (base, 64, 3),
            (base | 0xab00_0000_0000_0000, 72, 4),
            (base | 0xabcd_0000_0000_0007, 128, 5),
            (base | 0xabcd_0000_0000_0000, 126, 6),
        ];
        prefixes.sort_by_key(|p| p.1);
        let trie = Trie::<V6Trie>::build(prefixes.iter().copied());
        let probes = [
            0,
            u128::MAX,
            base,
            base | 1,
            base | 0xab12_0000_0000_0000,
            base | 0xabcd_0000_0000_0007,
            base | 0xabcd_0000_0000_0006,
            base | 0xabcd_0000_0000_0008,
            base ^ (1 << 70),
        ];
        for key in probes {
            assert_eq!(trie.lookup_v6(key), trie.lookup(key), "key {key:#x}");
        }
        assert_eq!(trie.lookup_v6(base | 0xabcd_0000_0000_0007), 5);
        assert_eq!(trie.lookup_v6(base | 0xabcd_0000_0000_0002), 6);
        assert_eq!(trie.lookup_v6(base | 0xabcd_0000_0000_0005), 4);
        assert_eq!(trie.lookup_v6(base | 0xab00_0000_0000_0001), 4);
    }

    #[test]
    fn fill_fast_fills_every_entry() {
        for len in [0, 1, 4095, 4096, 4097, 10_000, 1 << 16] {
            let mut v = vec![7u32; len];
            fill_fast(&mut v, 9);
            assert!(v.iter().all(|&e| e == 9), "len {len}");
        }
    }

    #[test]
    fn recycled_arrays_start_clean() {
        let recycler = Recycler::new();
        let a = Trie::<Dir16_8_8>::build_with([(0, 0, 1), (0x0a01_0280, 25, 2)], Some(&recycler));
        assert_eq!(a.lookup(0x0a01_02ff), 2);
        drop(a);
        assert!(recycler.spare_bytes() > 0);
        let b = Trie::<Dir16_8_8>::build_with([(0x0b00_0000, 8, 1)], Some(&recycler));
        assert_eq!(recycler.spare_bytes(), 0);
        assert_eq!(b.lookup(0x0a01_02ff), 0);
        assert_eq!(b.lookup(0x0000_0001), 0);
        assert_eq!(b.lookup(0x0b01_0203), 1);
    }

    #[test]
    fn leaf_pushing_keeps_the_shorter_match_around_a_longer_one() {
        let t = Trie::<Dir16_8_8>::build([
            (0x0a00_0000, 8, 1),  // 10.0.0.0/8
            (0x0a01_0200, 24, 2), // 10.1.2.0/24
            (0x0a01_0280, 25, 3), // 10.1.2.128/25
        ]);
        assert_eq!(t.lookup(0x0a01_0201), 2);
        assert_eq!(t.lookup(0x0a01_02ff), 3);
        assert_eq!(t.lookup(0x0a01_0301), 1);
        assert_eq!(t.lookup(0x0aff_ffff), 1);
        assert_eq!(t.lookup(0x0b00_0000), 0);
    }
}
