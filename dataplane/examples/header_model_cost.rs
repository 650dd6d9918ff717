//! The measurement behind docs/wire.md's choice of header model: the fast paths of encap and
//! decap written three ways — fixed offsets into the frame, linen's `wire` views, and
//! `smoltcp::wire` views (with linen's VXLAN view, which smoltcp lacks) — over the same frames,
//! so that callgrind can count what each way costs per packet.
//!
//! ```text
//! cargo build --release --example header_model_cost -p linen-dataplane
//! valgrind --tool=callgrind --toggle-collect='header_model_cost::measure_*' \
//!     target/release/examples/header_model_cost <offsets|linen|smoltcp> <encap|decap> 1000000
//! ```
//!
//! Each variant does the same checks in the same order and returns the same result (checked at
//! start-up); "Collected" ÷ packets is the cost of one packet, loop included.
use std::hint::black_box;
use std::net::Ipv4Addr;

use linen_dataplane::pipeline::{Config, NextHop, Peer, PeerSet, Routes, RoutesBuilder};
use linen_dataplane::wire::{self, checksum, EtherType, EthernetFrame, IpProtocol, Ipv4Packet};
use linen_dataplane::wire::{UdpPacket, VxlanPacket};
use smoltcp::wire as st;

const OUTER: usize = 50;

fn hash(src: u32, dst: u32, proto: u8, ports: u32) -> u32 {
    let x = ((u64::from(src) << 32) | u64::from(dst))
        ^ u64::from(ports).rotate_left(16)
        ^ u64::from(proto) << 56;
    (x.wrapping_mul(0x243f_6a88_85a3_08d3) >> 32) as u32
}

/// The template's IPv4 header sum (length, ID and checksum zero), big-endian, folded.
fn template_sum(nh: &NextHop) -> u32 {
    u32::from(checksum::sum(&nh.outer_header()[14..34]))
}

// ---- encap: classify an untagged IPv4 frame, look it up, write the outer header ----

#[inline(never)]
fn encap_offsets(hdr: &mut [u8; OUTER], data: &[u8], mtu: usize, routes: &Routes) -> Option<u16> {
    let h = data.first_chunk::<38>()?;
    if [h[12], h[13]] != [0x08, 0x00] || h[14] != 0x45 || h[22] == 0 {
        return None;
    }
    let ip_len = usize::from(u16::from_be_bytes([h[16], h[17]]));
    if ip_len.wrapping_sub(24) > data.len() - 38 || ip_len > mtu {
        return None;
    }
    let dst = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
    let nh = routes.lookup_v4(dst)?;
    let ports = u32::from_ne_bytes([h[34], h[35], h[36], h[37]]);
    let src = u32::from_ne_bytes([h[26], h[27], h[28], h[29]]);
    let hs = hash(src, dst, h[23], ports);
    let id = u16::from_ne_bytes([h[18], h[19]]) ^ (hs >> 16) as u16;
    *hdr = *nh.outer_header();
    let total = (OUTER - 14 + 14 + ip_len) as u16;
    let s = template_sum(nh) + u32::from(total) + u32::from(u16::from_be(id));
    let c = !((s.wrapping_add(s.rotate_left(16)) >> 16) as u16);
    hdr[16..18].copy_from_slice(&total.to_be_bytes());
    hdr[18..20].copy_from_slice(&id.to_ne_bytes());
    hdr[24..26].copy_from_slice(&c.to_be_bytes());
    hdr[34..36].copy_from_slice(&((hs >> 16) as u16 | 0x8000).to_be_bytes());
    hdr[38..40].copy_from_slice(&(total - 20).to_be_bytes());
    Some(c)
}

