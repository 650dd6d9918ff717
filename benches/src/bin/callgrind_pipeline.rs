//! Instruction counts per packet for the pipeline, under valgrind's callgrind.
//!
//! ```text
//! cargo build --release -p linen-benches --bin callgrind_pipeline
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.encap \
//!     --toggle-collect='callgrind_pipeline::measure_*' \
//!     target/release/callgrind_pipeline encap_100k 1000000
//! callgrind_annotate /tmp/cg.encap | head   # total Ir ÷ packets = instructions per packet
//! ```
//!
//! Modes: `encap_1` (one route, one flow), `encap_100k` (100 000 random prefixes over 1 000 peers,
//! 64 flows to random destinations, as in the criterion bench `encap/routes_100k_cache_hot`;
//! instruction counts do not depend on where the route entries are cached), `decap_64` and
//! `decap_1400` (inner frame of 64 or 1400 bytes, 1 000 known peers), and `noop` (the same loop
//! and frame construction without a pipeline call, to subtract). Every mode cycles over 64
//! buffers, like a batch. Only the `measure_*` loop is counted (`--toggle-collect`), so table building is
//! excluded. Without valgrind the binary prints the wall time per packet, which is noisier.
//!
//! Super-packet modes, where the count is of 64 KiB TCP bursts (45 segments each, as in the
//! criterion benches `segment/tcp4_64KiB` and `coalesce/tcp4_64KiB`): `segment_64k` cuts each
//! burst into segments, `coalesce_64k` merges the 45 segments back into one write. Divide by
//! 45 × bursts for instructions per segment.
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Instant;

use linen_benches::workload::{
    chunks, config, inner_frame, peer, routes, segment_super_packet, tcp_super_packet, CHUNK,
    HEADROOM, SUPER_SEGMENTS,
};
use linen_dataplane::pipeline::{
    decap, encap, Action, Coalescer, Config, Frame, NextHop, Offload, Routes, RoutesBuilder,
};

