//! Super-packet benchmarks: software segmentation (the encap side's TSO) and coalescing (the
//! decap side's GRO) of one 64 KiB TCP burst.
//!
//! IDs (stable): `segment/tcp4_64KiB`, `coalesce/tcp4_64KiB`; throughput in payload bytes
//! (`Throughput::Bytes`), so criterion's time is the cost per 64 KiB burst.
//!
//! - `segment/tcp4_64KiB`: a TCP/IPv4 super-packet of 65,160 payload bytes (MSS 1448 × 45) with
//!   timestamps, as a TAP read leaves it (the first 1,728 bytes in a frame buffer, the rest in an
//!   overflow area), cut into 45 segments written into 45 buffers: headers copied and patched,
//!   payload copied, every TCP and IPv4 checksum computed.
//! - `coalesce/tcp4_64KiB`: those 45 segments offered to a `Coalescer` (each segment's checksum
//!   verified), finished, and its one write walked.
//!
//! Each iteration checks its result (45 segments; one write of 45 segments), so a path that gave
//! up early could not pass for a fast one.
use std::hint::black_box;

use criterion::{Criterion, Throughput};
use linen_benches::workload::{
    segment_super_packet, tcp_super_packet, SUPER_MSS as MSS, SUPER_SEGMENTS as SEGMENTS,
};
use linen_dataplane::pipeline::Coalescer;

fn bench_segment(c: &mut Criterion) {
    let (pkt, offload) = tcp_super_packet();
    let mut out = vec![vec![0u8; 2048]; SEGMENTS];
    assert_eq!(segment_super_packet(&pkt, &offload, &mut out), SEGMENTS);
    let mut g = c.benchmark_group("segment");
    g.throughput(Throughput::Bytes((MSS * SEGMENTS) as u64));
    g.bench_function("tcp4_64KiB", |b| {
        b.iter(|| {
            for o in out.iter_mut() {
                // Back to full length without touching the bytes (no reallocation).
                o.resize(2048, 0);
            }
            let n = segment_super_packet(black_box(&pkt), &offload, &mut out);
            assert_eq!(n, SEGMENTS);
            black_box(&out);
        })
    });
    g.finish();
}

fn bench_coalesce(c: &mut Criterion) {
    let (pkt, offload) = tcp_super_packet();
    let mut segs = vec![vec![0u8; 2048]; SEGMENTS];
    assert_eq!(segment_super_packet(&pkt, &offload, &mut segs), SEGMENTS);
    let mut co = Coalescer::new();
    let mut g = c.benchmark_group("coalesce");
    g.throughput(Throughput::Bytes((MSS * SEGMENTS) as u64));
    g.bench_function("tcp4_64KiB", |b| {
        b.iter(|| {
            co.clear();
            for (i, s) in segs.iter().enumerate() {
                co.push(i as u32, black_box(s));
            }
            co.finish();
            let mut writes = 0;
            let mut parts = 0;
            for w in co.writes() {
                writes += 1;
                parts += w.parts.len();
            }
            assert_eq!((writes, parts), (1, SEGMENTS));
        })
    });
    g.finish();
}

/// Both groups.
pub fn benches(c: &mut Criterion) {
    bench_segment(c);
    bench_coalesce(c);
}
