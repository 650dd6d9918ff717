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
use linen_dataplane::pipeline::{Coalescer, Gso, Offload, Segmenter};

const MSS: usize = 1448;
const SEGMENTS: usize = 45;
const HDR: usize = 14 + 20 + 32;
/// What fits a 2 KiB UMEM frame behind its headroom.
const HEAD: usize = 1728;

/// A TCP/IPv4 super-packet as the kernel hands one over: the checksum field holds the
/// pseudo-header sum (its value does not change the work done).
fn super_packet() -> Vec<u8> {
    let payload = MSS * SEGMENTS;
    let mut p = vec![0u8; HDR + payload];
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    p[14] = 0x45;
    p[16..18].copy_from_slice(&((HDR - 14 + payload) as u16).to_be_bytes());
    p[20] = 0x40;
    p[22] = 63;
    p[23] = 6;
    p[26..30].copy_from_slice(&[10, 244, 1, 2]);
    p[30..34].copy_from_slice(&[10, 244, 2, 2]);
    p[34..36].copy_from_slice(&40000u16.to_be_bytes());
    p[36..38].copy_from_slice(&5201u16.to_be_bytes());
    p[46] = 0x80; // data offset 8 (timestamps)
    p[47] = 0x18; // PSH|ACK
    p[48..50].copy_from_slice(&502u16.to_be_bytes());
    p[54..66].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    for (i, b) in p[HDR..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    p
}

fn offload() -> Offload {
    Offload { gso: Gso::Tcp4 { mss: MSS as u16 }, csum: Some((34, 16)), ..Offload::NONE }
}

fn segment_into(pkt: &[u8], out: &mut [Vec<u8>]) -> usize {
    let (head, tail) = pkt.split_at(HEAD);
    let Ok(mut s) = Segmenter::new(head, tail, &offload()) else { return 0 };
    let mut n = 0;
    while s.next_len().is_some() {
        if s.write_next(&mut out[n]) == 0 {
            return 0;
        }
        n += 1;
    }
    n
}

fn bench_segment(c: &mut Criterion) {
    let pkt = super_packet();
    let mut out = vec![vec![0u8; 2048]; SEGMENTS];
    assert_eq!(segment_into(&pkt, &mut out), SEGMENTS);
    let mut g = c.benchmark_group("segment");
    g.throughput(Throughput::Bytes((MSS * SEGMENTS) as u64));
    g.bench_function("tcp4_64KiB", |b| {
        b.iter(|| {
            let n = segment_into(black_box(&pkt), &mut out);
            assert_eq!(n, SEGMENTS);
            black_box(&out);
        })
    });
    g.finish();
}

fn bench_coalesce(c: &mut Criterion) {
    let pkt = super_packet();
    let mut segs = vec![vec![0u8; 2048]; SEGMENTS];
    assert_eq!(segment_into(&pkt, &mut segs), SEGMENTS);
    for s in &mut segs {
        let len = 14 + usize::from(u16::from_be_bytes([s[16], s[17]]));
        s.truncate(len);
    }
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
