//! Property tests: no checker, getter (after `new_checked`) or `Repr::parse` panics on
//! arbitrary bytes, and whatever `Repr::parse` accepts, `Repr::emit` writes back so that it
//! parses to the same `Repr`.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::prelude::*;

use super::ethernet::Frame;
use super::{arp, ethernet, icmpv4, icmpv6, ip, ipv4, ipv6, tcp, udp, vxlan, Error};
use crate::pcap::Pcap;

const SRC4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const DST4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);

fn exercise_ethernet(data: &[u8]) -> Result<(), Error> {
    let f = Frame::new_checked(data)?;
    let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.vlan(), f.vlan_count());
    assert!(f.l3_offset() <= data.len());
    let _ = (f.inner_ethertype(), f.payload().len(), f.payload_ref().len());
    let repr = ethernet::Repr::parse(&f)?;
    assert_eq!(repr.buffer_len(), f.header_len());
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Frame::new_unchecked(&mut out[..]));
    assert_eq!(&out[..], &data[..repr.buffer_len()]);
    Ok(())
}

fn exercise_arp(data: &[u8]) -> Result<(), Error> {
    let p = arp::Packet::new_checked(data)?;
    let _ = (p.hardware_type(), p.protocol_type(), p.hardware_len(), p.protocol_len());
    let _ = (p.operation(), p.sender_hardware_addr(), p.sender_protocol_addr());
    let _ = (p.target_hardware_addr(), p.target_protocol_addr());
    let repr = arp::Repr::parse(&p)?;
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut arp::Packet::new_unchecked(&mut out[..]));
    assert_eq!(arp::Repr::parse(&arp::Packet::new_checked(&out[..])?)?, repr);
    Ok(())
}

fn exercise_ipv4(data: &[u8]) -> Result<(), Error> {
    let p = ipv4::Packet::new_checked(data)?;
    let _ = (p.version(), p.dscp(), p.ecn(), p.ident(), p.dont_frag(), p.more_frags());
    let _ = (p.frag_offset(), p.is_fragment(), p.reserved_flag(), p.ttl(), p.protocol());
    let _ = (p.checksum(), p.src_addr(), p.dst_addr(), p.verify_checksum());
    let _ = (p.options().len(), p.payload().len(), p.payload_ref().len());
    let repr = ipv4::Repr::parse(&p)?;
    let mut out = vec![0u8; repr.buffer_len() + repr.payload_len];
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut out[..]));
    assert_eq!(ipv4::Repr::parse(&ipv4::Packet::new_checked(&out[..])?)?, repr);
    Ok(())
}

fn exercise_ipv6(data: &[u8]) -> Result<(), Error> {
    let p = ipv6::Packet::new_checked(data)?;
    let _ = (p.version(), p.traffic_class(), p.flow_label(), p.next_header());
    let _ = (p.hop_limit(), p.src_addr(), p.dst_addr(), p.payload().len());
    let _ = p.payload_ref().len();
    let repr = ipv6::Repr::parse(&p)?;
    let mut out = vec![0u8; repr.buffer_len() + repr.payload_len];
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut out[..]));
    assert_eq!(ipv6::Repr::parse(&ipv6::Packet::new_checked(&out[..])?)?, repr);
    Ok(())
}

