//! The route table against a naive reference: a linear scan of the prefix list for the longest
//! prefix containing the address. Plus the edge cases: /0, host routes, replace, remove to empty.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use linen_dataplane::route::{Table, TableBuilder};
use proptest::prelude::*;

/// Longest prefix of `builder` containing `addr`, by linear scan.
fn reference(builder: &TableBuilder<u32>, addr: IpAddr) -> Option<u32> {
    builder
        .iter()
        .filter(|(net, _)| net.contains(&addr))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, &v)| v)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn v4(s: &str) -> u32 {
    s.parse::<Ipv4Addr>().unwrap().into()
}

fn v6(s: &str) -> u128 {
    s.parse::<Ipv6Addr>().unwrap().into()
}

#[derive(Clone, Debug)]
enum Op {
    Insert(IpNet, u32),
    Remove(IpNet),
}

/// Addresses near a few shared bases, so prefixes overlap and nest often.
fn v4_addr() -> impl Strategy<Value = u32> {
    prop_oneof![
        (prop::sample::select(vec![0x0af4_0000u32, 0x0a00_0000, 0xc0a8_0100, 0]), 0u32..0x1_0000)
            .prop_map(|(base, low)| base ^ low),
        (prop::sample::select(vec![0x0af4_0000u32, 0xc0a8_0100]), 0u32..32)
            .prop_map(|(base, bit)| base ^ (1 << bit)),
        any::<u32>(),
    ]
}

fn v6_addr() -> impl Strategy<Value = u128> {
    let bases = vec![
        0xfd00_0010_0244_0000_0000_0000_0000_0000u128,
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        0,
    ];
    prop_oneof![
        (prop::sample::select(bases.clone()), any::<u64>(), 0u32..128)
            .prop_map(|(base, low, shift)| base ^ (u128::from(low) << (shift % 72))),
        (prop::sample::select(bases), 0u32..128).prop_map(|(base, bit)| base ^ (1u128 << bit)),
        any::<u128>(),
    ]
}

fn v4_net() -> impl Strategy<Value = IpNet> {
    (v4_addr(), prop_oneof![0u8..=32, 22u8..=26, Just(32u8)])
        .prop_map(|(a, len)| IpNet::V4(Ipv4Net::new(a.into(), len).unwrap()))
}

fn v6_net() -> impl Strategy<Value = IpNet> {
    (v6_addr(), prop_oneof![0u8..=128, 44u8..=80, Just(128u8)])
        .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(a.into(), len).unwrap()))
}

fn ops<S: Strategy<Value = IpNet>>(nets: fn() -> S) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (nets(), any::<u32>()).prop_map(|(n, v)| Op::Insert(n, v)),
            1 => nets().prop_map(Op::Remove),
        ],
        0..120,
    )
}

/// Applies `ops`, checking `insert`/`remove` return values against a plain list as it goes.
fn apply(ops: &[Op]) -> TableBuilder<u32> {
    let mut builder = TableBuilder::new();
    let mut list: Vec<(IpNet, u32)> = Vec::new();
    for op in ops {
        match *op {
            Op::Insert(n, v) => {
                let n = n.trunc();
                let old = list.iter().position(|e| e.0 == n).map(|i| list.remove(i).1);
                list.push((n, v));
                assert_eq!(builder.insert(n, v), old);
            }
            Op::Remove(n) => {
                let n = n.trunc();
                let old = list.iter().position(|e| e.0 == n).map(|i| list.remove(i).1);
                assert_eq!(builder.remove(&n), old);
            }
        }
    }
    assert_eq!(builder.len(), list.len());
    builder
}

