//! [`TableBuilder`] (the mutable prefix list) and [`Table`] (the immutable snapshot it builds).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::trie::{Dir24_8, Recycler, Trie, V6Trie, CHILD};

/// The IPv4 trie geometry [`Table`] uses: DIR-24-8, chosen by benchmark (see `docs/route.md`;
/// [`super::trie::Dir20_4_4_4`] is the compact alternative at about a third of the lookup rate).
pub type V4Layout = Dir24_8;

/// An immutable longest-prefix-match snapshot over IPv4 and IPv6 prefixes.
///
/// Built by [`TableBuilder::build`] off the fast path; workers read it through
/// [`super::Published`]. Lookups never allocate, lock or fail.
///
/// Memory: the IPv4 trie's 64 MiB root (allocated zeroed, so an unused family is not resident)
/// plus 1 KiB per /24 that holds longer prefixes, the IPv6 trie, and one `V` per prefix.
/// Dropping a table returns its trie arrays to the builder that made it, for the next build.
pub struct Table<V> {
    v4: Trie<V4Layout>,
    v6: Trie<V6Trie>,
    /// Values in build order: IPv4 prefixes first, then IPv6. A trie leaf `n` is `values[n - 1]`.
    values: Vec<V>,
}

impl<V> Table<V> {
    /// An empty table: every lookup misses.
    pub fn empty() -> Self {
        Self { v4: Trie::build([]), v6: Trie::build([]), values: Vec::new() }
    }

    /// The value of the longest IPv4 prefix containing `dst` (`u32::from(Ipv4Addr)`, host order).
    #[inline]
    pub fn lookup_v4(&self, dst: u32) -> Option<&V> {
        self.value(self.v4.lookup(dst))
    }

    /// The value of the longest IPv6 prefix containing `dst` (`u128::from(Ipv6Addr)`).
    #[inline]
    pub fn lookup_v6(&self, dst: u128) -> Option<&V> {
        self.value(self.v6.lookup_v6(dst))
    }

    /// The value of the longest prefix of `dst`'s family containing it.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<&V> {
        match dst {
            IpAddr::V4(a) => self.lookup_v4(a.into()),
            IpAddr::V6(a) => self.lookup_v6(a.into()),
        }
    }

    /// Looks up every address of `dsts`, writing the answers to the same positions of `out`.
    ///
    /// Equivalent to calling [`Table::lookup_v4`] per address; the loop has no dependencies
    /// between iterations, so the CPU overlaps the memory loads of neighbouring lookups.
    ///
    /// # Panics
    /// When `out` is shorter than `dsts`.
    #[inline]
    pub fn lookup_v4_batch<'a>(&'a self, dsts: &[u32], out: &mut [Option<&'a V>]) {
        let out = &mut out[..dsts.len()];
        for (slot, &dst) in out.iter_mut().zip(dsts) {
            *slot = self.lookup_v4(dst);
        }
    }

    /// Number of prefixes (IPv4 and IPv6) in the table.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the table holds no prefix at all.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Bytes held by the lookup structures and the value array (not memory the values own).
    pub fn memory_bytes(&self) -> usize {
        self.v4.memory_bytes()
            + self.v6.memory_bytes()
            + self.values.capacity() * std::mem::size_of::<V>()
    }

    #[inline(always)]
    fn value(&self, leaf: u32) -> Option<&V> {
        // Leaf 0 means "no route"; wrapping it to usize::MAX makes `get` miss without a branch
        // of its own.
        self.values.get((leaf as usize).wrapping_sub(1))
    }
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<V> std::fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("len", &self.len())
            .field("memory_bytes", &self.memory_bytes())
            .finish_non_exhaustive()
    }
}