#[inline(never)]
fn encap_linen(hdr: &mut [u8; OUTER], data: &[u8], mtu: usize, routes: &Routes) -> Option<u16> {
    let h = data.first_chunk::<38>()?;
    let eth = EthernetFrame::new_unchecked(&h[..]);
    let ip = Ipv4Packet::new_unchecked(&h[14..34]);
    if eth.ethertype() != EtherType::Ipv4
        || ip.version() != 4
        || ip.header_len() != 20
        || ip.ttl() == 0
    {
        return None;
    }
    let ip_len = usize::from(ip.total_len());
    if ip_len.wrapping_sub(24) > data.len() - 38 || ip_len > mtu {
        return None;
    }
    let dst = u32::from(ip.dst_addr());
    let nh = routes.lookup_v4(dst)?;
    let l4 = UdpPacket::new_unchecked(&h[34..38]);
    let ports = (u32::from(l4.src_port()) << 16) | u32::from(l4.dst_port());
    let hs = hash(u32::from(ip.src_addr()), dst, u8::from(ip.protocol()), ports);
    let id = ip.ident() ^ (hs >> 16) as u16;
    *hdr = *nh.outer_header();
    let total = (OUTER - 14 + 14 + ip_len) as u16;
    let s = template_sum(nh) + u32::from(total) + u32::from(id);
    let c = !((s.wrapping_add(s.rotate_left(16)) >> 16) as u16);
    let (_, rest) = hdr.split_at_mut(14);
    let (ip_hdr, rest) = rest.split_at_mut(20);
    let mut oip = Ipv4Packet::new_unchecked(ip_hdr);
    oip.set_total_len(total);
    oip.set_ident(id);
    oip.set_checksum(c);
    let mut udp = UdpPacket::new_unchecked(&mut rest[..8]);
    udp.set_src_port((hs >> 16) as u16 | 0x8000);
    udp.set_len(total - 20);
    Some(c)
}

#[inline(never)]
fn encap_smoltcp(hdr: &mut [u8; OUTER], data: &[u8], mtu: usize, routes: &Routes) -> Option<u16> {
    let h = data.first_chunk::<38>()?;
    let eth = st::EthernetFrame::new_unchecked(&h[..]);
    let ip = st::Ipv4Packet::new_unchecked(&h[14..34]);
    if eth.ethertype() != st::EthernetProtocol::Ipv4
        || ip.version() != 4
        || ip.header_len() != 20
        || ip.hop_limit() == 0
    {
        return None;
    }
    let ip_len = usize::from(ip.total_len());
    if ip_len.wrapping_sub(24) > data.len() - 38 || ip_len > mtu {
        return None;
    }
    let dst = u32::from(ip.dst_addr());
    let nh = routes.lookup_v4(dst)?;
    let l4 = st::UdpPacket::new_unchecked(&h[34..38]);
    let ports = (u32::from(l4.src_port()) << 16) | u32::from(l4.dst_port());
    let hs = hash(u32::from(ip.src_addr()), dst, u8::from(ip.next_header()), ports);
    let id = ip.ident() ^ (hs >> 16) as u16;
    *hdr = *nh.outer_header();
    let total = (OUTER - 14 + 14 + ip_len) as u16;
    let s = template_sum(nh) + u32::from(total) + u32::from(id);
    let c = !((s.wrapping_add(s.rotate_left(16)) >> 16) as u16);
    let (_, rest) = hdr.split_at_mut(14);
    let (ip_hdr, rest) = rest.split_at_mut(20);
    let mut oip = st::Ipv4Packet::new_unchecked(ip_hdr);
    oip.set_total_len(total);
    oip.set_ident(id);
    oip.set_checksum(c);
    let mut udp = st::UdpPacket::new_unchecked(&mut rest[..8]);
    udp.set_src_port((hs >> 16) as u16 | 0x8000);
    udp.set_len(total - 20);
    Some(c)
}

// ---- decap: every check of the fast path, returning the inner frame's length ----

#[inline(never)]
fn decap_offsets(data: &[u8], cfg: &Config, peers: &PeerSet) -> Option<usize> {
    let h = data.first_chunk::<64>()?;
    if [h[12], h[13]] != [0x08, 0x00]
        || h[14] != 0x45
        || [h[30], h[31], h[32], h[33]] != cfg.local_vtep.octets()
        || h[23] != 17
        || (h[20] & 0x3f) | h[21] != 0
    {
        return None;
    }
    let vxlan = u64::from_be_bytes([h[42], h[43], h[44], h[45], h[46], h[47], h[48], h[49]]);
    if u16::from_be_bytes([h[36], h[37]]) != cfg.port
        || vxlan != 0x0800_0000_0000_0000 | (u64::from(cfg.vni) << 8)
    {
        return None;
    }
    let ip_len = usize::from(u16::from_be_bytes([h[16], h[17]]));
    let udp_len = usize::from(u16::from_be_bytes([h[38], h[39]]));
    if ip_len + 14 > data.len() || udp_len + 20 > ip_len || udp_len < 16 + 34 {
        return None;
    }
    if !peers.contains_octets([h[26], h[27], h[28], h[29]]) || h[50..56] != cfg.vtep_mac {
        return None;
    }
    match [h[62], h[63]] {
        [0x08, 0x00] => Some(udp_len - 16),
        [0x86, 0xdd] if udp_len >= 16 + 54 => Some(udp_len - 16),
        _ => None,
    }
}