fn check(builder: &TableBuilder<u32>, table: &Table<u32>, addr: IpAddr) {
    let want = reference(builder, addr);
    let got = match addr {
        IpAddr::V4(a) => table.lookup_v4(a.into()),
        IpAddr::V6(a) => table.lookup_v6(a.into()),
    };
    assert_eq!(got.copied(), want, "lookup of {addr}");
    assert_eq!(table.lookup(addr).copied(), want, "lookup of {addr}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn v4_matches_linear_scan(ops in ops(v4_net), addrs in prop::collection::vec(v4_addr(), 64)) {
        let builder = apply(&ops);
        let table = builder.build();
        prop_assert_eq!(table.len(), builder.len());
        for &a in &addrs {
            check(&builder, &table, IpAddr::V4(a.into()));
        }
        // Every prefix's first and last address too: the edges of expanded ranges.
        for (n, _) in builder.iter() {
            check(&builder, &table, n.network());
            check(&builder, &table, n.broadcast());
        }
        let mut batch = vec![None; addrs.len()];
        table.lookup_v4_batch(&addrs, &mut batch);
        for (&a, got) in addrs.iter().zip(&batch) {
            prop_assert_eq!(got.copied(), reference(&builder, IpAddr::V4(a.into())));
        }
    }

    #[test]
    fn v6_matches_linear_scan(ops in ops(v6_net), addrs in prop::collection::vec(v6_addr(), 64)) {
        let builder = apply(&ops);
        let table = builder.build();
        for &a in &addrs {
            check(&builder, &table, IpAddr::V6(a.into()));
        }
        for (n, _) in builder.iter() {
            check(&builder, &table, n.network());
            check(&builder, &table, n.broadcast());
        }
    }

    #[test]
    fn mixed_families_do_not_interfere(
        ops4 in ops(v4_net),
        ops6 in ops(v6_net),
        a4 in prop::collection::vec(v4_addr(), 32),
        a6 in prop::collection::vec(v6_addr(), 32),
    ) {
        let mut all = ops4;
        all.extend(ops6);
        let builder = apply(&all);
        let table = builder.build();
        for &a in &a4 {
            check(&builder, &table, IpAddr::V4(a.into()));
            // The same bits as an IPv4-mapped IPv6 address must not hit IPv4 routes.
            check(&builder, &table, IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped()));
        }
        for &a in &a6 {
            check(&builder, &table, IpAddr::V6(a.into()));
        }
    }
}

proptest! {
    // Each build reuses the arrays of the table dropped before it: stale entries or chunks from
    // an earlier, different table must never show through.
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn rebuilds_on_recycled_arrays_match_linear_scan(
        ops in ops(v4_net),
        addrs in prop::collection::vec(v4_addr(), 32),
    ) {
        let mut builder = TableBuilder::new();
        let mut previous: Option<Table<u32>> = None;
        for op in ops.iter().take(24) {
            match *op {
                Op::Insert(n, v) => { builder.insert(n, v); }
                Op::Remove(n) => { builder.remove(&n); }
            }
            drop(previous.take());
            let table = builder.build();
            for &a in &addrs {
                check(&builder, &table, IpAddr::V4(a.into()));
            }
            for (n, _) in builder.iter() {
                check(&builder, &table, n.network());
                check(&builder, &table, n.broadcast());
            }
            previous = Some(table);
        }
    }
}

#[test]
fn empty_table_misses_everything() {
    let table: Table<u32> = TableBuilder::new().build();
    assert!(table.is_empty());
    assert_eq!(table.len(), 0);
    assert_eq!(table.lookup_v4(0), None);
    assert_eq!(table.lookup_v4(u32::MAX), None);
    assert_eq!(table.lookup_v6(0), None);
    assert_eq!(table.lookup_v6(u128::MAX), None);
    let table: Table<u32> = Table::empty();
    assert_eq!(table.lookup_v4(v4("10.0.0.1")), None);
}

#[test]
fn default_routes_cover_everything_and_lose_to_longer_ones() {
    let mut b = TableBuilder::new();
    b.insert(net("0.0.0.0/0"), 1);
    b.insert(net("::/0"), 2);
    let t = b.build();
    assert_eq!(t.lookup_v4(0), Some(&1));
    assert_eq!(t.lookup_v4(u32::MAX), Some(&1));
    assert_eq!(t.lookup_v6(0), Some(&2));
    assert_eq!(t.lookup_v6(u128::MAX), Some(&2));

    b.insert(net("10.244.0.0/16"), 3);
    b.insert(net("fd00::/8"), 4);
    let t = b.build();
    assert_eq!(t.lookup_v4(v4("10.244.255.255")), Some(&3));
    assert_eq!(t.lookup_v4(v4("10.245.0.0")), Some(&1));
    assert_eq!(t.lookup_v6(v6("fd12::1")), Some(&4));
    assert_eq!(t.lookup_v6(v6("fe00::1")), Some(&2));
}

