//! Criterion micro-benchmarks of the packet path (bench target `dataplane`).
//!
//! IDs are stable so results stay comparable over time: `encap/routes_1`, `encap/routes_100k`,
//! `encap/routes_100k_cache_hot`, `decap/64B`, `decap/1400B`, `batch64/routes_100k`,
//! `batch64/routes_100k_cache_hot`, `lookup/routes_1k`, `lookup/routes_100k`,
//! `publish/routes_100k`, and for super-packets `segment/tcp4_64KiB`, `coalesce/tcp4_64KiB`.
//! Every packet group reports `Throughput::Elements` per packet (or lookup); the super-packet
//! groups report payload bytes, so their time is per 64 KiB burst.
use criterion::{criterion_group, criterion_main};

mod offload;
mod pipeline;
mod route;

criterion_group!(benches, pipeline::benches, route::benches, offload::benches);
criterion_main!(benches);
