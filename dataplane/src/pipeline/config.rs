//! [`Config`]: the node's VXLAN parameters, fixed for the life of a worker.

use std::net::Ipv4Addr;

/// The VXLAN UDP port flannel and the Linux kernel's VXLAN device use (`dstport 8472`).
pub const DEFAULT_PORT: u16 = 8472;

/// flannel's default VNI.
pub const DEFAULT_VNI: u32 = 1;

/// The lowest outer UDP source port by default: the low end of Linux's default
/// `net.ipv4.ip_local_port_range` (32768–60999), which the kernel's VXLAN device also hashes into.
pub const DEFAULT_SOURCE_PORT_MIN: u16 = 32768;

/// The highest outer UDP source port by default (see [`DEFAULT_SOURCE_PORT_MIN`]).
pub const DEFAULT_SOURCE_PORT_MAX: u16 = 60999;

/// The overlay MTU by default: a 1500-byte underlay minus the 50-byte outer header.
pub const DEFAULT_OVERLAY_MTU: u16 = 1450;

/// The largest overlay MTU: the outer IPv4 packet (outer IPv4, UDP and VXLAN headers, inner
/// Ethernet header, inner packet) must fit IPv4's 16-bit total length.
pub const MAX_OVERLAY_MTU: u16 = 65535 - 50;

/// Per-node VXLAN parameters the pipeline reads on every packet.
///
/// Build one with [`Config::new`] (defaults for everything that has one), adjust the public
/// fields, then call [`Config::validate`] once before handing it to the workers. The pipeline
/// never panics on a bad config, but it cannot do anything useful with one either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The local VTEP address: the underlay IPv4 address outer headers come from and are
    /// addressed to (flannel's `PublicIP`).
    pub local_vtep: Ipv4Addr,
    /// MAC of the local underlay NIC: the outer Ethernet source.
    pub local_mac: [u8; 6],
    /// MAC of `linen.1` (the `VtepMAC` published in our lease): decap accepts only inner frames
    /// addressed to it.
    pub vtep_mac: [u8; 6],
    /// VXLAN network identifier, 24 bits. Default [`DEFAULT_VNI`].
    pub vni: u32,
    /// VXLAN UDP destination port. Default [`DEFAULT_PORT`].
    pub port: u16,
    /// Whether encap computes the outer UDP checksum (the kernel's `udpcsum`). Off by default:
    /// the checksum is then zero, as RFC 7348 recommends for IPv4 and Linux accepts. Decap accepts
    /// both either way.
    pub udp_checksum: bool,
    /// Lowest outer UDP source port encap picks (inclusive). Default [`DEFAULT_SOURCE_PORT_MIN`].
    pub source_port_min: u16,
    /// Highest outer UDP source port encap picks (inclusive). Default [`DEFAULT_SOURCE_PORT_MAX`].
    pub source_port_max: u16,
    /// The overlay MTU (`linen.1`'s MTU): the largest inner IP packet, in bytes without the inner
    /// Ethernet header, that encap sends. Default [`DEFAULT_OVERLAY_MTU`].
    pub overlay_mtu: u16,
}

/// Why a [`Config`] was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The VNI does not fit in VXLAN's 24 bits.
    #[error("VNI {vni} does not fit in 24 bits (maximum 16777215)")]
    VniTooLarge {
        /// The VNI given.
        vni: u32,
    },
    /// Port 0 cannot be a destination.
    #[error("VXLAN port 0 is not a usable destination port; flannel's default is 8472")]
    ZeroPort,
    /// The source port range is empty or includes port 0.
    #[error("outer UDP source port range {min}-{max} is empty or contains port 0")]
    BadSourcePortRange {
        /// The configured minimum.
        min: u16,
        /// The configured maximum.
        max: u16,
    },
    /// The local VTEP address cannot be a packet's destination.
    #[error("local VTEP address {addr} is not a unicast address")]
    BadLocalVtep {
        /// The address given.
        addr: Ipv4Addr,
    },
    /// The overlay MTU is below IPv4's minimum of 68 bytes.
    #[error("overlay MTU {mtu} is below IPv4's minimum of 68 bytes")]
    MtuTooSmall {
        /// The MTU given.
        mtu: u16,
    },
    /// The overlay MTU leaves no room for the outer headers in a 65535-byte outer IPv4 packet.
    #[error("overlay MTU {mtu} is above {MAX_OVERLAY_MTU} (65535 minus the outer headers)")]
    MtuTooLarge {
        /// The MTU given.
        mtu: u16,
    },
}

impl Config {
    /// A config with linen's defaults (VNI 1, port 8472, outer UDP checksum off, source ports
    /// 32768–60999, overlay MTU 1450) for the given local VTEP address, underlay MAC and `linen.1`
    /// MAC.
    pub fn new(local_vtep: Ipv4Addr, local_mac: [u8; 6], vtep_mac: [u8; 6]) -> Self {
        Config {
            local_vtep,
            local_mac,
            vtep_mac,
            vni: DEFAULT_VNI,
            port: DEFAULT_PORT,
            udp_checksum: false,
            source_port_min: DEFAULT_SOURCE_PORT_MIN,
            source_port_max: DEFAULT_SOURCE_PORT_MAX,
            overlay_mtu: DEFAULT_OVERLAY_MTU,
        }
    }

    /// Checks the values the pipeline relies on.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vni > 0x00ff_ffff {
            return Err(ConfigError::VniTooLarge { vni: self.vni });
        }
        if self.port == 0 {
            return Err(ConfigError::ZeroPort);
        }
        if self.source_port_min == 0 || self.source_port_min > self.source_port_max {
            return Err(ConfigError::BadSourcePortRange {
                min: self.source_port_min,
                max: self.source_port_max,
            });
        }
        let vtep = self.local_vtep;
        if vtep.is_unspecified() || vtep.is_broadcast() || vtep.is_multicast() {
            return Err(ConfigError::BadLocalVtep { addr: vtep });
        }
        if self.overlay_mtu < 68 {
            return Err(ConfigError::MtuTooSmall { mtu: self.overlay_mtu });
        }
        if self.overlay_mtu > MAX_OVERLAY_MTU {
            return Err(ConfigError::MtuTooLarge { mtu: self.overlay_mtu });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_do_not() {
        let c = Config::new(Ipv4Addr::new(192, 168, 77, 1), [2; 6], [4; 6]);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!((c.vni, c.port, c.udp_checksum), (1, 8472, false));
        let bad = |f: fn(&mut Config)| {
            let mut c = c.clone();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.vni = 1 << 24), ConfigError::VniTooLarge { vni: 1 << 24 });
        assert_eq!(bad(|c| c.port = 0), ConfigError::ZeroPort);
        assert!(matches!(
            bad(|c| c.source_port_min = 61000),
            ConfigError::BadSourcePortRange { .. }
        ));
        assert!(matches!(bad(|c| c.source_port_min = 0), ConfigError::BadSourcePortRange { .. }));
        assert!(matches!(
            bad(|c| c.local_vtep = Ipv4Addr::UNSPECIFIED),
            ConfigError::BadLocalVtep { .. }
        ));
        assert_eq!(bad(|c| c.overlay_mtu = 67), ConfigError::MtuTooSmall { mtu: 67 });
        assert_eq!(bad(|c| c.overlay_mtu = 65486), ConfigError::MtuTooLarge { mtu: 65486 });
    }
}
