//! pipeline benchmarks: encap and decap per packet, and a 64-frame encap batch.
//!
//! IDs (stable): `encap/routes_1`, `encap/routes_100k`, `encap/routes_100k_cache_hot`,
//! `decap/64B`, `decap/1400B`, `batch64/routes_100k`, `batch64/routes_100k_cache_hot`;
//! throughput is in packets (`Throughput::Elements`).
//!
//! - `encap/routes_1`: one route, one 64-byte inner frame (a small UDP packet).
//! - `encap/routes_100k`: 100 000 random prefixes (/12 to /30) over 1 000 peers; 64-byte inner
//!   frames to 1 Mi random destinations inside those prefixes (as many as the lookup benches),
//!   so route lookups and next-hop reads hit cold, scattered entries. The frames live in 64
//!   buffers (a batch's worth, cache-hot as a batch the kernel just copied in is); before each
//!   encap the next destination is written into the buffer's inner IPv4 header, one load from
//!   the 4 MiB destination array and one 4-byte store counted with the packet.
//! - `encap/routes_100k_cache_hot`: the same table, 64 destinations (64 active flows) cycled:
//!   their route and next-hop entries stay in the caches. The best case, not the typical one.
//! - `decap/64B`, `decap/1400B`: a VXLAN frame whose inner Ethernet frame is 64 or 1400 bytes,
//!   from a known peer (1 000 known), decapsulated.
//! - `batch64/routes_100k`, `batch64/routes_100k_cache_hot`: 64 frames as one batch, one
//!   `Published::load` per batch, as a worker does; destinations as in the `encap` IDs of the
//!   same names.
//!
//! Every bench first checks that each frame (each destination) gets the action it measures —
//! `Transmit` — so an early drop cannot pass for a speed-up. The frames are rebuilt around the
//! same bytes each iteration: encap writes only the headroom (and the bench the destination),
//! decap writes nothing, so re-running them on one buffer measures the real work.
use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput};
use linen_benches::workload::{chunks, config, inner_frame, peer, routes, CHUNK, HEADROOM};
use linen_dataplane::pipeline::{
    decap, encap, Action, Config, Egress, Frame, NextHop, Routes, RoutesBuilder,
};
use linen_dataplane::route::Published;
use linen_dataplane::wire::Ipv4Packet;

/// Frames in flight: a batch's worth of buffers, and the flows of the cache-hot benches.
const FLOWS: usize = 64;
/// Destinations the spread 100k-route benches cycle through: as many as the lookup benches.
const DESTS: usize = 1 << 20;

/// Writes `dst` into the inner IPv4 header of the frame in `chunk`.
#[inline(always)]
fn set_dst(chunk: &mut [u8], dst: Ipv4Addr) {
    Ipv4Packet::new_unchecked(&mut chunk[HEADROOM + 14..HEADROOM + 34]).set_dst_addr(dst);
}

/// Checks that every destination in `dsts` is encapsulated for transmission.
fn assert_all_transmit(umem: &mut [u8], len: usize, dsts: &[Ipv4Addr], cfg: &Config, r: &Routes) {
    let chunk = &mut umem[..CHUNK];
    for &d in dsts {
        set_dst(chunk, d);
        let action = encap_one(chunk, len, cfg, r);
        assert!(matches!(action, Action::Transmit(_)), "{d}: {action:?}");
    }
}

fn encap_one(chunk: &mut [u8], len: usize, cfg: &Config, routes: &Routes) -> Action {
    match Frame::new(chunk, HEADROOM, len) {
        Some(mut f) => encap(&mut f, cfg, routes),
        None => unreachable!("bench frames fit their chunks"),
    }
}

fn bench_encap(c: &mut Criterion) {
    let cfg = config();
    let mut g = c.benchmark_group("encap");
    g.throughput(Throughput::Elements(1));
    for (id, n, flows) in [
        ("routes_1", 1, 1),
        ("routes_100k_cache_hot", 100_000, FLOWS),
        ("routes_100k", 100_000, DESTS),
    ] {
        let (routes, dsts) = routes(&cfg, n, flows);
        let packets: Vec<Vec<u8>> = dsts
            .iter()
            .take(FLOWS)
            .enumerate()
            .map(|(i, d)| inner_frame(*d, 40000 + i as u16, 64))
            .collect();
        let (mut umem, lens) = chunks(&packets);
        assert_all_transmit(&mut umem, lens[0], &dsts, &cfg, &routes);
        // The setup check wrote into the first buffer; put its own destination back.
        set_dst(&mut umem[..CHUNK], dsts[0]);
        let (mut i, mut next) = (0, 0);
        if flows == DESTS {
            g.bench_function(id, |b| {
                b.iter(|| {
                    i = if i + 1 == lens.len() { 0 } else { i + 1 };
                    next = (next + 1) & (DESTS - 1);
                    let chunk = &mut umem[i * CHUNK..(i + 1) * CHUNK];
                    set_dst(chunk, dsts[next]);
                    black_box(encap_one(chunk, lens[i], &cfg, black_box(&routes)))
                })
            });
        } else {
            g.bench_function(id, |b| {
                b.iter(|| {
                    i = if i + 1 == lens.len() { 0 } else { i + 1 };
                    let chunk = &mut umem[i * CHUNK..(i + 1) * CHUNK];
                    black_box(encap_one(chunk, lens[i], &cfg, black_box(&routes)))
                })
            });
        }
    }
    g.finish();
}

