//! Deterministic synthetic route sets and destinations, shared by the benchmarks, the
//! instruction-count example and the docs so every number is measured on the same data.
//!
//! Two IPv4 shapes:
//! - [`Shape::Spread`]: prefixes anywhere in the address space (60% /24, 25% /16–/23,
//!   15% /25–/32, plus a default route) — a full-table-like worst case for caches, and the
//!   shape behind the `lookup/routes_*` benchmark IDs.
//! - [`Shape::Cluster`]: a pod network's shape — almost all prefixes inside one cluster CIDR
//!   (10.0.0.0/8: 45% /24, 35% /25–/26, 10% /27–/32, 10% /16–/23), a default route and a few
//!   dozen external routes.
//!
//! Not used by the packet path.

use std::collections::HashSet;

use ipnet::{Ipv4Net, Ipv6Net};

/// Where the synthetic IPv4 prefixes lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Anywhere in the IPv4 space (worst case for caches).
    Spread,
    /// Inside one cluster CIDR, 10.0.0.0/8, like a pod network.
    Cluster,
}

/// xorshift64*: small, deterministic, good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed (zero is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `n` distinct IPv4 prefixes of the given shape (the first is always the default route).
pub fn v4_routes(shape: Shape, n: usize, seed: u64) -> Vec<Ipv4Net> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    let mut push = |net: Ipv4Net, out: &mut Vec<Ipv4Net>| {
        if out.len() < n && seen.insert(net) {
            out.push(net);
        }
    };
    push(Ipv4Net::new(0.into(), 0).expect("valid"), &mut out);
    if shape == Shape::Cluster {
        for _ in 0..50 {
            let len = 8 + rng.below(17) as u8;
            let net = Ipv4Net::new((rng.next_u64() as u32).into(), len).expect("valid");
            push(net.trunc(), &mut out);
        }
    }
    while out.len() < n {
        let (len, addr) = match shape {
            Shape::Spread => {
                let len = match rng.below(100) {
                    0..60 => 24,
                    60..85 => 16 + rng.below(8) as u8,
                    _ => 25 + rng.below(8) as u8,
                };
                (len, rng.next_u64() as u32)
            }
            Shape::Cluster => {
                let len = match rng.below(100) {
                    0..45 => 24,
                    45..80 => 25 + rng.below(2) as u8,
                    80..90 => 27 + rng.below(6) as u8,
                    _ => 16 + rng.below(8) as u8,
                };
                (len, 0x0a00_0000 | (rng.next_u64() as u32 & 0x00ff_ffff))
            }
        };
        push(Ipv4Net::new(addr.into(), len).expect("valid").trunc(), &mut out);
    }
    out
}

/// `n` distinct IPv6 prefixes: 80% /64 node subnets, 15% /56, 5% /128, in sixteen /48 sites.
pub fn v6_routes(n: usize, seed: u64) -> Vec<Ipv6Net> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let site = 0xfd00_0000_0000u128 + u128::from(rng.below(16));
        let addr =
            (site << 80) | (u128::from(rng.next_u64()) << 16) | u128::from(rng.next_u64() as u16);
        let len = match rng.below(100) {
            0..80 => 64,
            80..95 => 56,
            _ => 128,
        };
        let net = Ipv6Net::new(addr.into(), len).expect("valid").trunc();
        if seen.insert(net) {
            out.push(net);
        }
    }
    out
}

/// `count` destinations, each a random host inside a random one of `routes` other than a
/// default route (so every lookup exercises a real prefix, as packets to pods do).
///
/// # Panics
/// When `routes` is empty.
pub fn v4_dests(routes: &[Ipv4Net], count: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut specific: Vec<_> = routes.iter().filter(|n| n.prefix_len() > 0).collect();
    if specific.is_empty() {
        specific = routes.iter().collect();
    }
    assert!(!specific.is_empty(), "destinations need at least one route");
    (0..count)
        .map(|_| {
            let net = specific[rng.below(specific.len() as u64) as usize];
            let host = (rng.next_u64() as u32) & !u32::from(net.netmask());
            u32::from(net.network()) | host
        })
        .collect()
}

/// `count` IPv6 destinations, each a random host inside a random one of `routes`.
pub fn v6_dests(routes: &[Ipv6Net], count: usize, seed: u64) -> Vec<u128> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|_| {
            let net = routes[rng.below(routes.len() as u64) as usize];
            let random = (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64());
            u128::from(net.network()) | (random & !u128::from(net.netmask()))
        })
        .collect()
}

/// `(network, prefix_len, leaf)` triples sorted by length, leaves numbered from 1: the input
/// [`super::trie::Trie::build`] takes.
pub fn trie_entries(routes: &[Ipv4Net]) -> Vec<(u32, u32, u32)> {
    let mut sorted = routes.to_vec();
    sorted.sort_by_key(|n| n.prefix_len());
    sorted
        .iter()
        .zip(1u32..)
        .map(|(n, leaf)| (u32::from(n.network()), u32::from(n.prefix_len()), leaf))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_sets_are_distinct_and_sized() {
        for shape in [Shape::Spread, Shape::Cluster] {
            let routes = v4_routes(shape, 5000, 7);
            assert_eq!(routes.len(), 5000);
            assert_eq!(routes.iter().collect::<HashSet<_>>().len(), 5000);
            for d in v4_dests(&routes, 100, 8) {
                let addr = std::net::Ipv4Addr::from(d);
                assert!(routes.iter().any(|n| n.prefix_len() > 0 && n.contains(&addr)));
            }
        }
        let routes = v6_routes(1000, 9);
        assert_eq!(routes.iter().collect::<HashSet<_>>().len(), 1000);
        for d in v6_dests(&routes, 100, 10) {
            assert!(routes.iter().any(|n| n.contains(&std::net::Ipv6Addr::from(d))));
        }
    }
}