fn exercise_udp(data: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<(), Error> {
    let p = udp::Packet::new_checked(data)?;
    let _ = (p.src_port(), p.dst_port(), p.checksum(), p.payload().len());
    let _ = p.payload_ref().len();
    let _ = p.verify_checksum_v6(SRC6, DST6);
    let _ = udp::Repr::parse(&p, SRC6.into(), DST6.into());
    let repr = udp::Repr::parse(&p, src.into(), dst.into())?;
    // Re-emit over a copy (the payload stays in place) with a computed checksum.
    let mut out = data[..usize::from(p.len())].to_vec();
    let mode = udp::ChecksumMode::Compute { src: src.into(), dst: dst.into() };
    repr.emit(&mut udp::Packet::new_unchecked(&mut out[..]), mode);
    let again = udp::Packet::new_checked(&out[..])?;
    assert_ne!(again.checksum(), 0);
    assert_eq!(udp::Repr::parse(&again, src.into(), dst.into())?, repr);
    Ok(())
}

fn exercise_tcp(data: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<(), Error> {
    let p = tcp::Packet::new_checked(data)?;
    let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.flags());
    let _ = (p.window(), p.checksum(), p.urgent_ptr(), p.options().len(), p.payload().len());
    let _ = (p.payload_ref().len(), p.verify_checksum_v6(SRC6, DST6));
    let _ = tcp::Repr::parse(&p, SRC6.into(), DST6.into());
    let repr = tcp::Repr::parse(&p, src.into(), dst.into())?;
    // Re-emit without the options, payload copied behind the 20-byte header.
    let mut out = vec![0u8; repr.buffer_len() + repr.payload_len];
    out[tcp::HEADER_LEN..].copy_from_slice(p.payload());
    repr.emit(&mut tcp::Packet::new_unchecked(&mut out[..]), src.into(), dst.into());
    assert_eq!(
        tcp::Repr::parse(&tcp::Packet::new_checked(&out[..])?, src.into(), dst.into())?,
        repr
    );
    Ok(())
}

fn exercise_ports(data: &[u8]) -> Result<(), Error> {
    let p = ip::Ports::new_checked(data)?;
    let [a, b, c, d] = p.octets();
    assert_eq!(
        (p.src_port(), p.dst_port()),
        (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))
    );
    Ok(())
}

fn exercise_vxlan(data: &[u8]) -> Result<(), Error> {
    let p = vxlan::Packet::new_checked(data)?;
    let _ = (p.flags(), p.i_flag(), p.reserved_is_zero(), p.vni(), p.payload().len());
    let _ = p.payload_ref().len();
    let repr = vxlan::Repr::parse(&p)?;
    let mut out = [0u8; 8];
    repr.emit(&mut vxlan::Packet::new_unchecked(&mut out[..]));
    assert_eq!(&out[..], &data[..8]);
    Ok(())
}

fn exercise_icmp(data: &[u8]) -> Result<(), Error> {
    let v4 = icmpv4::Packet::new_checked(data)?;
    let _ = (v4.msg_type(), v4.msg_code(), v4.checksum(), v4.echo_ident());
    let _ = (v4.echo_seq_no(), v4.next_hop_mtu(), v4.data().len(), v4.verify_checksum());
    if let Ok(repr) = icmpv4::Repr::parse(&v4) {
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(&mut icmpv4::Packet::new_unchecked(&mut out[..]));
        assert_eq!(icmpv4::Repr::parse(&icmpv4::Packet::new_checked(&out[..])?)?, repr);
    }
    let v6 = icmpv6::Packet::new_checked(data)?;
    let _ = (v6.msg_type(), v6.msg_code(), v6.checksum(), v6.mtu(), v6.echo_ident());
    let _ = (v6.echo_seq_no(), v6.data().len(), v6.verify_checksum(SRC6, DST6));
    let repr = icmpv6::Repr::parse(&v6, SRC6, DST6)?;
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut icmpv6::Packet::new_unchecked(&mut out[..]), SRC6, DST6);
    assert_eq!(icmpv6::Repr::parse(&icmpv6::Packet::new_checked(&out[..])?, SRC6, DST6)?, repr);
    Ok(())
}

/// The decap walk: Ethernet → IPv4/IPv6 → UDP → VXLAN → inner Ethernet → inner IP → L4.
fn walk(frame: &[u8]) -> Result<(), Error> {
    exercise_ethernet(frame)?;
    let eth = Frame::new_checked(frame)?;
    let l3 = &frame[eth.l3_offset()..];
    let udp_bytes = match eth.inner_ethertype() {
        ethernet::EtherType::Ipv4 => {
            exercise_ipv4(l3)?;
            ipv4::Packet::new_checked(l3)?.payload_ref()
        }
        ethernet::EtherType::Ipv6 => {
            exercise_ipv6(l3)?;
            ipv6::Packet::new_checked(l3)?.payload_ref()
        }
        ethernet::EtherType::Arp => return exercise_arp(l3),
        _ => return Err(Error::Unsupported),
    };
    let _ = exercise_udp(udp_bytes, SRC4, DST4);
    let vx = udp::Packet::new_checked(udp_bytes)?.payload_ref();
    exercise_vxlan(vx)?;
    let inner = vxlan::Packet::new_checked(vx)?.payload_ref();
    exercise_ethernet(inner)?;
    let ieth = Frame::new_checked(inner)?;
    let iip = &inner[ieth.l3_offset()..];
    exercise_ipv4(iip)?;
    let ip = ipv4::Packet::new_checked(iip)?;
    let l4 = ip.payload_ref();
    exercise_ports(l4)?;
    match ip.protocol() {
        super::IpProtocol::Tcp => exercise_tcp(l4, ip.src_addr(), ip.dst_addr()),
        super::IpProtocol::Udp => exercise_udp(l4, ip.src_addr(), ip.dst_addr()),
        super::IpProtocol::Icmp => {
            // exercise_icmp also reads the bytes as ICMPv6, whose checksum cannot verify here.
            let _ = exercise_icmp(l4);
            icmpv4::Repr::parse(&icmpv4::Packet::new_checked(l4)?).map(|_| ())
        }
        _ => exercise_icmp(l4),
    }
}

