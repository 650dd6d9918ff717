//! pipeline benchmarks: encap and decap per packet, and a 64-frame encap batch.
//!
//! IDs (stable): `encap/routes_1`, `encap/routes_100k`, `decap/64B`, `decap/1400B`,
//! `batch64/routes_100k`; throughput is in packets (`Throughput::Elements`).
//!
//! - `encap/routes_1`: one route, one 64-byte inner frame (a small UDP packet).
//! - `encap/routes_100k`: 100 000 random prefixes (/12 to /30) over 1 000 peers; 64 inner
//!   64-byte frames to random destinations inside those prefixes (64 active flows, a batch's
//!   worth), encapsulated in turn.
//! - `decap/64B`, `decap/1400B`: a VXLAN frame whose inner Ethernet frame is 64 or 1400 bytes,
//!   from a known peer (1 000 known), decapsulated.
//! - `batch64/routes_100k`: 64 of the frames above as one batch, one `Published::load` per batch,
//!   as a worker does.
//!
//! The frames are rebuilt around the same bytes each iteration: encap writes only the headroom
//! and decap writes nothing, so re-running them on one buffer measures the real work.
use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, Throughput};
use linen_benches::workload::{chunks, config, inner_frame, peer, routes, CHUNK, HEADROOM};
use linen_dataplane::pipeline::{
    decap, encap, Action, Config, Frame, NextHop, Routes, RoutesBuilder,
};
use linen_dataplane::route::Published;

/// Active flows (distinct destinations) cycled through in the 100k-route benches: a batch's worth.
const FLOWS: usize = 64;

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
    for (id, n, flows) in [("routes_1", 1, 1), ("routes_100k", 100_000, FLOWS)] {
        let (routes, dsts) = routes(&cfg, n, flows);
        let packets: Vec<Vec<u8>> =
            dsts.iter().enumerate().map(|(i, d)| inner_frame(*d, 40000 + i as u16, 64)).collect();
        let (mut umem, lens) = chunks(&packets);
        for (chunk, len) in umem.chunks_mut(CHUNK).zip(&lens) {
            assert!(matches!(encap_one(chunk, *len, &cfg, &routes), Action::Transmit(_)));
        }
        let mut i = 0;
        g.bench_function(id, |b| {
            b.iter(|| {
                i = if i + 1 == lens.len() { 0 } else { i + 1 };
                let chunk = &mut umem[i * CHUNK..(i + 1) * CHUNK];
                black_box(encap_one(chunk, lens[i], &cfg, black_box(&routes)))
            })
        });
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
    let (routes, dsts) = routes(&cfg, 100_000, FLOWS);
    let published = Published::new(routes);
    let packets: Vec<Vec<u8>> =
        dsts.iter().enumerate().map(|(i, d)| inner_frame(*d, 40000 + i as u16, 64)).collect();
    let (mut umem, lens) = chunks(&packets);
    let mut g = c.benchmark_group("batch64");
    g.throughput(Throughput::Elements(64));
    g.bench_function("routes_100k", |b| {
        b.iter(|| {
            let routes = published.load();
            let mut sent = 0u32;
            for (chunk, len) in umem.chunks_mut(CHUNK).zip(&lens) {
                sent +=
                    u32::from(matches!(encap_one(chunk, *len, &cfg, &routes), Action::Transmit(_)));
            }
            black_box(sent)
        })
    });
    g.finish();
}

pub fn benches(c: &mut Criterion) {
    bench_encap(c);
    bench_decap(c);
    bench_batch(c);
}