#[inline(never)]
fn decap_linen(data: &[u8], cfg: &Config, peers: &PeerSet) -> Option<usize> {
    let h = data.first_chunk::<64>()?;
    let eth = EthernetFrame::new_unchecked(&h[..14]);
    let ip = Ipv4Packet::new_unchecked(&h[14..34]);
    let udp = UdpPacket::new_unchecked(&h[34..42]);
    let vx = VxlanPacket::new_unchecked(&h[42..50]);
    let inner = EthernetFrame::new_unchecked(&h[50..64]);
    if eth.ethertype() != EtherType::Ipv4
        || ip.version() != 4
        || ip.header_len() != 20
        || ip.dst_addr() != cfg.local_vtep
        || ip.protocol() != IpProtocol::Udp
        || ip.is_fragment()
    {
        return None;
    }
    if udp.dst_port() != cfg.port
        || vx.flags() != wire::vxlan::FLAG_I
        || !vx.reserved_is_zero()
        || vx.vni().get() != cfg.vni
    {
        return None;
    }
    let ip_len = usize::from(ip.total_len());
    let udp_len = usize::from(udp.len());
    if ip_len + 14 > data.len() || udp_len + 20 > ip_len || udp_len < 16 + 34 {
        return None;
    }
    if !peers.contains(ip.src_addr()) || inner.dst_addr().octets() != cfg.vtep_mac {
        return None;
    }
    match inner.ethertype() {
        EtherType::Ipv4 => Some(udp_len - 16),
        EtherType::Ipv6 if udp_len >= 16 + 54 => Some(udp_len - 16),
        _ => None,
    }
}

#[inline(never)]
fn decap_smoltcp(data: &[u8], cfg: &Config, peers: &PeerSet) -> Option<usize> {
    let h = data.first_chunk::<64>()?;
    let eth = st::EthernetFrame::new_unchecked(&h[..14]);
    let ip = st::Ipv4Packet::new_unchecked(&h[14..34]);
    let udp = st::UdpPacket::new_unchecked(&h[34..42]);
    let vx = VxlanPacket::new_unchecked(&h[42..50]);
    let inner = st::EthernetFrame::new_unchecked(&h[50..64]);
    if eth.ethertype() != st::EthernetProtocol::Ipv4
        || ip.version() != 4
        || ip.header_len() != 20
        || ip.dst_addr() != cfg.local_vtep
        || ip.next_header() != st::IpProtocol::Udp
        || ip.more_frags()
        || ip.frag_offset() != 0
    {
        return None;
    }
    if udp.dst_port() != cfg.port
        || vx.flags() != wire::vxlan::FLAG_I
        || !vx.reserved_is_zero()
        || vx.vni().get() != cfg.vni
    {
        return None;
    }
    let ip_len = usize::from(ip.total_len());
    let udp_len = usize::from(udp.len());
    if ip_len + 14 > data.len() || udp_len + 20 > ip_len || udp_len < 16 + 34 {
        return None;
    }
    if !peers.contains(ip.src_addr()) || inner.dst_addr().0 != cfg.vtep_mac {
        return None;
    }
    match inner.ethertype() {
        st::EthernetProtocol::Ipv4 => Some(udp_len - 16),
        st::EthernetProtocol::Ipv6 if udp_len >= 16 + 54 => Some(udp_len - 16),
        _ => None,
    }
}

type EncapFn = fn(&mut [u8; OUTER], &[u8], usize, &Routes) -> Option<u16>;
type DecapFn = fn(&[u8], &Config, &PeerSet) -> Option<usize>;