fn fixture_frames() -> Vec<Vec<u8>> {
    let bytes = include_bytes!("../../tests/fixtures/kernel-vxlan-flannel.pcap");
    Pcap::parse(bytes).unwrap().frames().map(|f| f.unwrap().data.to_vec()).collect()
}

#[test]
fn walk_accepts_every_fixture_frame() {
    for (i, f) in fixture_frames().iter().enumerate() {
        let eth = Frame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.inner_ethertype(), ethernet::EtherType::Ipv4);
        assert_eq!(walk(f), Ok(()), "frame {}", i + 1);
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..160)) {
        let _ = exercise_ethernet(&data);
        let _ = exercise_arp(&data);
        let _ = exercise_ipv4(&data);
        let _ = exercise_ipv6(&data);
        let _ = exercise_udp(&data, SRC4, DST4);
        let _ = exercise_vxlan(&data);
        let _ = exercise_tcp(&data, SRC4, DST4);
        let _ = exercise_ports(&data);
        let _ = exercise_icmp(&data);
        let _ = walk(&data);
    }

    /// Plausible-looking headers reach deeper checks than uniform bytes: fix the version /
    /// length bytes that the checkers look at first.
    #[test]
    fn structured_headers_never_panic(
        mut data in vec(any::<u8>(), 20..120),
        ihl in 0u8..16,
        total in 0u16..140,
        udp_len in 0u16..140,
    ) {
        data[0] = 0x40 | ihl;
        data[2..4].copy_from_slice(&total.to_be_bytes());
        let _ = exercise_ipv4(&data);
        data[0] = 0x60;
        data[4..6].copy_from_slice(&udp_len.to_be_bytes());
        let _ = exercise_ipv6(&data);
        let _ = exercise_udp(&data, SRC4, DST4);
        data[4] = 6;
        data[5] = 4;
        let _ = exercise_arp(&data);
    }

    /// Fixture frames with random bytes changed and random truncation: every layer of the
    /// decap walk sees near-valid input.
    #[test]
    fn mutated_fixture_frames_never_panic(
        index in 0usize..18,
        edits in vec((0usize..1500, any::<u8>()), 0..6),
        cut in 0usize..1500,
    ) {
        let frames = fixture_frames();
        let mut f = frames[index].clone();
        for (at, value) in edits {
            let at = at % f.len();
            f[at] = value;
        }
        f.truncate(cut.max(1).min(f.len()));
        let _ = walk(&f);
    }

    #[test]
    fn vlan_tagged_frames_parse(
        tags in 0usize..3,
        tci in any::<u16>(),
        outer_tpid in prop_oneof![Just(0x8100u16), Just(0x88a8u16)],
        body in vec(any::<u8>(), 0..40),
    ) {
        let mut f = vec![2u8; 12];
        for t in 0..tags {
            let tpid = if t == 0 && tags == 2 { outer_tpid } else { 0x8100 };
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&body);
        let frame = Frame::new_checked(&f[..]).unwrap();
        prop_assert_eq!(frame.vlan_count(), tags);
        prop_assert_eq!(frame.l3_offset(), 14 + 4 * tags);
        prop_assert_eq!(frame.inner_ethertype(), ethernet::EtherType::Ipv4);
        prop_assert_eq!(frame.payload(), &body[..]);
        prop_assert!(exercise_ethernet(&f).is_ok());
        // Any cut inside the tags is a truncation error, never a panic.
        for cut in 0..14 + 4 * tags {
            prop_assert_eq!(Frame::new_checked(&f[..cut]).unwrap_err(), Error::Truncated);
        }
    }
}
