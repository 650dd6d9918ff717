//! The pipeline benchmarks' workload, shared by the criterion bench (`encap/…`, `decap/…`,
//! `batch64/…`) and the callgrind driver (`callgrind_pipeline`) so both measure the same tables and
//! frames: a deterministic route table over 1 000 peers, inner IPv4/UDP frames, and UMEM-like
//! chunks of `CHUNK` bytes with `HEADROOM` bytes in front of each packet.
use std::net::Ipv4Addr;

use linen_dataplane::pipeline::{Config, NextHop, Peer, Routes, RoutesBuilder};

/// Headroom in front of each packet in a chunk (as AF_XDP leaves it).
pub const HEADROOM: usize = 256;
/// Size of one UMEM-like chunk.
pub const CHUNK: usize = 2048;
/// The local underlay MAC of the benchmarked node.
pub const LOCAL_MAC: [u8; 6] = [0x92, 0x14, 0x14, 0x17, 0xdb, 0xd3];
/// The local VtepMAC (`linen.1`) of the benchmarked node.
pub const VTEP_MAC: [u8; 6] = [0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8];

/// A small deterministic generator (xorshift64*), so every run benchmarks the same table.
pub struct Rng(pub u64);
impl Rng {
    /// The next pseudo-random value.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The benchmarked node: VTEP 192.168.77.1.
pub fn config() -> Config {
    Config::new(Ipv4Addr::new(192, 168, 77, 1), LOCAL_MAC, VTEP_MAC)
}

/// Peer number `i` (VTEP 192.168.0.2 + i), with a resolved underlay MAC.
pub fn peer(i: u32) -> Peer {
    Peer {
        vtep: Ipv4Addr::from(0xc0a8_0000 + 2 + i),
        vtep_mac: [0x26, 0x69, 0xc7, 0x3a, (i >> 8) as u8, i as u8],
        underlay_mac: Some([0xe6, 0x37, 0x6c, 0xed, (i >> 8) as u8, i as u8]),
        ifindex: 2,
    }
}

/// `n` routes and `flows` destination addresses that each fall inside one of them.
pub fn routes(cfg: &Config, n: usize, flows: usize) -> (Routes, Vec<Ipv4Addr>) {
    let mut b = RoutesBuilder::new();
    if n == 1 {
        b.insert("10.244.2.0/24".parse().expect("valid prefix"), NextHop::new(cfg, &peer(0)));
        return (b.build(), vec![Ipv4Addr::new(10, 244, 2, 2); flows]);
    }
    let hops: Vec<NextHop> = (0..1000).map(|i| NextHop::new(cfg, &peer(i))).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut nets = Vec::with_capacity(n);
    while b.len() < n {
        let len = 12 + (rng.next() % 19) as u8; // /12 ../30
        let addr = (rng.next() as u32) & !(u32::MAX >> len);
        let net = format!("{}/{}", Ipv4Addr::from(addr), len);
        b.insert(net.parse().expect("valid prefix"), hops[b.len() % hops.len()].clone());
        nets.push((addr, len));
    }
    let dsts = (0..flows)
        .map(|_| {
            let (addr, len) = nets[(rng.next() % nets.len() as u64) as usize];
            Ipv4Addr::from(addr | (rng.next() as u32 & (u32::MAX >> len)))
        })
        .collect();
    (b.build(), dsts)
}

/// An inner IPv4/UDP frame of `len` bytes from 10.244.1.2 to `dst`, UDP source port `sport`.
pub fn inner_frame(dst: Ipv4Addr, sport: u16, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c]);
    f[6..12].copy_from_slice(&VTEP_MAC);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    f[14..34].copy_from_slice(&[
        0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 63, 17, 0, 0, 10, 244, 1, 2, 0, 0, 0, 0,
    ]);
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[30..34].copy_from_slice(&dst.octets());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&9000u16.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f
}

/// Chunks of `CHUNK` bytes, each holding one packet after `HEADROOM` bytes (like UMEM frames).
pub fn chunks(packets: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    let mut umem = vec![0u8; CHUNK * packets.len()];
    for (i, p) in packets.iter().enumerate() {
        umem[i * CHUNK + HEADROOM..i * CHUNK + HEADROOM + p.len()].copy_from_slice(p);
    }
    (umem, packets.iter().map(Vec::len).collect())
}

/// Payload bytes per segment of [`tcp_super_packet`].
pub const SUPER_MSS: usize = 1448;
/// Segments in [`tcp_super_packet`] (65,160 payload bytes).
pub const SUPER_SEGMENTS: usize = 45;
/// What of a super-packet fits a 2 KiB UMEM frame behind its headroom; the rest is read into
/// an overflow area.
pub const SUPER_HEAD: usize = 1728;

/// A TCP/IPv4 super-packet as a TAP with segmentation offload hands one over: 45 × 1448 payload
/// bytes behind Ethernet, IPv4 and a TCP header with timestamps (66 bytes), PSH|ACK, the TCP
/// checksum field holding the pseudo-header sum, and the offload state that comes with it.
pub fn tcp_super_packet() -> (Vec<u8>, linen_dataplane::pipeline::Offload) {
    use linen_dataplane::pipeline::{Gso, Offload};
    const HDR: usize = 14 + 20 + 32;
    let payload = SUPER_MSS * SUPER_SEGMENTS;
    let mut p = vec![0u8; HDR + payload];
    p[..6].copy_from_slice(&VTEP_MAC);
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
    let offload =
        Offload { gso: Gso::Tcp4 { mss: SUPER_MSS as u16 }, csum: Some((34, 16)), ..Offload::NONE };
    (p, offload)
}

/// Cuts `pkt` (split at [`SUPER_HEAD`], as a TAP read leaves it) into `out`'s buffers; returns
/// the number of segments, 0 if the segmenter refused it or a buffer was too short.
pub fn segment_super_packet(
    pkt: &[u8],
    offload: &linen_dataplane::pipeline::Offload,
    out: &mut [Vec<u8>],
) -> usize {
    let (head, tail) = pkt.split_at(SUPER_HEAD.min(pkt.len()));
    let Ok(mut s) = linen_dataplane::pipeline::Segmenter::new(head, tail, offload) else {
        return 0;
    };
    let mut n = 0;
    while s.next_len().is_some() {
        let Some(buf) = out.get_mut(n) else { return 0 };
        let len = s.write_next(buf);
        if len == 0 {
            return 0;
        }
        buf.truncate(len);
        n += 1;
    }
    n
}
