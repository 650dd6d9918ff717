//! Walks every frame of `tests/fixtures/kernel-vxlan-flannel.pcap` (real frames from the
//! kernel's VXLAN device in flannel's configuration) through all the views, checks the fields
//! against the fixture's README, re-emits the outer headers from their `Repr`s, and keeps the
//! fuzz seed corpus (`fuzz/seeds/`) in sync with the fixture.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::ethernet::{EtherType, Frame, MacAddr, Vlan, VlanTag};
use super::ip::IpProtocol;
use super::{arp, checksum, icmpv4, icmpv6, ipv4, ipv6, udp, vxlan};
use crate::pcap::Pcap;

const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/kernel-vxlan-flannel.pcap");

struct Host {
    underlay_ip: Ipv4Addr,
    underlay_mac: MacAddr,
    vtep_mac: MacAddr,
    pod: Ipv4Addr,
}

fn hosts() -> [Host; 2] {
    [
        Host {
            underlay_ip: Ipv4Addr::new(192, 168, 77, 1),
            underlay_mac: "92:14:14:17:db:d3".parse().unwrap(),
            vtep_mac: "2a:a9:df:4e:cb:b8".parse().unwrap(),
            pod: Ipv4Addr::new(10, 244, 1, 2),
        },
        Host {
            underlay_ip: Ipv4Addr::new(192, 168, 77, 2),
            underlay_mac: "e6:37:6c:ed:27:39".parse().unwrap(),
            vtep_mac: "26:69:c7:3a:5b:8c".parse().unwrap(),
            pod: Ipv4Addr::new(10, 244, 2, 2),
        },
    ]
}

fn frames() -> Vec<&'static [u8]> {
    Pcap::parse(FIXTURE).unwrap().frames().map(|f| f.unwrap().data).collect()
}

/// The layers of one fixture frame, as byte slices.
struct Layers<'a> {
    outer_ip: &'a [u8],
    outer_udp: &'a [u8],
    vxlan: &'a [u8],
    inner_frame: &'a [u8],
    inner_ip: &'a [u8],
    inner_l4: &'a [u8],
}

fn layers(frame: &[u8]) -> Layers<'_> {
    let eth = Frame::new_checked(frame).unwrap();
    let outer_ip = &frame[eth.l3_offset()..];
    let ip = ipv4::Packet::new_checked(outer_ip).unwrap();
    let outer_udp = ip.payload_ref();
    let vxlan = udp::Packet::new_checked(outer_udp).unwrap().payload_ref();
    let inner_frame = vxlan::Packet::new_checked(vxlan).unwrap().payload_ref();
    let inner_eth = Frame::new_checked(inner_frame).unwrap();
    let inner_ip = &inner_frame[inner_eth.l3_offset()..];
    let inner_l4 = ipv4::Packet::new_checked(inner_ip).unwrap().payload_ref();
    Layers { outer_ip, outer_udp, vxlan, inner_frame, inner_ip, inner_l4 }
}

