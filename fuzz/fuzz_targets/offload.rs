//! Fuzz target: super-packets across the kernel boundary (`linen_dataplane::pipeline`'s
//! `Offload`, `Segmenter`, `Coalescer` and `complete_checksum`).
//!
//! Input layout: bytes 0..10 are a virtio-net header as the overlay device would put it in front
//! of a packet, bytes 10..12 (big-endian) where a backend's frame buffer ends and its overflow
//! area begins, the rest is the packet.
//!
//! Beyond "never panics", it checks what the datapath relies on: every segment the segmenter
//! writes is as long as it announced, carries at most the segment size of payload, and has a
//! verifying transport checksum (and IPv4 header checksum); the coalescer, offered those
//! segments, points only inside them and writes each one's bytes exactly once, in order; a
//! completed checksum verifies.
//!
//! Seeds in `fuzz/seeds/offload/` are written by the test `fuzz_seeds_match_the_fixture` in
//! `dataplane/tests/offload_fixture.rs`: the kernel's TSO segments of the GSO fixture, and the
//! super-packets linen's coalescer makes of them, with their headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use linen_dataplane::pipeline::{complete_checksum, Coalescer, Gso, Offload, Segmenter};
use linen_dataplane::wire::checksum;

/// Whether the transport checksum of an untagged IPv4/IPv6 frame whose transport header starts
/// at `l4` verifies.
fn transport_verifies(frame: &[u8], l4: usize, proto: u8) -> bool {
    let len = frame.len() - l4;
    let pseudo = if frame[12] == 0x08 {
        let a = |at: usize| {
            std::net::Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3])
        };
        checksum::pseudo_header_v4(a(26), a(30), proto.into(), len as u16)
    } else {
        let a = |at: usize| {
            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(&frame[at..at + 16]).unwrap())
        };
        checksum::pseudo_header_v6(a(22), a(38), proto.into(), len as u32)
    };
    checksum::verifies(checksum::add(pseudo, checksum::sum(&frame[l4..])))
}

fuzz_target!(|data: &[u8]| {
    let Some((hdr, rest)) = data.split_first_chunk::<10>() else { return };
    let Some((split, pkt)) = rest.split_first_chunk::<2>() else { return };
    let Ok(offload) = Offload::parse(hdr) else { return };
    assert_eq!(Offload::parse(&offload.emit()), Ok(offload), "emit/parse round trip");
    let split = usize::from(u16::from_be_bytes(*split)).min(pkt.len());
    let (head, tail) = pkt.split_at(split);

    if offload.gso == Gso::None {
        if let Some(span) = offload.csum {
            let mut frame = pkt.to_vec();
            let field = usize::from(span.0) + usize::from(span.1);
            // What the field held: the pseudo-header sum the receiver adds back.
            let pseudo = frame.get(field..field + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
            if complete_checksum(&mut frame, span).is_ok() {
                let pseudo = pseudo.expect("a completed field lies in the frame");
                let start = usize::from(span.0);
                // (A UDP checksum that came out as zero is sent as 0xffff, the same number in
                // ones' complement, so it verifies too.)
                let c = checksum::add(pseudo, checksum::sum(&frame[start..]));
                assert!(checksum::verifies(c), "completed checksum");
            }
        }
        return;
    }
    let Ok(mut seg) = Segmenter::new(head, tail, &offload) else { return };
    let (udp, mss) = match offload.gso {
        Gso::Udp { size } => (true, usize::from(size)),
        Gso::Tcp4 { mss } | Gso::Tcp6 { mss } => (false, usize::from(mss)),
        Gso::None => unreachable!(),
    };
    let hdr_len = seg.header_len();
    let l4 = usize::from(offload.csum.expect("segmentation has a checksum").0);
    let expected = seg.count();
    let mut segments = Vec::new();
    while let Some(len) = seg.next_len() {
        let mut out = vec![0u8; len];
        assert_eq!(seg.write_next(&mut out), len);
        assert!(len >= hdr_len && len - hdr_len <= mss, "segment of {len} bytes");
        // Behind IPv6 extension headers the pseudo-header's protocol is the offload's.
        assert!(transport_verifies(&out, l4, if udp { 17 } else { 6 }), "transport checksum");
        if out[12] == 0x08 {
            assert!(checksum::verifies(checksum::sum(&out[14..l4])), "IPv4 header checksum");
        }
        segments.push(out);
        assert!(segments.len() <= expected);
    }
    assert_eq!(segments.len(), expected);

    let mut c = Coalescer::new();
    for (i, s) in segments.iter().enumerate().take(Coalescer::CAPACITY) {
        assert!(c.push(i as u32, s));
    }
    c.finish();
    let mut next = (0usize, 0usize);
    for w in c.writes() {
        assert!(Offload::parse(&w.vnet).is_ok());
        for p in w.parts {
            let s = &segments[p.id as usize];
            assert!((p.start + p.len) as usize <= s.len(), "part outside its packet");
            // Parts come in the order they were offered.
            assert!((p.id as usize, p.start as usize) >= next);
            next = (p.id as usize, (p.start + p.len) as usize);
        }
    }
});