/// The mutable prefix list a [`Table`] is built from; lives off the fast path.
///
/// Prefixes are normalised to their network (`10.1.2.3/24` is stored as `10.1.2.0/24`), so
/// two spellings of one prefix are one entry.
#[derive(Clone, Debug)]
pub struct TableBuilder<V> {
    /// Keyed by `(prefix_len, network)` so iteration yields the order the tries need.
    v4: BTreeMap<(u8, u32), V>,
    v6: BTreeMap<(u8, u128), V>,
    /// Trie arrays of dropped snapshots, reused by the next build (see [`Recycler`]).
    recycle_v4: Recycler,
    recycle_v6: Recycler,
}

impl<V: Clone> Default for TableBuilder<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone> TableBuilder<V> {
    /// An empty prefix list.
    pub fn new() -> Self {
        Self {
            v4: BTreeMap::new(),
            v6: BTreeMap::new(),
            recycle_v4: Recycler::new(),
            recycle_v6: Recycler::new(),
        }
    }

    /// Sets the value of `prefix`, returning the value it replaces.
    pub fn insert(&mut self, prefix: IpNet, value: V) -> Option<V> {
        match prefix.trunc() {
            IpNet::V4(p) => self.v4.insert((p.prefix_len(), p.network().into()), value),
            IpNet::V6(p) => self.v6.insert((p.prefix_len(), p.network().into()), value),
        }
    }

    /// Removes `prefix`, returning its value.
    pub fn remove(&mut self, prefix: &IpNet) -> Option<V> {
        match prefix.trunc() {
            IpNet::V4(p) => self.v4.remove(&(p.prefix_len(), p.network().into())),
            IpNet::V6(p) => self.v6.remove(&(p.prefix_len(), p.network().into())),
        }
    }

    /// The value stored for exactly `prefix`.
    pub fn get(&self, prefix: &IpNet) -> Option<&V> {
        match prefix.trunc() {
            IpNet::V4(p) => self.v4.get(&(p.prefix_len(), p.network().into())),
            IpNet::V6(p) => self.v6.get(&(p.prefix_len(), p.network().into())),
        }
    }

    /// Removes every prefix.
    pub fn clear(&mut self) {
        self.v4.clear();
        self.v6.clear();
    }

    /// Number of prefixes held.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether no prefix is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every prefix and its value: IPv4 then IPv6, each shortest prefix first.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &V)> + '_ {
        let v4 = self.v4.iter().map(|(&(len, net), v)| {
            let net =
                ipnet::Ipv4Net::new(net.into(), len).expect("stored prefix lengths are valid");
            (IpNet::V4(net), v)
        });
        let v6 = self.v6.iter().map(|(&(len, net), v)| {
            let net =
                ipnet::Ipv6Net::new(net.into(), len).expect("stored prefix lengths are valid");
            (IpNet::V6(net), v)
        });
        v4.chain(v6)
    }

    /// Builds an immutable snapshot of the current prefix list.
    ///
    /// When a snapshot this builder (or a clone of it) built earlier has been dropped, its
    /// lookup arrays are reused, which avoids page-faulting tens of megabytes afresh.
    ///
    /// # Panics
    /// When the list holds 2^31 prefixes or more, or the tries outgrow 2^31 entries (8 GiB):
    /// far beyond the 100k prefixes linen is sized for.
    pub fn build(&self) -> Table<V> {
        let count = self.len();
        assert!(count < CHILD as usize, "too many prefixes for one route table");
        let mut values = Vec::with_capacity(count);
        values.extend(self.v4.values().cloned());
        values.extend(self.v6.values().cloned());
        let v4 = Trie::build_with(
            self.v4.keys().zip(1u32..).map(|(&(len, net), leaf)| (net, u32::from(len), leaf)),
            Some(&self.recycle_v4),
        );
        let first_v6 = self.v4.len() as u32 + 1;
        let v6 = Trie::build_with(
            self.v6.keys().zip(first_v6..).map(|(&(len, net), leaf)| (net, u32::from(len), leaf)),
            Some(&self.recycle_v6),
        );
        Table { v4, v6, values }
    }
}
