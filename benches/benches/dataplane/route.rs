//! route benchmarks: LPM lookups, building and publishing snapshots, and the IPv4 candidates.
//!
//! IDs (each element is one lookup unless said otherwise):
//! - `lookup/routes_1k`, `lookup/routes_100k`: the chosen table on the spread route set;
//!   `lookup/routes_100k_read_next_hop` also reads the next hop found;
//!   `lookup/routes_100k_cluster` uses the pod-network route set; `lookup/routes_100k_v6`.
//! - `lookup_loaded/routes_100k`: one `Published::load` per 64 lookups, as a worker does;
//!   `lookup_during_publish/routes_100k`: the same while another thread builds and publishes a
//!   100k-route table every 10 ms; `lookup_during_publish/routes_100k_continuous`: back to back.
//! - `publish/routes_100k`: build a 100k-route table and publish it (one element = one publish).
//! - `rcu/load`: one `Published::load` and guard drop.
//! - `ipv4_candidates/<layout>/{lookup_100k,lookup_batch_100k,build_100k,build_recycled_100k}`:
//!   the structures considered, on the same routes and destinations.
//!
//! Route sets come from `linen_dataplane::route::synthetic` with fixed seeds; destinations lie
//! inside the table's prefixes and are cycled through a 1 Mi-entry array, so each iteration's
//! 4096 lookups hit cold, scattered entries rather than the same few cache lines.
//! See docs/route.md for the numbers and the choice.
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use linen_dataplane::route::synthetic::{self, Shape};
use linen_dataplane::route::trie::{
    Dir16_4_4_4_4, Dir16_8_4_4, Dir16_8_8, Dir20_4_4_4, Dir24_8, Layout, Recycler, Trie,
};
use linen_dataplane::route::{IpNet, Ipv4Net, Ipv6Net, Published, Table, TableBuilder};

/// Lookups per criterion iteration.
const BATCH: usize = 4096;
/// Distinct destinations cycled through (4 MiB of u32).
const DESTS: usize = 1 << 20;
/// Lookups per `Published::load`, as in a worker's batch.
const WORKER_BATCH: usize = 64;

/// A next hop about the size of the pipeline's (outer header template and addresses).
#[derive(Clone)]
struct NextHop {
    id: u32,
    _template: [u8; 60],
}

fn builder(v4: &[Ipv4Net], v6: &[Ipv6Net]) -> TableBuilder<NextHop> {
    let mut b = TableBuilder::new();
    let nets = v4.iter().map(|&n| IpNet::V4(n)).chain(v6.iter().map(|&n| IpNet::V6(n)));
    for (id, net) in nets.enumerate() {
        let hop = NextHop { id: id as u32, _template: [0; 60] };
        b.insert(net, hop);
    }
    b
}

/// Runs `f` over the next `BATCH` destinations of `dests`, wrapping around.
fn cycle<'a, K>(dests: &'a [K], pos: &mut usize) -> &'a [K] {
    let chunk = &dests[*pos..*pos + BATCH];
    *pos = (*pos + BATCH) % dests.len();
    chunk
}

/// The lookups alone: each answer (a reference to the next hop) is consumed as an address,
/// without reading the next hop itself.
fn lookup_v4_refs(table: &Table<NextHop>, dsts: &[u32]) -> usize {
    let mut sum = 0usize;
    for &d in dsts {
        sum = sum.wrapping_add(table.lookup_v4(d).map_or(0, |h| h as *const NextHop as usize));
    }
    sum
}

/// The lookups plus the first read of each next hop, as the pipeline does.
fn lookup_v4_sum(table: &Table<NextHop>, dsts: &[u32]) -> u32 {
    let mut sum = 0u32;
    for &d in dsts {
        sum = sum.wrapping_add(table.lookup_v4(d).map_or(0, |h| h.id));
    }
    sum
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, n) in [("routes_1k", 1_000), ("routes_100k", 100_000)] {
        let routes = synthetic::v4_routes(Shape::Spread, n, 1);
        let table = builder(&routes, &[]).build();
        let dests = synthetic::v4_dests(&routes, DESTS, 2);
        let mut pos = 0;
        g.bench_function(name, |b| {
            b.iter(|| lookup_v4_refs(&table, black_box(cycle(&dests, &mut pos))))
        });
        if n == 100_000 {
            g.bench_function("routes_100k_read_next_hop", |b| {
                b.iter(|| lookup_v4_sum(&table, black_box(cycle(&dests, &mut pos))))
            });
            let routes = synthetic::v4_routes(Shape::Cluster, n, 1);
            let table = builder(&routes, &[]).build();
            let dests = synthetic::v4_dests(&routes, DESTS, 2);
            g.bench_function("routes_100k_cluster", |b| {
                b.iter(|| lookup_v4_refs(&table, black_box(cycle(&dests, &mut pos))))
            });
        }
    }
    let routes = synthetic::v6_routes(100_000, 3);
    let table = builder(&[], &routes).build();
    let dests = synthetic::v6_dests(&routes, DESTS, 4);
    let mut pos = 0;
    g.bench_function("routes_100k_v6", |b| {
        b.iter(|| {
            let mut sum = 0usize;
            for &d in black_box(cycle(&dests, &mut pos)) {
                sum = sum
                    .wrapping_add(table.lookup_v6(d).map_or(0, |h| h as *const NextHop as usize));
            }
            sum
        })
    });
    g.finish();
}

