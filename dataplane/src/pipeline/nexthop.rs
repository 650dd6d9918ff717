//! [`NextHop`]: where a pod subnet's traffic goes, with its outer header built in advance.

use std::net::Ipv4Addr;

use super::Config;
use crate::wire::{
    checksum, ethernet, ipv4, udp, vxlan, EtherType, EthernetFrame, EthernetRepr, IpProtocol,
    Ipv4Packet, Ipv4Repr, MacAddr, UdpChecksumMode, UdpPacket, UdpRepr, Vlan, Vni, VxlanPacket,
    VxlanRepr,
};

/// Offset of the outer IPv4 header in an encapsulated frame.
pub const OUTER_IP_OFFSET: usize = ethernet::HEADER_LEN;

/// Offset of the outer UDP payload (the VXLAN header) in an encapsulated frame over IPv4: what a
/// UDP socket would send.
pub const OUTER_UDP_PAYLOAD_OFFSET: usize = OUTER_IP_OFFSET + ipv4::HEADER_LEN + udp::HEADER_LEN;

/// Length of the VXLAN header.
pub const VXLAN_LEN: usize = vxlan::HEADER_LEN;

/// Length of the outer header over an IPv4 underlay: Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const OUTER_V4_LEN: usize = OUTER_UDP_PAYLOAD_OFFSET + VXLAN_LEN;

/// Where each header sits in the outer header of an IPv4 underlay (and in a received VXLAN
/// frame whose outer IPv4 header has no options): the byte ranges the pipeline builds its views
/// over.
///
/// An IPv6 underlay would add a second, 70-byte layout (Ethernet 14 + IPv6 40 + UDP 8 + VXLAN
/// 8) beside this one; the VXLAN header is always the last 8 bytes.
pub(crate) mod outer {
    use super::{OUTER_IP_OFFSET, OUTER_UDP_PAYLOAD_OFFSET, OUTER_V4_LEN};
    use crate::wire::{ipv4, udp};

    type Range = core::ops::Range<usize>;
    pub const ETH: Range = 0..OUTER_IP_OFFSET;
    pub const IP: Range = OUTER_IP_OFFSET..OUTER_IP_OFFSET + ipv4::HEADER_LEN;
    pub const UDP: Range = IP.end..IP.end + udp::HEADER_LEN;
    pub const VXLAN: Range = OUTER_UDP_PAYLOAD_OFFSET..OUTER_V4_LEN;
}

/// Outer TTL, as the kernel's VXLAN device sends by default.
pub const OUTER_TTL: u8 = 64;

/// What the control plane knows about a remote node, from its lease and the kernel's routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The remote node's VTEP address (its lease's `PublicIP`).
    pub vtep: Ipv4Addr,
    /// The remote node's VtepMAC (its lease's `BackendData.VtepMAC`). Kept for the control plane
    /// and diagnostics; encap leaves the inner frame's MACs as the host stack wrote them
    /// (`linen.1`'s permanent neighbour entry already puts this MAC there).
    pub vtep_mac: [u8; 6],
    /// MAC of the underlay next hop towards `vtep` (the remote node itself on a shared L2 segment,
    /// else the gateway), or `None` while the kernel has not resolved it.
    pub underlay_mac: Option<[u8; 6]>,
    /// Interface index of the underlay device to send on. Which TX queue of that device a frame
    /// takes is the worker's business: each worker owns one queue, so queues are never shared.
    pub ifindex: u32,
}

/// A route's next hop: a [`Peer`] plus the outer header every frame to it gets, built once off
/// the fast path by [`NextHop::new`].
///
/// The template is Ethernet (underlay next-hop MAC, or zeros while unresolved, from the local
/// underlay MAC), IPv4 (local VTEP → remote VTEP, TTL 64, DF clear, protocol UDP, length, ID and
/// checksum zero), UDP (source port and length zero, destination the configured port, checksum
/// zero) and VXLAN (I flag, the configured VNI), each written by its `wire` `Repr`. Encap copies
/// it as one fixed-size block and patches only total length, ID, IPv4 checksum (from the
/// template's precomputed sum), UDP source port and length, and the UDP checksum when
/// configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    peer: Peer,
    template: [u8; OUTER_V4_LEN],
    /// Sum of the template's IPv4 header (length, ID and checksum zero), folded, in the byte
    /// order the words are stored in (see `encap::write_outer`).
    ip_sum_ne: u16,
}