/// Runs `op` on `n` frames, cycling over the packets in `umem` (one per `CHUNK`), each frame
/// rebuilt at `HEADROOM` as a worker would from a descriptor. Counts frames `op` forwarded.
#[inline(always)]
fn cycle(umem: &mut [u8], len: usize, n: u64, mut op: impl FnMut(&mut Frame<'_>) -> bool) -> u64 {
    let mut ok = 0;
    let mut left = n;
    while left > 0 {
        for chunk in umem.chunks_exact_mut(CHUNK) {
            if let Some(mut f) = Frame::new(chunk, HEADROOM, len) {
                ok += u64::from(op(&mut f));
            }
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    ok
}

#[inline(never)]
fn measure_encap(umem: &mut [u8], len: usize, cfg: &Config, routes: &Routes, n: u64) -> u64 {
    cycle(umem, len, n, |f| matches!(encap(f, cfg, black_box(routes)), Action::Transmit(_)))
}

#[inline(never)]
fn measure_decap(umem: &mut [u8], len: usize, cfg: &Config, routes: &Routes, n: u64) -> u64 {
    cycle(umem, len, n, |f| matches!(decap(f, cfg, black_box(routes)), Action::Transmit(_)))
}

/// Cuts the super-packet into segments `n` times; counts the bursts cut whole.
#[inline(never)]
fn measure_segment(pkt: &[u8], offload: &Offload, out: &mut [Vec<u8>], n: u64) -> u64 {
    let mut ok = 0;
    for _ in 0..n {
        for o in out.iter_mut() {
            o.resize(CHUNK, 0);
        }
        ok += u64::from(segment_super_packet(black_box(pkt), offload, out) == SUPER_SEGMENTS);
    }
    ok
}

/// Merges the segments `n` times; counts the bursts that came back as one write.
#[inline(never)]
fn measure_coalesce(segs: &[Vec<u8>], co: &mut Coalescer, n: u64) -> u64 {
    let mut ok = 0;
    for _ in 0..n {
        co.clear();
        for (i, s) in segs.iter().enumerate() {
            co.push(i as u32, black_box(s));
        }
        co.finish();
        ok += u64::from(co.writes().map(|w| w.parts.len()).eq([SUPER_SEGMENTS]));
    }
    ok
}

/// The harness alone (frame construction and the loop), to subtract from the other modes.
#[inline(never)]
fn measure_noop(umem: &mut [u8], len: usize, n: u64) -> u64 {
    cycle(umem, len, n, |f| black_box(f).len() == len)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: callgrind_pipeline \
                 encap_1|encap_100k|decap_64|decap_1400|noop|segment_64k|coalesce_64k [count]";
    let Some(mode) = args.get(1) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let n: u64 = match args.get(2).map(|s| s.parse()) {
        None => 1_000_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("bad packet count: {e}\n{usage}");
            std::process::exit(2);
        }
    };
    let cfg = config();
    let ok = match mode.as_str() {
        "encap_1" | "encap_100k" => {
            let (routes, dsts) =
                if mode == "encap_1" { routes(&cfg, 1, 64) } else { routes(&cfg, 100_000, 64) };
            let packets: Vec<Vec<u8>> = dsts
                .iter()
                .enumerate()
                .map(|(i, d)| inner_frame(*d, 40000 + i as u16, 64))
                .collect();
            let (mut umem, _) = chunks(&packets);
            let t = Instant::now();
            let ok = measure_encap(&mut umem, 64, &cfg, &routes, n);
            report(t, n);
            ok
        }
        "decap_64" | "decap_1400" => {
            let inner_len = if mode == "decap_64" { 64 } else { 1400 };
            // Build the VXLAN frame with the sender's encap, then decapsulate at the receiver.
            let p = peer(0);
            let mut b = RoutesBuilder::new();
            b.insert("10.244.2.0/24".parse().expect("valid prefix"), NextHop::new(&cfg, &p));
            let mut inner = inner_frame(Ipv4Addr::new(10, 244, 2, 2), 40000, inner_len);
            inner[..6].copy_from_slice(&p.vtep_mac);
            let (mut umem, _) = chunks(&[inner]);
            let outer_len = {
                let mut f = Frame::new(&mut umem, HEADROOM, inner_len).expect("fits");
                assert!(matches!(encap(&mut f, &cfg, &b.build()), Action::Transmit(_)));
                f.len()
            };
            umem.copy_within(HEADROOM - 50..HEADROOM + inner_len, HEADROOM);
            // 64 copies, so the loop matches the encap modes'.
            let one = umem[..CHUNK].to_vec();
            let mut umem: Vec<u8> = std::iter::repeat_n(one, 64).flatten().collect();
            let rx = Config::new(p.vtep, p.underlay_mac.expect("resolved"), p.vtep_mac);
            let mut peers = RoutesBuilder::new();
            for i in 0..1000u32 {
                peers.add_peer(Ipv4Addr::from(0xc0a8_0000 + 1 + i * 3));
            }
            peers.add_peer(cfg.local_vtep);
            let routes = peers.build();
            let t = Instant::now();
            let ok = measure_decap(&mut umem, outer_len, &rx, &routes, n);
            report(t, n);
            ok
        }
        "segment_64k" | "coalesce_64k" => {
            let (pkt, offload) = tcp_super_packet();
            let mut segs = vec![vec![0u8; CHUNK]; SUPER_SEGMENTS];
            assert_eq!(segment_super_packet(&pkt, &offload, &mut segs), SUPER_SEGMENTS);
            let t = Instant::now();
            let ok = if mode == "segment_64k" {
                measure_segment(&pkt, &offload, &mut segs, n)
            } else {
                measure_coalesce(&segs, &mut Coalescer::new(), n)
            };
            report(t, n);
            ok
        }
        "noop" => {
            let (mut umem, _) =
                chunks(&vec![inner_frame(Ipv4Addr::new(10, 244, 2, 2), 40000, 64); 64]);
            let t = Instant::now();
            let ok = measure_noop(&mut umem, 64, n);
            report(t, n);
            ok
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    if ok != n {
        eprintln!("only {ok} of {n} packets were forwarded");
        std::process::exit(1);
    }
}

fn report(t: Instant, n: u64) {
    let ns = t.elapsed().as_nanos() as f64 / n.max(1) as f64;
    println!("{n} packets, {ns:.1} ns/packet (wall clock; use callgrind for instruction counts)");
}