/// Lookups the way a worker does them: one `load` per 64, optionally with a publisher running.
fn loaded_lookups(c: &mut Criterion) {
    let routes = synthetic::v4_routes(Shape::Spread, 100_000, 1);
    let b = builder(&routes, &[]);
    let cell = Arc::new(Published::new(b.build()));
    let dests = synthetic::v4_dests(&routes, DESTS, 2);
    let run = |cell: &Published<Table<NextHop>>, pos: &mut usize| {
        let mut sum = 0usize;
        for batch in black_box(cycle(&dests, pos)).chunks(WORKER_BATCH) {
            let table = cell.load();
            sum = sum.wrapping_add(lookup_v4_refs(&table, batch));
        }
        sum
    };

    let mut g = c.benchmark_group("lookup_loaded");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut pos = 0;
    g.bench_function("routes_100k", |bch| bch.iter(|| run(&cell, &mut pos)));
    g.finish();

    // A publisher thread rebuilding and publishing the 100k-route table: every 10 ms (a
    // control plane under heavy churn), then back to back (the worst case; on a two-core
    // machine it also competes with the reader for a core and for memory bandwidth).
    let mut g = c.benchmark_group("lookup_during_publish");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (name, pause) in
        [("routes_100k", Duration::from_millis(10)), ("routes_100k_continuous", Duration::ZERO)]
    {
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = {
            let (cell, stop, b) = (cell.clone(), stop.clone(), b.clone());
            thread::spawn(move || {
                let mut published = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    cell.publish_with(|| b.build());
                    published += 1;
                    thread::sleep(pause);
                }
                published
            })
        };
        let mut pos = 0;
        g.bench_function(name, |bch| bch.iter(|| run(&cell, &mut pos)));
        stop.store(true, Ordering::Relaxed);
        let published = publisher.join().expect("publisher thread");
        eprintln!("lookup_during_publish/{name}: {published} snapshots published during the run");
    }
    g.finish();
}

fn publish(c: &mut Criterion) {
    let routes = synthetic::v4_routes(Shape::Spread, 100_000, 1);
    let b = builder(&routes, &[]);
    let cell = Published::new(b.build());
    let mut g = c.benchmark_group("publish");
    g.sample_size(10);
    g.bench_function("routes_100k", |bch| bch.iter(|| cell.publish_with(|| b.build())));
    g.finish();
    eprintln!(
        "routes_100k table: {} bytes in lookup structures and values",
        cell.load().memory_bytes()
    );

    let mut g = c.benchmark_group("rcu");
    g.bench_function("load", |bch| bch.iter(|| black_box(cell.load()).len()));
    g.finish();
}

/// The IPv4 structures considered, on the same 100k routes and destinations.
fn candidates(c: &mut Criterion) {
    fn one<L: Layout<Key = u32>>(
        c: &mut Criterion,
        name: &str,
        routes: &[(u32, u32, u32)],
        dests: &[u32],
    ) {
        let mut g = c.benchmark_group("ipv4_candidates");
        let trie = Trie::<L>::build(routes.iter().copied());
        eprintln!("{name}: {} bytes", trie.memory_bytes());
        g.throughput(Throughput::Elements(BATCH as u64));
        let mut pos = 0;
        g.bench_function(BenchmarkId::new(name, "lookup_100k"), |b| {
            b.iter(|| {
                let mut sum = 0u32;
                for &d in black_box(cycle(dests, &mut pos)) {
                    sum = sum.wrapping_add(trie.lookup(d));
                }
                sum
            })
        });
        let mut leaves = vec![0u32; BATCH];
        g.bench_function(BenchmarkId::new(name, "lookup_batch_100k"), |b| {
            b.iter(|| {
                trie.lookup_batch(black_box(cycle(dests, &mut pos)), &mut leaves);
                leaves.iter().fold(0u32, |a, &l| a.wrapping_add(l))
            })
        });
        g.throughput(Throughput::Elements(routes.len() as u64));
        g.sample_size(10);
        g.bench_function(BenchmarkId::new(name, "build_100k"), |b| {
            b.iter(|| Trie::<L>::build(routes.iter().copied()))
        });
        let recycler = Recycler::new();
        g.bench_function(BenchmarkId::new(name, "build_recycled_100k"), |b| {
            b.iter(|| Trie::<L>::build_with(routes.iter().copied(), Some(&recycler)))
        });
        g.finish();
    }
    let routes = synthetic::v4_routes(Shape::Spread, 100_000, 1);
    let dests = synthetic::v4_dests(&routes, DESTS, 2);
    let entries = synthetic::trie_entries(&routes);
    one::<Dir24_8>(c, "dir24_8", &entries, &dests);
    one::<Dir16_8_8>(c, "dir16_8_8", &entries, &dests);
    one::<Dir16_8_4_4>(c, "dir16_8_4_4", &entries, &dests);
    one::<Dir16_4_4_4_4>(c, "dir16_4_4_4_4", &entries, &dests);
    one::<Dir20_4_4_4>(c, "dir20_4_4_4", &entries, &dests);
}

pub fn benches(c: &mut Criterion) {
    lookups(c);
    loaded_lookups(c);
    publish(c);
    candidates(c);
}