impl NextHop {
    /// Builds the next hop and its outer header template for `peer` under `config`.
    pub fn new(config: &Config, peer: &Peer) -> Self {
        let mut t = [0u8; OUTER_V4_LEN];
        EthernetRepr {
            src_addr: MacAddr(config.local_mac),
            dst_addr: MacAddr(peer.underlay_mac.unwrap_or([0; 6])),
            vlan: Vlan::None,
            ethertype: EtherType::Ipv4,
        }
        .emit(&mut EthernetFrame::new_unchecked(&mut t[outer::ETH]));
        let mut ip = Ipv4Packet::new_unchecked(&mut t[outer::IP]);
        Ipv4Repr {
            src_addr: config.local_vtep,
            dst_addr: peer.vtep,
            protocol: IpProtocol::Udp,
            payload_len: 0,
            ttl: OUTER_TTL,
            ident: 0,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            dscp: 0,
            ecn: 0,
        }
        .emit(&mut ip);
        // Length and checksum are per packet: zero in the template, the sum kept beside it.
        ip.set_total_len(0);
        ip.set_checksum(0);
        let ip_sum_ne = checksum::sum(&t[outer::IP]).to_be();
        let mut udp = UdpPacket::new_unchecked(&mut t[outer::UDP]);
        UdpRepr { src_port: 0, dst_port: config.port, payload_len: 0 }
            .emit(&mut udp, UdpChecksumMode::None);
        udp.set_len(0);
        let vni = Vni::new(config.vni & Vni::MAX).unwrap_or_default();
        VxlanRepr { vni }.emit(&mut VxlanPacket::new_unchecked(&mut t[outer::VXLAN]));
        NextHop { peer: *peer, template: t, ip_sum_ne }
    }

    /// The peer this next hop was built from.
    #[inline]
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The remote VTEP address.
    #[inline]
    pub fn remote_vtep(&self) -> Ipv4Addr {
        self.peer.vtep
    }

    /// The remote node's VtepMAC.
    #[inline]
    pub fn remote_vtep_mac(&self) -> [u8; 6] {
        self.peer.vtep_mac
    }

    /// The underlay next-hop MAC, if resolved.
    #[inline]
    pub fn underlay_mac(&self) -> Option<[u8; 6]> {
        self.peer.underlay_mac
    }

    /// The underlay interface index.
    #[inline]
    pub fn ifindex(&self) -> u32 {
        self.peer.ifindex
    }

    /// The 50-byte outer header template (lengths, ID, source port and checksums zero).
    #[inline(always)]
    pub fn outer_header(&self) -> &[u8; OUTER_V4_LEN] {
        &self.template
    }

    /// Sum of the template's IPv4 header words (length, ID and checksum zero), folded, as the
    /// stored words would read in the host's byte order.
    #[inline(always)]
    pub(crate) fn ip_sum_ne(&self) -> u16 {
        self.ip_sum_ne
    }

    #[inline(always)]
    pub(crate) fn resolved(&self) -> bool {
        self.peer.underlay_mac.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_bytes() {
        let mut cfg = Config::new(
            Ipv4Addr::new(192, 168, 77, 1),
            [0x92, 0x14, 0x14, 0x17, 0xdb, 0xd3],
            [2; 6],
        );
        cfg.vni = 0x123456;
        let peer = Peer {
            vtep: Ipv4Addr::new(192, 168, 77, 2),
            vtep_mac: [0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c],
            underlay_mac: Some([0xe6, 0x37, 0x6c, 0xed, 0x27, 0x39]),
            ifindex: 7,
        };
        let nh = NextHop::new(&cfg, &peer);
        let expect: [u8; 50] = [
            0xe6, 0x37, 0x6c, 0xed, 0x27, 0x39, 0x92, 0x14, 0x14, 0x17, 0xdb, 0xd3, 0x08,
            0x00, //
            0x45, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x00, 0x00, 192, 168, 77,
            1, 192, 168, 77, 2, //
            0x00, 0x00, 0x21, 0x18, 0x00, 0x00, 0x00, 0x00, //
            0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x00,
        ];
        assert_eq!(nh.outer_header(), &expect);
        assert_eq!(nh.ifindex(), 7);
        let unresolved = NextHop::new(&cfg, &Peer { underlay_mac: None, ..peer });
        assert_eq!(&unresolved.outer_header()[..6], &[0; 6]);
        assert!(!unresolved.resolved());
        // The kept sum is the template header's, and completes it to a valid checksum.
        let mut ip = nh.outer_header()[outer::IP].to_vec();
        assert_eq!(u16::from_be(nh.ip_sum_ne()), checksum::sum(&ip));
        ip[2..4].copy_from_slice(&20u16.to_be_bytes());
        let c = checksum::finish(checksum::fold32(u32::from(checksum::sum(&ip))));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        assert!(Ipv4Packet::new_checked(&ip[..]).unwrap().verify_checksum());
    }
}