/// The fixture's A→B outer headers around an inner frame of `inner_len` bytes.
fn vxlan_frame(inner_len: usize) -> Vec<u8> {
    let a = config();
    let b_peer = peer(0);
    let mut routes = RoutesBuilder::new();
    routes.insert("10.244.2.0/24".parse().unwrap(), NextHop::new(&a, &b_peer));
    let mut inner = inner_frame(Ipv4Addr::new(10, 244, 2, 2), 40000, inner_len);
    inner[..6].copy_from_slice(&b_peer.vtep_mac);
    let (mut umem, _) = chunks(&[inner]);
    let mut f = Frame::new(&mut umem, HEADROOM, inner_len).unwrap();
    assert!(matches!(encap(&mut f, &a, &routes.build()), Action::Transmit(_)));
    f.data().to_vec()
}

fn bench_decap(c: &mut Criterion) {
    // The receiver is peer 0, knowing 1 000 peers (the sender among them).
    let p = peer(0);
    let cfg = Config::new(p.vtep, p.underlay_mac.unwrap(), p.vtep_mac);
    let mut b = RoutesBuilder::new();
    for i in 0..1000u32 {
        b.add_peer(Ipv4Addr::from(0xc0a8_0000 + 1 + i * 3));
    }
    b.add_peer(config().local_vtep);
    let routes = b.build();
    let mut g = c.benchmark_group("decap");
    g.throughput(Throughput::Elements(1));
    for (id, inner_len) in [("64B", 64), ("1400B", 1400)] {
        let outer = vxlan_frame(inner_len);
        let (mut umem, _) = chunks(std::slice::from_ref(&outer));
        let mut f = Frame::new(&mut umem, HEADROOM, outer.len()).unwrap();
        assert_eq!(decap(&mut f, &cfg, &routes), Action::Transmit(Egress::Overlay));
        assert_eq!(f.len(), inner_len);
        g.bench_function(id, |bch| {
            bch.iter(|| {
                let mut f = Frame::new(&mut umem, HEADROOM, outer.len()).unwrap();
                black_box(decap(&mut f, &cfg, black_box(&routes)))
            })
        });
    }
    g.finish();
}

fn bench_batch(c: &mut Criterion) {
    let cfg = config();
    let mut g = c.benchmark_group("batch64");
    g.throughput(Throughput::Elements(FLOWS as u64));
    for (id, flows) in [("routes_100k_cache_hot", FLOWS), ("routes_100k", DESTS)] {
        let (routes, dsts) = routes(&cfg, 100_000, flows);
        let packets: Vec<Vec<u8>> = dsts
            .iter()
            .take(FLOWS)
            .enumerate()
            .map(|(i, d)| inner_frame(*d, 40000 + i as u16, 64))
            .collect();
        let (mut umem, lens) = chunks(&packets);
        assert_all_transmit(&mut umem, lens[0], &dsts, &cfg, &routes);
        set_dst(&mut umem[..CHUNK], dsts[0]);
        let published = Published::new(routes);
        let mut next = 0;
        g.bench_function(id, |b| {
            b.iter(|| {
                let routes = published.load();
                let mut sent = 0u32;
                for (chunk, len) in umem.chunks_mut(CHUNK).zip(&lens) {
                    if flows == DESTS {
                        next = (next + 1) & (DESTS - 1);
                        set_dst(chunk, dsts[next]);
                    }
                    let action = encap_one(chunk, *len, &cfg, &routes);
                    sent += u32::from(matches!(action, Action::Transmit(_)));
                }
                black_box(sent)
            })
        });
    }
    g.finish();
}

pub fn benches(c: &mut Criterion) {
    bench_encap(c);
    bench_decap(c);
    bench_batch(c);
}
