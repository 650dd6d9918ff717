//! Segmentation and coalescing against what the kernel itself produces
//! (`tests/fixtures/kernel-vxlan-gso.pcap`, see its README): TCP bursts over IPv4 and IPv6 that
//! the kernel's TSO/GSO cut into segments, carried by its VXLAN device in flannel's configuration.
//!
//! Every captured frame decapsulates; the data segments of each flow, merged by the
//! [`Coalescer`] as a batch would merge them, come back as super-packets that the [`Segmenter`]
//! cuts into exactly the kernel's segments again, byte for byte (IPv4 ID, TCP sequence numbers,
//! flags, every checksum).

mod common;

use std::net::Ipv4Addr;

use linen_dataplane::pcap::Pcap;
use linen_dataplane::pipeline::{
    decap, Action, Coalescer, Config, Egress, Frame, Gso, Offload, RoutesBuilder, Segmenter,
    VNET_HDR_LEN,
};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kernel-vxlan-gso.pcap");

/// The inner frames of every captured VXLAN frame, decapsulated by node B or node A as the
/// frame's direction says.
fn inner_frames() -> Vec<Vec<u8>> {
    let a =
        Config::new(Ipv4Addr::new(192, 168, 77, 1), [0; 6], [0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8]);
    let b =
        Config::new(Ipv4Addr::new(192, 168, 77, 2), [0; 6], [0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c]);
    let mut ra = RoutesBuilder::new();
    ra.add_peer(b.local_vtep);
    let mut rb = RoutesBuilder::new();
    rb.add_peer(a.local_vtep);
    let (ra, rb) = (ra.build(), rb.build());
    let frames = Pcap::read_frames(FIXTURE).expect("fixture pcap readable");
    assert_eq!(frames.len(), 96, "the fixture README promises 96 frames");
    frames
        .iter()
        .map(|outer| {
            let to_b = outer[30..34] == [192, 168, 77, 2];
            let (cfg, routes) = if to_b { (&b, &rb) } else { (&a, &ra) };
            let mut buf = outer.clone();
            let mut f = Frame::new(&mut buf, 0, outer.len()).unwrap();
            assert_eq!(decap(&mut f, cfg, routes), Action::Transmit(Egress::Overlay));
            f.data().to_vec()
        })
        .collect()
}

/// TCP segments with payload from pod A (10.244.1.2 / fd00:1::2) to pod B, in capture order.
fn data_segments(frames: &[Vec<u8>], v6: bool) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter(|f| {
            let (l4, total) = if v6 {
                if f[12..14] != [0x86, 0xdd] || f[20] != 6 || f[37] != 2 {
                    return false;
                }
                (54, 54 + usize::from(u16::from_be_bytes([f[18], f[19]])))
            } else {
                if f[12..14] != [0x08, 0x00] || f[23] != 6 || f[26..30] != [10, 244, 1, 2] {
                    return false;
                }
                (34, 14 + usize::from(u16::from_be_bytes([f[16], f[17]])))
            };
            total > l4 + usize::from(f[l4 + 12] >> 4) * 4
        })
        .cloned()
        .collect()
}

/// The coalescer's writes for `segs`, each as (virtio-net header, packet bytes).
fn coalesced(segs: &[Vec<u8>]) -> Vec<([u8; VNET_HDR_LEN], Vec<u8>)> {
    let mut c = Coalescer::new();
    for (i, s) in segs.iter().enumerate() {
        assert!(c.push(i as u32, s));
    }
    c.finish();
    c.writes()
        .map(|w| {
            let mut bytes = w.header.to_vec();
            for p in w.parts {
                bytes.extend_from_slice(&segs[p.id as usize][p.start as usize..][..p.len as usize]);
            }
            (w.vnet, bytes)
        })
        .collect()
}

