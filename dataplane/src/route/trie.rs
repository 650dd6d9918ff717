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
//! with no backtracking. [`Dir24_8`] is the classic DIR-24-8; [`Dir16_8_8`] trades one more load
//! for a 256 KiB root that stays in cache; [`V6Trie`] strides IPv6 as 16 then 8 bits per level.
//!
//! The trie is built once from a prefix list sorted by length (shortest first) and never changed
//! afterwards: [`super::Table`] snapshots are immutable.

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
        ((self << start) >> (128 - len)) as usize
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

/// IPv6: a 2^16-entry root, then fourteen levels of 256-entry chunks.
#[derive(Debug)]
pub enum V6Trie {}
impl Layout for V6Trie {
    type Key = u128;
    const STRIDES: &'static [u32] = &[16, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8];
}

/// An immutable expanded multibit trie mapping prefixes to leaf values (`index + 1`).
pub struct Trie<L: Layout> {
    entries: Vec<u32>,
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

impl<L: Layout> Trie<L> {
    /// Builds a trie from `(network, prefix_len, leaf)` triples.
    ///
    /// The prefixes must be distinct, have their host bits clear and come **sorted by prefix
    /// length, shortest first** (then a shorter prefix never has to overwrite chunks a longer one
    /// created). `leaf` must be non-zero and below [`CHILD`].
    pub fn build(prefixes: impl IntoIterator<Item = (L::Key, u32, u32)>) -> Self {
        let root = 1usize << L::STRIDES[0];
        let mut entries = vec![0u32; root];
        let mut last_len = 0;
        for (key, len, leaf) in prefixes {
            debug_assert!(len >= last_len, "prefixes must come sorted by length");
            debug_assert!(leaf != 0 && leaf < CHILD, "leaf out of range");
            last_len = len;
            Self::insert(&mut entries, key, len, leaf);
        }
        Self { entries, _layout: std::marker::PhantomData }
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
                debug_assert!(covered.iter().all(|e| e & CHILD == 0));
                covered.fill(leaf);
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

    /// Bytes of memory the trie holds.
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<u32>()
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
        assert_eq!(total::<V6Trie>(), 128);
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
