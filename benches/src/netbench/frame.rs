//! The frames the small-packet sender puts on the pod's wire: one pre-built Ethernet/IPv4/UDP
//! frame, written once with linen's own wire views (`new_unchecked` on this output buffer, as
//! the wire module's docs ask) and sent unchanged.

use std::net::Ipv4Addr;

use linen_dataplane::wire::udp::ChecksumMode;
use linen_dataplane::wire::{
    EtherType, EthernetFrame, EthernetRepr, IpProtocol, Ipv4Packet, Ipv4Repr, MacAddr, UdpPacket,
    UdpRepr, Vlan,
};

/// Ethernet + IPv4 + UDP header bytes.
pub const HEADERS_LEN: usize = 14 + 20 + 8;
/// The benchmark's frame as the kernel sees it: 60 bytes, i.e. a 64-byte frame on a wire once
/// the 4-byte FCS is added (the RFC 2544 minimum). 18 bytes of UDP payload.
pub const FRAME_LEN_64: usize = 60;

/// Who sends to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The pod's own MAC.
    pub src_mac: [u8; 6],
    /// The next hop's MAC (the node's `cni0` gateway for a cross-node destination).
    pub dst_mac: [u8; 6],
    /// Source IPv4 address (the pod's).
    pub src_ip: Ipv4Addr,
    /// Destination IPv4 address (the remote pod's).
    pub dst_ip: Ipv4Addr,
    /// UDP source port.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
}

/// Errors building a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame cannot hold the headers, or exceeds an IPv4 packet's maximum.
    #[error("frame length {0} is outside {HEADERS_LEN}..=1514")]
    BadLength(usize),
}

/// A `len`-byte Ethernet/IPv4/UDP frame for `flow`: TTL 64, DF set, IPv4 checksum filled in,
/// UDP checksum 0 ("none", valid for IPv4), payload bytes `0x6c` ('l').
///
/// # Errors
/// [`FrameError::BadLength`] when `len` is below [`HEADERS_LEN`] or above 1514.
pub fn udp_frame(flow: &Flow, len: usize) -> Result<Vec<u8>, FrameError> {
    if !(HEADERS_LEN..=1514).contains(&len) {
        return Err(FrameError::BadLength(len));
    }
    let mut buf = vec![0x6c; len];
    let payload_len = len - HEADERS_LEN;
    let eth = EthernetRepr {
        src_addr: MacAddr(flow.src_mac),
        dst_addr: MacAddr(flow.dst_mac),
        vlan: Vlan::None,
        ethertype: EtherType::Ipv4,
    };
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let ip = Ipv4Repr {
        src_addr: flow.src_ip,
        dst_addr: flow.dst_ip,
        protocol: IpProtocol::Udp,
        payload_len: 8 + payload_len,
        ttl: 64,
        ident: 0,
        dont_frag: true,
        more_frags: false,
        frag_offset: 0,
        dscp: 0,
        ecn: 0,
    };
    let mut packet = Ipv4Packet::new_unchecked(&mut buf[14..]);
    ip.emit(&mut packet);
    let udp = UdpRepr { src_port: flow.src_port, dst_port: flow.dst_port, payload_len };
    let mut datagram = UdpPacket::new_unchecked(&mut buf[34..]);
    udp.emit(&mut datagram, ChecksumMode::None);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            src_ip: Ipv4Addr::new(10, 244, 1, 2),
            dst_ip: Ipv4Addr::new(10, 244, 2, 2),
            src_port: 40000,
            dst_port: 9,
        }
    }

    #[test]
    fn sixty_byte_frame_parses_back() {
        let f = udp_frame(&flow(), FRAME_LEN_64).expect("frame");
        assert_eq!(f.len(), 60);
        let eth = EthernetFrame::new_checked(&f[..]).expect("ethernet");
        assert_eq!(eth.dst_addr(), MacAddr([0x02, 0, 0, 0, 0, 2]));
        assert_eq!(eth.inner_ethertype(), EtherType::Ipv4);
        let ip = Ipv4Packet::new_checked(&f[14..]).expect("ipv4");
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len(), 46);
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 244, 2, 2));
        let udp = UdpPacket::new_checked(&f[34..]).expect("udp");
        assert_eq!((udp.src_port(), udp.dst_port(), udp.len()), (40000, 9, 26));
        assert_eq!(&f[42..], &[0x6c; 18]);
    }

    #[test]
    fn lengths_outside_the_range_are_refused() {
        assert_eq!(udp_frame(&flow(), 41), Err(FrameError::BadLength(41)));
        assert_eq!(udp_frame(&flow(), 1515), Err(FrameError::BadLength(1515)));
        assert!(udp_frame(&flow(), 1514).is_ok());
    }
}