/// The seeds of the `offload` fuzz target (fuzz/fuzz_targets/offload.rs): the first segments of
/// each flow as plain packets, and every packet the coalescer makes of each flow with its
/// virtio-net header, split where a 2 KiB UMEM frame ends. Regenerate with
/// `LINEN_WRITE_FUZZ_SEEDS=1 cargo test -p linen-dataplane --test offload_fixture`.
#[test]
fn fuzz_seeds_match_the_fixture() {
    let frames = inner_frames();
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    for (v6, name) in [(false, "v4"), (true, "v6")] {
        let segs = data_segments(&frames, v6);
        for (i, s) in segs.iter().take(2).enumerate() {
            let seed = [&[0u8; VNET_HDR_LEN][..], &[0xff, 0xff], s].concat();
            expected.push((format!("{name}-segment{i}"), seed));
        }
        for (i, (vnet, bytes)) in coalesced(&segs).iter().enumerate() {
            let seed = [&vnet[..], &1728u16.to_be_bytes(), bytes].concat();
            expected.push((format!("{name}-super{i}"), seed));
        }
    }
    common::check_fuzz_seeds("offload", &expected);
}

fn check_flow(frames: &[Vec<u8>], v6: bool, mss: usize) {
    let segs = data_segments(frames, v6);
    assert_eq!(segs.len(), 36, "36 data segments per flow (48 KiB); v6={v6}");
    let payload: usize = segs.iter().map(|s| s.len() - if v6 { 86 } else { 66 }).sum();
    assert_eq!(payload, 49_152);

    // Coalesce them in batches of 64 frames, as a worker would.
    let mut c = Coalescer::new();
    let mut rebuilt = Vec::new();
    let mut writes = 0;
    for batch in segs.chunks(64) {
        c.clear();
        for (i, s) in batch.iter().enumerate() {
            assert!(c.push(i as u32, s));
        }
        c.finish();
        for w in c.writes() {
            writes += 1;
            let mut bytes = w.header.to_vec();
            for p in w.parts {
                bytes
                    .extend_from_slice(&batch[p.id as usize][p.start as usize..][..p.len as usize]);
            }
            let offload = Offload::parse(&w.vnet).unwrap();
            if w.segments == 1 {
                assert_eq!(offload.gso, Gso::None);
                rebuilt.push(bytes);
                continue;
            }
            let want =
                if v6 { Gso::Tcp6 { mss: mss as u16 } } else { Gso::Tcp4 { mss: mss as u16 } };
            assert_eq!(offload.gso, want);
            // The kernel's segmentation of our super-packet: our Segmenter.
            let mut s = Segmenter::new(&bytes, &[], &offload).unwrap();
            while let Some(len) = s.next_len() {
                let mut out = vec![0u8; len];
                s.write_next(&mut out);
                rebuilt.push(out);
            }
        }
    }
    // A merge ends where Linux GRO would end it: after a PSH or a short segment, and where the
    // TCP options (the timestamp) change. The capture has such boundaries inside the transfer.
    let l4 = if v6 { 54 } else { 34 };
    let boundaries = (1..segs.len())
        .filter(|&i| {
            let (p, q) = (&segs[i - 1], &segs[i]);
            p[l4 + 13] & 0x08 != 0
                || p.len() - l4 - 32 < mss
                || p[l4 + 20..l4 + 32] != q[l4 + 20..l4 + 32]
        })
        .count();
    assert_eq!(writes, 1 + boundaries, "{writes} writes for 36 segments");
    assert!(writes < 10);
    assert_eq!(rebuilt.len(), segs.len());
    for (i, (ours, kernels)) in rebuilt.iter().zip(&segs).enumerate() {
        assert_eq!(ours, kernels, "segment {i} differs (v6={v6})");
    }
}

#[test]
fn kernel_tso_segments_coalesce_and_resegment_to_the_same_bytes_ipv4() {
    check_flow(&inner_frames(), false, 1398);
}

#[test]
fn kernel_tso_segments_coalesce_and_resegment_to_the_same_bytes_ipv6() {
    check_flow(&inner_frames(), true, 1378);
}
