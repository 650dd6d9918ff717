//! [`NextHop`]: where a pod subnet's traffic goes, with its outer header built in advance.

use std::net::Ipv4Addr;

use super::Config;
use crate::wire::{checksum, IpProtocol};

/// Length of the outer header over an IPv4 underlay: Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8.
pub const OUTER_V4_LEN: usize = 50;

/// Offset of the outer IPv4 header in an encapsulated frame.
pub const OUTER_IP_OFFSET: usize = 14;

/// Offset of the outer UDP payload (the VXLAN header) in an encapsulated frame over IPv4: what a
/// UDP socket would send.
pub const OUTER_UDP_PAYLOAD_OFFSET: usize = 42;

/// Length of the VXLAN header.
pub const VXLAN_LEN: usize = 8;

/// The outer header template of an IPv4 underlay, with its field offsets.
///
/// An IPv6 underlay would add a second, 70-byte template kind (Ethernet 14 + IPv6 40 + UDP 8 +
/// VXLAN 8) beside this one; the offsets below are relative to the start of the frame and the
/// VXLAN header is always the last 8 bytes, so only the IP part differs.
pub(crate) mod v4 {
    pub const ETH_DST: usize = 0;
    pub const ETH_SRC: usize = 6;
    pub const ETH_TYPE: usize = 12;
    pub const IP: usize = 14;
    pub const IP_TOTAL_LEN: usize = 16;
    pub const IP_TTL: usize = 22;
    pub const IP_PROTO: usize = 23;
    pub const IP_CHECKSUM: usize = 24;
    pub const IP_SRC: usize = 26;
    pub const IP_DST: usize = 30;
    pub const UDP: usize = 34;
    pub const UDP_SRC_PORT: usize = 34;
    pub const UDP_DST_PORT: usize = 36;
    pub const UDP_LEN: usize = 38;
    pub const UDP_CHECKSUM: usize = 40;
    pub const VXLAN: usize = 42;
    pub const VXLAN_VNI: usize = 46;
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
/// zero) and VXLAN (I flag, the configured VNI). Encap copies it as one fixed-size block and
/// patches only total length, ID, IPv4 checksum (from the precomputed partial sum), UDP source
/// port and length, and the UDP checksum when configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    peer: Peer,
    template: [u8; OUTER_V4_LEN],
    /// Sum of the template's IPv4 header words (length, ID and checksum zero), taken over
    /// native-endian words and folded to 16 bits.
    ip_sum_ne: u32,
    /// Sum of the UDP pseudo-header and constant UDP/VXLAN words (lengths and source port zero).
    udp_sum: u32,
}

impl NextHop {
    /// Builds the next hop and its outer header template for `peer` under `config`.
    pub fn new(config: &Config, peer: &Peer) -> Self {
        use v4::*;
        let mut t = [0u8; OUTER_V4_LEN];
        t[ETH_DST..ETH_DST + 6].copy_from_slice(&peer.underlay_mac.unwrap_or([0; 6]));
        t[ETH_SRC..ETH_SRC + 6].copy_from_slice(&config.local_mac);
        t[ETH_TYPE..ETH_TYPE + 2].copy_from_slice(&0x0800u16.to_be_bytes());
        t[IP] = 0x45; // version 4, 20-byte header
        t[IP_TTL] = OUTER_TTL;
        t[IP_PROTO] = 17;
        t[IP_SRC..IP_SRC + 4].copy_from_slice(&config.local_vtep.octets());
        t[IP_DST..IP_DST + 4].copy_from_slice(&peer.vtep.octets());
        t[UDP_DST_PORT..UDP_DST_PORT + 2].copy_from_slice(&config.port.to_be_bytes());
        t[VXLAN] = 0x08; // I flag
        let vni = (config.vni & 0x00ff_ffff).to_be_bytes();
        t[VXLAN_VNI..VXLAN_VNI + 3].copy_from_slice(&vni[1..]);
        let ip_sum_ne = u32::from(u16::from_ne_bytes(checksum::sum(&t[IP..UDP]).to_be_bytes()));
        let pseudo = checksum::pseudo_header_v4(config.local_vtep, peer.vtep, IpProtocol::Udp, 0);
        let udp_sum = u32::from(pseudo) + u32::from(checksum::sum(&t[UDP..OUTER_V4_LEN]));
        NextHop { peer: *peer, template: t, ip_sum_ne, udp_sum }
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
    #[inline]
    pub fn outer_header(&self) -> &[u8; OUTER_V4_LEN] {
        &self.template
    }

    #[inline(always)]
    pub(crate) fn template(&self) -> &[u8; OUTER_V4_LEN] {
        &self.template
    }

    #[inline(always)]
    pub(crate) fn ip_sum_ne(&self) -> u32 {
        self.ip_sum_ne
    }

    #[inline(always)]
    pub(crate) fn udp_sum(&self) -> u32 {
        self.udp_sum
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
    }
}
