//! [`Routes`]: the snapshot workers read through [`crate::route::Published`]: the pod-subnet
//! route table and the set of known peer VTEPs.

use std::net::Ipv4Addr;

use ipnet::IpNet;

use super::NextHop;
use crate::route::{Table, TableBuilder};

/// Everything encap and decap look up, as one immutable snapshot.
///
/// - a longest-prefix-match [`Table`] from pod subnet to [`NextHop`] (encap);
/// - the [`PeerSet`] of VTEP addresses of lease holders (decap's source validation: VXLAN has no
///   authentication, so frames from any other address are dropped as `unknown_vtep`).
///
/// The control plane builds a new one with [`RoutesBuilder`] on every change and publishes it;
/// workers load it once per batch.
#[derive(Debug, Default)]
pub struct Routes {
    table: Table<NextHop>,
    peers: PeerSet,
}

impl Routes {
    /// Routes with no prefixes and no peers: encap answers `no_route`, decap `unknown_vtep`.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A snapshot from a built table and a peer set.
    pub fn new(table: Table<NextHop>, peers: PeerSet) -> Self {
        Routes { table, peers }
    }

    /// The route table.
    #[inline]
    pub fn table(&self) -> &Table<NextHop> {
        &self.table
    }

    /// The known peer VTEPs.
    #[inline]
    pub fn peers(&self) -> &PeerSet {
        &self.peers
    }

    /// The next hop for an IPv4 destination (`u32::from(Ipv4Addr)`).
    #[inline(always)]
    pub fn lookup_v4(&self, dst: u32) -> Option<&NextHop> {
        self.table.lookup_v4(dst)
    }

    /// The next hop for an IPv6 destination (`u128::from(Ipv6Addr)`).
    #[inline(always)]
    pub fn lookup_v6(&self, dst: u128) -> Option<&NextHop> {
        self.table.lookup_v6(dst)
    }

    /// Whether `addr` is a known peer VTEP.
    #[inline(always)]
    pub fn is_known_peer(&self, addr: Ipv4Addr) -> bool {
        self.peers.contains_octets(addr.octets())
    }
}

/// Builds [`Routes`] snapshots. Keep one in the control plane, change it, and call
/// [`RoutesBuilder::build`] for each new snapshot.
#[derive(Debug, Default, Clone)]
pub struct RoutesBuilder {
    table: TableBuilder<NextHop>,
    extra_peers: Vec<Ipv4Addr>,
}

impl RoutesBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `prefix` to `next_hop`, returning the next hop it replaces. The next hop's VTEP
    /// becomes a known peer while any route uses it.
    pub fn insert(&mut self, prefix: IpNet, next_hop: NextHop) -> Option<NextHop> {
        self.table.insert(prefix.trunc(), next_hop)
    }

    /// Removes the route for exactly `prefix`.
    pub fn remove(&mut self, prefix: &IpNet) -> Option<NextHop> {
        self.table.remove(&prefix.trunc())
    }

    /// Accepts VXLAN frames from `vtep` even without a route through it (a lease holder whose
    /// subnet is not routed yet, or an IPv6-only lease holder with an IPv4 underlay address).
    pub fn add_peer(&mut self, vtep: Ipv4Addr) {
        if !self.extra_peers.contains(&vtep) {
            self.extra_peers.push(vtep);
        }
    }

    /// Undoes [`RoutesBuilder::add_peer`]. Routes through `vtep` keep it known.
    pub fn remove_peer(&mut self, vtep: Ipv4Addr) {
        self.extra_peers.retain(|p| *p != vtep);
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The routes, in prefix order.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &NextHop)> + '_ {
        self.table.iter()
    }

    /// Builds an immutable snapshot (allocates; call off the fast path).
    pub fn build(&self) -> Routes {
        let peers = PeerSet::from_addrs(
            self.table
                .iter()
                .map(|(_, nh)| nh.remote_vtep())
                .chain(self.extra_peers.iter().copied()),
        );
        Routes { table: self.table.build(), peers }
    }
}

/// A set of IPv4 VTEP addresses with O(1) membership tests that never allocate: open addressing
/// with linear probing in a power-of-two table kept at most half full, so a miss ends within a
/// probe or two. 0.0.0.0 marks an empty slot (it is never a VTEP address and is never a member).
#[derive(Clone, Debug)]
pub struct PeerSet {
    /// Addresses as `u32::from_ne_bytes(octets)` (no byte swap on lookup), 0 = empty.
    slots: Box<[u32]>,
    mask: usize,
    len: usize,
}

impl Default for PeerSet {
    fn default() -> Self {
        Self::from_addrs(std::iter::empty())
    }
}

impl PeerSet {
    /// A set of the given addresses (duplicates and 0.0.0.0 ignored).
    pub fn from_addrs(addrs: impl IntoIterator<Item = Ipv4Addr>) -> Self {
        let mut keys: Vec<u32> =
            addrs.into_iter().map(|a| u32::from_ne_bytes(a.octets())).filter(|k| *k != 0).collect();
        keys.sort_unstable();
        keys.dedup();
        let capacity = (keys.len() * 2).next_power_of_two().max(8);
        let mask = capacity - 1;
        let mut slots = vec![0u32; capacity].into_boxed_slice();
        for k in &keys {
            let mut i = Self::home(*k, mask);
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = *k;
        }
        PeerSet { slots, mask, len: keys.len() }
    }

    #[inline(always)]
    fn home(key: u32, mask: usize) -> usize {
        // Fibonacci hashing: the high bits of the product depend on every key bit.
        (key.wrapping_mul(0x9e37_79b9).rotate_left(16) as usize) & mask
    }

    /// Whether `addr` is in the set.
    #[inline]
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        self.contains_octets(addr.octets())
    }

    /// Whether the address with these octets is in the set.
    #[inline(always)]
    pub fn contains_octets(&self, octets: [u8; 4]) -> bool {
        let key = u32::from_ne_bytes(octets);
        if key == 0 {
            return false;
        }
        let mut i = Self::home(key, self.mask);
        // At most half the slots are full, so the probe meets an empty slot; the bound only
        // guards against a corrupted table.
        for _ in 0..self.slots.len() {
            match self.slots.get(i) {
                Some(&k) if k == key => return true,
                Some(0) | None => return false,
                Some(_) => i = (i + 1) & self.mask,
            }
        }
        false
    }

    /// Number of addresses.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The addresses, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.slots.iter().filter(|k| **k != 0).map(|k| Ipv4Addr::from(k.to_ne_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_set_membership_matches_a_hash_set() {
        let addrs: Vec<Ipv4Addr> =
            (0..1000u32).map(|i| Ipv4Addr::from(0xc0a8_0000 + i * 7)).collect();
        let set =
            PeerSet::from_addrs(addrs.iter().copied().chain([Ipv4Addr::UNSPECIFIED, addrs[3]]));
        assert_eq!(set.len(), 1000);
        let reference: std::collections::HashSet<_> = addrs.iter().copied().collect();
        for i in 0..8000u32 {
            let a = Ipv4Addr::from(0xc0a8_0000 + i);
            assert_eq!(set.contains(a), reference.contains(&a), "{a}");
        }
        assert!(!set.contains(Ipv4Addr::UNSPECIFIED));
        assert_eq!(set.iter().count(), 1000);
        assert!(!PeerSet::default().contains(Ipv4Addr::new(1, 2, 3, 4)));
    }
}