#[test]
fn every_fixture_frame_decodes_as_the_readme_says() {
    let hosts = hosts();
    let frames = frames();
    assert_eq!(frames.len(), 18);
    let (mut icmp, mut udp_count, mut tcp) = (0, 0, 0);
    // One outer source port per (flow, direction).
    let mut ports: Vec<((IpProtocol, u16, u16, usize), u16)> = Vec::new();

    for (i, frame) in frames.iter().enumerate() {
        let ctx = format!("frame {}", i + 1);
        let l = layers(frame);

        // Outer Ethernet.
        let eth = Frame::new_checked(*frame).unwrap();
        let eth_repr = super::ethernet::Repr::parse(&eth).unwrap();
        assert_eq!(eth_repr.vlan, Vlan::None, "{ctx}");
        assert_eq!(eth_repr.ethertype, EtherType::Ipv4, "{ctx}");
        let from = hosts
            .iter()
            .position(|h| h.underlay_mac == eth_repr.src_addr)
            .unwrap_or_else(|| panic!("{ctx}: unknown source MAC {}", eth_repr.src_addr));
        let (src, dst) = (&hosts[from], &hosts[1 - from]);
        assert_eq!(eth_repr.dst_addr, dst.underlay_mac, "{ctx}");

        // Outer IPv4: TTL 64, DF clear, valid checksum, UDP, addresses by direction.
        let ip = ipv4::Packet::new_checked(l.outer_ip).unwrap();
        let ip_repr = ipv4::Repr::parse(&ip).unwrap();
        assert_eq!(ip_repr.ttl, 64, "{ctx}");
        assert!(!ip_repr.dont_frag && !ip_repr.more_frags && ip_repr.frag_offset == 0, "{ctx}");
        assert_eq!(ip_repr.protocol, IpProtocol::Udp, "{ctx}");
        assert_eq!((ip_repr.src_addr, ip_repr.dst_addr), (src.underlay_ip, dst.underlay_ip));
        assert_eq!(usize::from(ip.total_len()), frame.len() - 14, "{ctx}");
        assert!(ip.options().is_empty(), "{ctx}");

        // Outer UDP: port 8472, checksum present and valid.
        let u = udp::Packet::new_checked(l.outer_udp).unwrap();
        let u_repr = udp::Repr::parse(&u, src.underlay_ip.into(), dst.underlay_ip.into()).unwrap();
        assert_eq!(u_repr.dst_port, vxlan::LINUX_PORT, "{ctx}");
        assert_ne!(u.checksum(), 0, "{ctx}: the kernel's udpcsum default sets it");
        assert!(u.verify_checksum_v4(src.underlay_ip, dst.underlay_ip), "{ctx}");
        assert_eq!(usize::from(u.len()), l.outer_udp.len(), "{ctx}");
        assert!((32768..=60999).contains(&u_repr.src_port), "{ctx}: kernel port range");

        // VXLAN: flags 0x08, VNI 1.
        let vx = vxlan::Packet::new_checked(l.vxlan).unwrap();
        assert_eq!(vx.flags(), 0x08, "{ctx}");
        assert_eq!(vxlan::Repr::parse(&vx).unwrap().vni.get(), 1, "{ctx}");

        // Inner Ethernet: VTEP MAC to VTEP MAC.
        let inner = Frame::new_checked(l.inner_frame).unwrap();
        assert_eq!(inner.src_addr(), src.vtep_mac, "{ctx}");
        assert_eq!(inner.dst_addr(), dst.vtep_mac, "{ctx}");
        assert_eq!(inner.inner_ethertype(), EtherType::Ipv4, "{ctx}");
        assert_eq!(inner.l3_offset(), 14, "{ctx}");
        assert_eq!(frame.len(), l.inner_frame.len() + vxlan::OVERHEAD_IPV4, "{ctx}");

        // Inner IPv4: pod to pod, TTL already decremented to 63, valid checksum.
        let iip = ipv4::Packet::new_checked(l.inner_ip).unwrap();
        let iip_repr = ipv4::Repr::parse(&iip).unwrap();
        assert_eq!((iip_repr.src_addr, iip_repr.dst_addr), (src.pod, dst.pod), "{ctx}");
        assert_eq!(iip_repr.ttl, 63, "{ctx}");

        let (s, d) = (IpAddr::from(src.pod), IpAddr::from(dst.pod));
        let flow = match iip_repr.protocol {
            IpProtocol::Icmp => {
                icmp += 1;
                let p = icmpv4::Packet::new_checked(l.inner_l4).unwrap();
                let repr = icmpv4::Repr::parse(&p).unwrap();
                let (ident, len) = match repr {
                    icmpv4::Repr::EchoRequest { ident, data, .. } => {
                        assert_eq!(from, 0, "{ctx}: requests go A->B");
                        (ident, data.len())
                    }
                    icmpv4::Repr::EchoReply { ident, data, .. } => {
                        assert_eq!(from, 1, "{ctx}: replies go B->A");
                        (ident, data.len())
                    }
                    other => panic!("{ctx}: unexpected {other:?}"),
                };
                if len == 1400 {
                    // The big echo: inner frame 1442 B, outer IPv4 total length 1478.
                    assert_eq!(l.inner_frame.len(), 1442, "{ctx}");
                    assert_eq!(ip.total_len(), 1478, "{ctx}");
                } else {
                    assert_eq!(len, 56, "{ctx}");
                }
                (IpProtocol::Icmp, ident, ident)
            }
            IpProtocol::Udp => {
                udp_count += 1;
                let p = udp::Packet::new_checked(l.inner_l4).unwrap();
                let repr = udp::Repr::parse(&p, s, d).unwrap();
                assert_eq!(repr.payload_len, 15, "{ctx}");
                let ports = (repr.src_port.min(repr.dst_port), repr.src_port.max(repr.dst_port));
                assert_eq!(ports.0, 9000, "{ctx}");
                (IpProtocol::Udp, ports.0, ports.1)
            }
            IpProtocol::Tcp => {
                tcp += 1;
                // No TCP view in wire (linen never parses TCP beyond ports); check the
                // checksum with the pseudo-header helpers and the ports by offset.
                let seg = l.inner_l4;
                let len = u16::try_from(seg.len()).unwrap();
                let pseudo = checksum::pseudo_header_v4(src.pod, dst.pod, IpProtocol::Tcp, len);
                assert!(checksum::verifies(checksum::add(pseudo, checksum::sum(seg))), "{ctx}");
                let theirs = smoltcp::wire::TcpPacket::new_checked(seg).unwrap();
                assert!(theirs.verify_checksum(&src.pod.into(), &dst.pod.into()), "{ctx}");
                let (sp, dp) = (theirs.src_port(), theirs.dst_port());
                assert_eq!(sp.min(dp), 9001, "{ctx}");
                (IpProtocol::Tcp, sp.min(dp), sp.max(dp))
            }
            other => panic!("{ctx}: unexpected inner protocol {other}"),
        };
        let key = (flow.0, flow.1, flow.2, from);
        match ports.iter().find(|(k, _)| *k == key) {
            Some((_, port)) => assert_eq!(*port, u_repr.src_port, "{ctx}: one port per flow"),
            None => ports.push((key, u_repr.src_port)),
        }
    }
    assert_eq!((icmp, udp_count, tcp), (6, 2, 10));
    // ICMP and UDP flows hash to the same port both ways (the kernel hashes the 5-tuple
    // symmetrically for them); TCP uses the socket's own hash per direction.
    for proto in [IpProtocol::Icmp, IpProtocol::Udp] {
        let p: Vec<u16> = ports.iter().filter(|(k, _)| k.0 == proto).map(|(_, p)| *p).collect();
        assert!(p.len() >= 2 && p.iter().all(|x| *x == p[0]), "{proto}: {p:?}");
    }
}