#[inline(never)]
fn measure_encap(f: EncapFn, frames: &[Vec<u8>], routes: &Routes, n: usize) -> u64 {
    let mut hdr = [0u8; OUTER];
    let mut acc = 0u64;
    for i in 0..n {
        let frame = &frames[i % frames.len()];
        acc += u64::from(f(&mut hdr, black_box(frame), 1450, black_box(routes)).unwrap_or(0));
        black_box(&hdr);
    }
    acc
}

#[inline(never)]
fn measure_decap(f: DecapFn, frames: &[Vec<u8>], cfg: &Config, peers: &PeerSet, n: usize) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        let frame = &frames[i % frames.len()];
        acc += f(black_box(frame), cfg, black_box(peers)).unwrap_or(0) as u64;
    }
    acc
}

fn inner_frame(dst: Ipv4Addr, sport: u16, len: usize, dst_mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&dst_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14..34].copy_from_slice(&[
        0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 63, 17, 0, 0, 10, 244, 1, 2, 0, 0, 0, 0,
    ]);
    f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    f[30..34].copy_from_slice(&dst.octets());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&9000u16.to_be_bytes());
    f
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: header_model_cost offsets|linen|smoltcp encap|decap [packets]";
    let (Some(variant), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let tx = Config::new(Ipv4Addr::new(192, 168, 77, 1), [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let rx = Config::new(Ipv4Addr::new(192, 168, 77, 2), [2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4]);
    let peer =
        Peer { vtep: rx.local_vtep, vtep_mac: rx.vtep_mac, underlay_mac: Some([2; 6]), ifindex: 1 };
    let mut b = RoutesBuilder::new();
    b.insert("10.244.0.0/16".parse().expect("prefix"), NextHop::new(&tx, &peer));
    let routes = b.build();
    let inner: Vec<Vec<u8>> = (0..64u16)
        .map(|i| inner_frame(Ipv4Addr::new(10, 244, 2, i as u8), 40000 + i, 64, rx.vtep_mac))
        .collect();
    let encaps: [(&str, EncapFn); 3] =
        [("offsets", encap_offsets), ("linen", encap_linen), ("smoltcp", encap_smoltcp)];
    let decaps: [(&str, DecapFn); 3] =
        [("offsets", decap_offsets), ("linen", decap_linen), ("smoltcp", decap_smoltcp)];
    // Outer frames: the encap result in front of each inner frame.
    let outer: Vec<Vec<u8>> = inner
        .iter()
        .map(|f| {
            let mut hdr = [0u8; OUTER];
            encap_offsets(&mut hdr, f, 1450, &routes).expect("encap");
            let mut v = hdr.to_vec();
            v.extend_from_slice(f);
            v
        })
        .collect();
    let peers = PeerSet::from_addrs([tx.local_vtep]);
    // Every variant gives the same answers and bytes.
    for f in &inner {
        let outs: Vec<_> = encaps
            .iter()
            .map(|(_, e)| {
                let mut hdr = [0u8; OUTER];
                (e(&mut hdr, f, 1450, &routes), hdr)
            })
            .collect();
        assert!(outs.iter().all(|o| o.0.is_some()));
        assert_eq!(outs[1], outs[2], "linen and smoltcp agree");
        // The offsets variant hashes native-endian words and stores the ID in native byte
        // order, so ID, checksum and source port differ; the rest must not.
        assert_eq!(outs[0].1[..18], outs[1].1[..18]);
        assert_eq!(outs[0].1[20..24], outs[1].1[20..24]);
        assert_eq!(outs[0].1[26..34], outs[1].1[26..34]);
        assert_eq!(outs[0].1[36..], outs[1].1[36..]);
    }
    for f in &outer {
        let outs: Vec<_> = decaps.iter().map(|(_, d)| d(f, &rx, &peers)).collect();
        assert!(outs.iter().all(|o| *o == Some(64)), "{outs:?}");
    }
    let r = match path.as_str() {
        "encap" => {
            let Some((_, f)) = encaps.iter().find(|(name, _)| name == variant) else {
                eprintln!("{usage}");
                std::process::exit(2);
            };
            measure_encap(*f, &inner, &routes, n)
        }
        "decap" => {
            let Some((_, f)) = decaps.iter().find(|(name, _)| name == variant) else {
                eprintln!("{usage}");
                std::process::exit(2);
            };
            measure_decap(*f, &outer, &rx, &peers, n)
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    println!("{n} packets ({r})");
}
