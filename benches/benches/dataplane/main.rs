//! Criterion micro-benchmarks of the packet path (bench target `dataplane`).
//!
//! IDs are stable so results stay comparable over time: `encap/routes_1`, `encap/routes_100k`,
//! `encap/routes_100k_cache_hot`, `decap/64B`, `decap/1400B`, `batch64/routes_100k`,
//! `batch64/routes_100k_cache_hot`, `lookup/routes_1k`, `lookup/routes_100k`,
//! `publish/routes_100k`. Every group reports `Throughput::Elements` per packet (or lookup).
use criterion::{criterion_group, criterion_main};

mod pipeline;
mod route;

criterion_group!(benches, pipeline::benches, route::benches);
criterion_main!(benches);
