//! What linen's fuzz targets run: for each header view, `new_checked` on the fuzzer's bytes,
//! every getter once it succeeds, `Repr::parse`, and — when that accepts — a round trip
//! through `Repr::emit` that must parse back to the same `Repr`. A panic or failed assertion
//! is a bug in `linen_dataplane::wire` (or `pcap`).
//!
//! The functions return `Err` when the bytes are rejected; rejection is the expected outcome
//! for most inputs and is not a finding.
//!
//! The targets for the control plane's and the CNI plugin's inputs are in [`control`].

pub mod control;

use std::net::{Ipv4Addr, Ipv6Addr};

use linen_dataplane::pcap::Pcap;
use linen_dataplane::wire::ethernet::{self, EtherType, Frame};
use linen_dataplane::wire::{arp, icmpv4, icmpv6, ipv4, ipv6, udp, vxlan, Error};

const SRC4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const DST4: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
const DST6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 2);

/// Ethernet view and Repr; the emitted header must equal the input's header bytes.
pub fn ethernet(data: &[u8]) -> Result<(), Error> {
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

/// ARP view and Repr round trip.
pub fn arp(data: &[u8]) -> Result<(), Error> {
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

/// IPv4 view (options, fragments, checksum) and Repr round trip.
pub fn ipv4(data: &[u8]) -> Result<(), Error> {
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

/// IPv6 view and Repr round trip.
pub fn ipv6(data: &[u8]) -> Result<(), Error> {
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

/// UDP view, both checksums, and a Repr round trip with a computed IPv4 checksum.
pub fn udp(data: &[u8]) -> Result<(), Error> {
    let p = udp::Packet::new_checked(data)?;
    let _ = (p.src_port(), p.dst_port(), p.checksum(), p.payload().len());
    let _ = p.payload_ref().len();
    let _ = p.verify_checksum_v6(SRC6, DST6);
    let _ = udp::Repr::parse(&p, SRC6.into(), DST6.into());
    // Accept any stored checksum here so the round trip is reached without the fuzzer having
    // to solve the checksum.
    let repr = udp::Repr {
        src_port: p.src_port(),
        dst_port: p.dst_port(),
        payload_len: usize::from(p.len()) - udp::HEADER_LEN,
    };
    let mut out = data[..usize::from(p.len())].to_vec();
    let mode = udp::ChecksumMode::Compute { src: SRC4.into(), dst: DST4.into() };
    repr.emit(&mut udp::Packet::new_unchecked(&mut out[..]), mode);
    let again = udp::Packet::new_checked(&out[..])?;
    assert_ne!(again.checksum(), 0);
    assert_eq!(udp::Repr::parse(&again, SRC4.into(), DST4.into())?, repr);
    udp::Repr::parse(&p, SRC4.into(), DST4.into()).map(|_| ())
}

/// VXLAN view and Repr; the emitted header must equal the input's.
pub fn vxlan(data: &[u8]) -> Result<(), Error> {
    let p = vxlan::Packet::new_checked(data)?;
    let _ = (p.flags(), p.i_flag(), p.reserved_is_zero(), p.vni(), p.payload().len());
    let _ = p.payload_ref().len();
    let repr = vxlan::Repr::parse(&p)?;
    let mut out = [0u8; 8];
    repr.emit(&mut vxlan::Packet::new_unchecked(&mut out[..]));
    assert_eq!(&out[..], &data[..8]);
    Ok(())
}

/// ICMPv4 and ICMPv6 views over the same bytes, with Repr round trips.
pub fn icmp(data: &[u8]) -> Result<(), Error> {
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
    // The seeds' ICMPv6 message was checksummed from DST6 to SRC6.
    let repr = icmpv6::Repr::parse(&v6, DST6, SRC6)?;
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut icmpv6::Packet::new_unchecked(&mut out[..]), DST6, SRC6);
    let again = icmpv6::Packet::new_checked(&out[..])?;
    assert_eq!(icmpv6::Repr::parse(&again, DST6, SRC6)?, repr);
    Ok(())
}

/// The decap walk: Ethernet → IPv4/IPv6 (or ARP) → UDP → VXLAN → inner Ethernet → inner
/// IPv4 → UDP/ICMP, as far as the bytes parse.
pub fn walk(frame: &[u8]) -> Result<(), Error> {
    ethernet(frame)?;
    let eth = Frame::new_checked(frame)?;
    let l3 = &frame[eth.l3_offset()..];
    let udp_bytes = match eth.inner_ethertype() {
        EtherType::Ipv4 => {
            let _ = ipv4(l3);
            ipv4::Packet::new_checked(l3)?.payload_ref()
        }
        EtherType::Ipv6 => {
            let _ = ipv6(l3);
            ipv6::Packet::new_checked(l3)?.payload_ref()
        }
        EtherType::Arp => return arp(l3),
        _ => return Err(Error::Unsupported),
    };
    let _ = udp(udp_bytes);
    let vx = udp::Packet::new_checked(udp_bytes)?.payload_ref();
    let _ = vxlan(vx);
    let inner = vxlan::Packet::new_checked(vx)?.payload_ref();
    ethernet(inner)?;
    let ieth = Frame::new_checked(inner)?;
    let iip = &inner[ieth.l3_offset()..];
    let _ = ipv4(iip);
    let l4 = ipv4::Packet::new_checked(iip)?.payload_ref();
    let _ = udp(l4);
    icmp(l4)
}

/// The pcap reader; every frame it yields goes through [`walk`].
pub fn pcap(data: &[u8]) {
    let Ok(pcap) = Pcap::parse(data) else { return };
    let _ = (pcap.snaplen(), pcap.version(), pcap.is_big_endian(), pcap.is_nanosecond());
    let mut consumed = linen_dataplane::pcap::FILE_HEADER_LEN;
    for frame in pcap.frames() {
        let Ok(frame) = frame else { return };
        consumed += linen_dataplane::pcap::RECORD_HEADER_LEN + frame.data.len();
        assert!(consumed <= data.len());
        let _ = walk(frame.data);
    }
}