#[test]
fn host_routes_match_only_their_address() {
    let mut b = TableBuilder::new();
    b.insert(net("10.1.2.3/32"), 1);
    b.insert(net("10.1.2.0/24"), 2);
    b.insert(net("fd00::1/128"), 3);
    b.insert(net("fd00::/64"), 4);
    b.insert(net("255.255.255.255/32"), 5);
    b.insert(net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), 6);
    let t = b.build();
    assert_eq!(t.lookup_v4(v4("10.1.2.3")), Some(&1));
    assert_eq!(t.lookup_v4(v4("10.1.2.2")), Some(&2));
    assert_eq!(t.lookup_v4(v4("10.1.2.4")), Some(&2));
    assert_eq!(t.lookup_v6(v6("fd00::1")), Some(&3));
    assert_eq!(t.lookup_v6(v6("fd00::2")), Some(&4));
    assert_eq!(t.lookup_v6(v6("fd00::")), Some(&4));
    assert_eq!(t.lookup_v4(u32::MAX), Some(&5));
    assert_eq!(t.lookup_v4(u32::MAX - 1), None);
    assert_eq!(t.lookup_v6(u128::MAX), Some(&6));
    assert_eq!(t.lookup_v6(u128::MAX - 1), None);
}

#[test]
fn insert_replaces_and_normalises_the_prefix() {
    let mut b = TableBuilder::new();
    assert_eq!(b.insert(net("10.1.2.0/24"), 1), None);
    // Host bits set: the same prefix.
    assert_eq!(b.insert(net("10.1.2.77/24"), 2), Some(1));
    assert_eq!(b.len(), 1);
    assert_eq!(b.get(&net("10.1.2.0/24")), Some(&2));
    assert_eq!(b.iter().next().map(|(n, _)| n), Some(net("10.1.2.0/24")));
    let t = b.build();
    assert_eq!(t.lookup_v4(v4("10.1.2.9")), Some(&2));
    // Same network, other length: a different prefix.
    assert_eq!(b.insert(net("10.1.2.0/25"), 3), None);
    assert_eq!(b.len(), 2);
}

#[test]
fn remove_to_empty() {
    let mut b = TableBuilder::new();
    let prefixes = ["0.0.0.0/0", "10.0.0.0/8", "10.1.2.0/24", "10.1.2.3/32", "::/0", "fd00::/64"];
    for (i, p) in prefixes.iter().enumerate() {
        b.insert(net(p), i as u32);
    }
    assert_eq!(b.build().len(), prefixes.len());
    assert_eq!(b.remove(&net("10.9.9.9/32")), None);
    for (i, p) in prefixes.iter().enumerate().rev() {
        assert_eq!(b.remove(&net(p)), Some(i as u32));
        assert_eq!(b.remove(&net(p)), None);
        let t = b.build();
        assert_eq!(t.len(), i);
        for probe in ["10.1.2.3", "10.200.0.1", "1.1.1.1"] {
            check(&b, &t, probe.parse().unwrap());
        }
        check(&b, &t, "fd00::5".parse().unwrap());
    }
    let t = b.build();
    assert!(t.is_empty());
    assert_eq!(t.lookup_v4(v4("10.1.2.3")), None);
    assert_eq!(t.lookup_v6(v6("fd00::5")), None);
}

#[test]
fn snapshot_is_unaffected_by_later_builder_changes() {
    let mut b = TableBuilder::new();
    b.insert(net("10.1.0.0/16"), 1);
    let before = b.build();
    b.insert(net("10.1.0.0/16"), 2);
    b.insert(net("10.1.1.0/24"), 3);
    assert_eq!(before.lookup_v4(v4("10.1.1.1")), Some(&1));
    assert_eq!(b.build().lookup_v4(v4("10.1.1.1")), Some(&3));
}