/// Re-emitting the outer Ethernet + IPv4 + UDP + VXLAN headers from their `Repr`s (with the
/// captured IP ID and UDP source port) reproduces the captured 50 bytes exactly, checksums
/// included.
#[test]
fn reemitting_outer_headers_reproduces_the_capture() {
    for (i, frame) in frames().into_iter().enumerate() {
        let l = layers(frame);
        let eth = super::ethernet::Repr::parse(&Frame::new_checked(frame).unwrap()).unwrap();
        let ip = ipv4::Repr::parse(&ipv4::Packet::new_checked(l.outer_ip).unwrap()).unwrap();
        let u = udp::Packet::new_checked(l.outer_udp).unwrap();
        let u_repr = udp::Repr::parse(&u, ip.src_addr.into(), ip.dst_addr.into()).unwrap();
        let vx = vxlan::Repr::parse(&vxlan::Packet::new_checked(l.vxlan).unwrap()).unwrap();

        let mut out = frame.to_vec();
        out[..50].fill(0);
        eth.emit(&mut Frame::new_unchecked(&mut out[..]));
        ip.emit(&mut ipv4::Packet::new_unchecked(&mut out[14..]));
        vx.emit(&mut vxlan::Packet::new_unchecked(&mut out[42..]));
        u_repr.emit(
            &mut udp::Packet::new_unchecked(&mut out[34..]),
            udp::ChecksumMode::Compute { src: ip.src_addr.into(), dst: ip.dst_addr.into() },
        );
        assert_eq!(&out[..50], &frame[..50], "frame {}", i + 1);
        // smoltcp agrees with what we emitted.
        let theirs = smoltcp::wire::Ipv4Packet::new_checked(&out[14..]).unwrap();
        assert!(theirs.verify_checksum(), "frame {}", i + 1);
        let theirs_udp = smoltcp::wire::UdpPacket::new_checked(theirs.payload()).unwrap();
        assert!(theirs_udp.verify_checksum(&ip.src_addr.into(), &ip.dst_addr.into()));
    }
}

/// Incremental checksum updates (the encap fast path's technique) agree with recomputation on
/// every fixture header: rewrite the outer total length and ID.
#[test]
fn incremental_updates_agree_on_fixture_headers() {
    for frame in frames() {
        let mut b = frame.to_vec();
        let mut p = ipv4::Packet::new_unchecked(&mut b[14..]);
        let (old_len, old_id) = (p.total_len(), p.ident());
        let c = p.checksum();
        let c = checksum::update16(c, old_len, old_len + 50);
        let c = checksum::update16(c, old_id, old_id.wrapping_add(1));
        p.set_total_len(old_len + 50);
        p.set_ident(old_id.wrapping_add(1));
        p.set_checksum(c);
        assert!(p.verify_checksum());
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz seed corpus.

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

/// Rewrites a classic pcap file as big-endian with nanosecond timestamps.
fn to_big_endian_nanos(file: &[u8]) -> Vec<u8> {
    let pcap = Pcap::parse(file).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_3c4du32.to_be_bytes());
    out.extend_from_slice(&2u16.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&pcap.snaplen().to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    for f in pcap.frames() {
        let f = f.unwrap();
        let secs = u32::try_from(f.timestamp_ns / 1_000_000_000).unwrap();
        let nanos = u32::try_from(f.timestamp_ns % 1_000_000_000).unwrap();
        let len = u32::try_from(f.data.len()).unwrap();
        for v in [secs, nanos, len, f.orig_len] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(f.data);
    }
    out
}

/// Every seed file, as (target, name, bytes), derived from the fixture and from `Repr`s.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: String, bytes: &[u8]| {
        seeds.push((target, name, bytes.to_vec()));
    };
    let frames = frames();
    for (i, frame) in frames.iter().enumerate() {
        let n = i + 1;
        let l = layers(frame);
        add("ethernet", format!("frame{n:02}-outer"), frame);
        add("ethernet", format!("frame{n:02}-inner"), l.inner_frame);
        add("ipv4", format!("frame{n:02}-outer"), l.outer_ip);
        add("ipv4", format!("frame{n:02}-inner"), l.inner_ip);
        add("udp", format!("frame{n:02}-outer"), l.outer_udp);
        add("vxlan", format!("frame{n:02}"), l.vxlan);
        let inner = ipv4::Packet::new_checked(l.inner_ip).unwrap();
        match inner.protocol() {
            IpProtocol::Icmp => add("icmp", format!("frame{n:02}-echo"), l.inner_l4),
            IpProtocol::Udp => add("udp", format!("frame{n:02}-inner"), l.inner_l4),
            _ => {}
        }
    }

    // Tagged variants of frame 1 for the Ethernet parser.
    let f1 = frames[0];
    let mut single = f1[..12].to_vec();
    single.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    single.extend_from_slice(&f1[12..]);
    add("ethernet", "frame01-vlan100".into(), &single);
    let mut qinq = f1[..12].to_vec();
    qinq.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x64]);
    qinq.extend_from_slice(&f1[12..]);
    add("ethernet", "frame01-qinq".into(), &qinq);

    // ARP request and reply between the fixture's hosts.
    let h = hosts();
    for (name, op, sha, spa, tha, tpa) in [
        ("request", arp::Operation::Request, &h[0], &h[0], MacAddr::default(), &h[1]),
        ("reply", arp::Operation::Reply, &h[1], &h[1], h[0].underlay_mac, &h[0]),
    ] {
        let repr = arp::Repr {
            operation: op,
            source_hardware_addr: sha.underlay_mac,
            source_protocol_addr: spa.underlay_ip,
            target_hardware_addr: tha,
            target_protocol_addr: tpa.underlay_ip,
        };
        let mut b = vec![0u8; repr.buffer_len()];
        repr.emit(&mut arp::Packet::new_unchecked(&mut b[..]));
        add("arp", name.into(), &b);
        // The same inside an Ethernet frame, for the ethernet target.
        let mut framed = vec![0u8; 14 + b.len()];
        super::ethernet::Repr {
            src_addr: sha.underlay_mac,
            dst_addr: MacAddr::BROADCAST,
            vlan: Vlan::Single(VlanTag::new(EtherType::Vlan, 0, false, 7)),
            ethertype: EtherType::Arp,
        }
        .emit(&mut Frame::new_unchecked(&mut framed[..]));
        framed.truncate(18);
        framed.extend_from_slice(&b);
        add("ethernet", format!("arp-{name}-vlan7"), &framed);
    }

    // ICMPv4 fragmentation needed quoting frame 5's inner IPv4 header + 8 bytes.
    let big = layers(frames[4]).inner_ip;
    let frag = icmpv4::Repr::FragNeeded { next_hop_mtu: 1450, data: &big[..28] };
    let mut b = vec![0u8; frag.buffer_len()];
    frag.emit(&mut icmpv4::Packet::new_unchecked(&mut b[..]));
    add("icmp", "frag-needed".into(), &b);

    // IPv6 underlay: frame 1's VXLAN payload carried over IPv6/UDP, and an ICMPv6 packet too
    // big quoting it.
    let v6_src: Ipv6Addr = "fd00:77::1".parse().unwrap();
    let v6_dst: Ipv6Addr = "fd00:77::2".parse().unwrap();
    let vx = layers(f1).vxlan;
    let udp_len = udp::HEADER_LEN + vx.len();
    let mut v6 = vec![0u8; ipv6::HEADER_LEN + udp_len];
    ipv6::Repr {
        src_addr: v6_src,
        dst_addr: v6_dst,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0x1_2345,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut v6[..]));
    v6[ipv6::HEADER_LEN + udp::HEADER_LEN..].copy_from_slice(vx);
    udp::Repr { src_port: 46720, dst_port: vxlan::LINUX_PORT, payload_len: vx.len() }.emit(
        &mut udp::Packet::new_unchecked(&mut v6[ipv6::HEADER_LEN..]),
        udp::ChecksumMode::Compute { src: v6_src.into(), dst: v6_dst.into() },
    );
    add("ipv6", "vxlan-over-ipv6".into(), &v6);
    add("udp", "vxlan-over-ipv6".into(), &v6[ipv6::HEADER_LEN..]);
    let mut framed = f1[..12].to_vec();
    framed.extend_from_slice(&[0x86, 0xdd]);
    framed.extend_from_slice(&v6);
    add("ethernet", "vxlan-over-ipv6".into(), &framed);

    let quoted = &v6[..v6.len().min(icmpv6::MAX_ERROR_DATA_LEN)];
    let ptb = icmpv6::Repr::PacketTooBig { mtu: 1280, data: quoted };
    let mut b = vec![0u8; ptb.buffer_len()];
    ptb.emit(&mut icmpv6::Packet::new_unchecked(&mut b[..]), v6_dst, v6_src);
    add("icmp", "packet-too-big".into(), &b);
    let mut v6ptb = vec![0u8; ipv6::HEADER_LEN + b.len()];
    ipv6::Repr {
        src_addr: v6_dst,
        dst_addr: v6_src,
        next_header: IpProtocol::Icmpv6,
        payload_len: b.len(),
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut v6ptb[..]));
    v6ptb[ipv6::HEADER_LEN..].copy_from_slice(&b);
    add("ipv6", "packet-too-big".into(), &v6ptb);

    // pcap: the fixture as captured, the same big-endian/nanosecond, and a cut-short copy.
    add("pcap", "kernel-vxlan-flannel".into(), FIXTURE);
    add("pcap", "kernel-vxlan-flannel-be-ns".into(), &to_big_endian_nanos(FIXTURE));
    add("pcap", "truncated".into(), &FIXTURE[..400]);
    seeds
}

/// The committed seed corpus equals what [`seeds`] derives from the fixture. Regenerate with
/// `LINEN_WRITE_FUZZ_SEEDS=1 cargo test -p linen-dataplane fuzz_seeds` (see docs/fuzzing.md).
#[test]
fn fuzz_seeds_are_current() {
    let dir = seed_dir();
    let seeds = seeds();
    if std::env::var_os("LINEN_WRITE_FUZZ_SEEDS").is_some() {
        for (target, name, bytes) in &seeds {
            let d = dir.join(target);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(name), bytes).unwrap();
        }
    }
    for (target, name, bytes) in &seeds {
        let path = dir.join(target).join(name);
        let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; regenerate with LINEN_WRITE_FUZZ_SEEDS=1 cargo test -p linen-dataplane fuzz_seeds",
                path.display()
            )
        });
        assert!(&on_disk == bytes, "{} is stale; regenerate it", path.display());
    }
    // Every target has seeds.
    for target in ["ethernet", "arp", "ipv4", "ipv6", "udp", "vxlan", "icmp", "pcap"] {
        assert!(seeds.iter().any(|(t, _, _)| *t == target), "{target} has no seeds");
    }
}
