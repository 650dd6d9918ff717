//! IP protocol numbers shared by IPv4 (`protocol`) and IPv6 (`next header`), and the port pair
//! that TCP, UDP, UDP-Lite and SCTP headers all start with.

use super::{read_u16, Error, Field};

/// An IP protocol / IPv6 next-header number. Values linen does not name are kept as
/// `Unknown(n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpProtocol {
    /// IPv6 hop-by-hop options (0).
    HopByHop,
    /// ICMP for IPv4 (1).
    Icmp,
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// IPv6 routing header (43).
    Ipv6Route,
    /// IPv6 fragment header (44).
    Ipv6Frag,
    /// ICMPv6 (58).
    Icmpv6,
    /// IPv6 "no next header" (59).
    Ipv6NoNxt,
    /// IPv6 destination options (60).
    Ipv6Opts,
    /// Any other number.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    #[inline]
    fn from(value: u8) -> Self {
        match value {
            0 => IpProtocol::HopByHop,
            1 => IpProtocol::Icmp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            43 => IpProtocol::Ipv6Route,
            44 => IpProtocol::Ipv6Frag,
            58 => IpProtocol::Icmpv6,
            59 => IpProtocol::Ipv6NoNxt,
            60 => IpProtocol::Ipv6Opts,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    #[inline]
    fn from(value: IpProtocol) -> Self {
        match value {
            IpProtocol::HopByHop => 0,
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Ipv6Route => 43,
            IpProtocol::Ipv6Frag => 44,
            IpProtocol::Icmpv6 => 58,
            IpProtocol::Ipv6NoNxt => 59,
            IpProtocol::Ipv6Opts => 60,
            IpProtocol::Unknown(other) => other,
        }
    }
}

impl core::fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IpProtocol::HopByHop => f.write_str("hop-by-hop"),
            IpProtocol::Icmp => f.write_str("icmp"),
            IpProtocol::Tcp => f.write_str("tcp"),
            IpProtocol::Udp => f.write_str("udp"),
            IpProtocol::Ipv6Route => f.write_str("ipv6-route"),
            IpProtocol::Ipv6Frag => f.write_str("ipv6-frag"),
            IpProtocol::Icmpv6 => f.write_str("icmpv6"),
            IpProtocol::Ipv6NoNxt => f.write_str("ipv6-nonxt"),
            IpProtocol::Ipv6Opts => f.write_str("ipv6-opts"),
            IpProtocol::Unknown(n) => write!(f, "protocol {n}"),
        }
    }
}

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
}

/// Length of the port pair.
pub const PORTS_LEN: usize = 4;

/// A read-only view of the source and destination port at the start of a TCP, UDP, UDP-Lite or
/// SCTP header: what a flow hash reads without caring which of them it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Ports);

impl<T: AsRef<[u8]>> Ports<T> {
    /// Checks that both ports are present.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 4 bytes.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < PORTS_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Both ports as the four bytes on the wire (source then destination, big-endian): for the
    /// fast path's flow hash, which takes them as one word in whatever byte order is cheapest.
    #[inline]
    pub fn octets(&self) -> [u8; PORTS_LEN] {
        let d = self.buffer.as_ref();
        let (s, t) = (field::SRC_PORT.start, field::DST_PORT.start);
        [d[s], d[s + 1], d[t], d[t + 1]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_view() {
        let b = [0xa4, 0x4b, 0x23, 0x28, 0xff];
        let p = Ports::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (42059, 9000));
        assert_eq!(p.octets(), [0xa4, 0x4b, 0x23, 0x28]);
        assert_eq!(Ports::new_checked(&b[..3]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn every_number_round_trips() {
        for n in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(n)), n);
        }
        assert_eq!(IpProtocol::from(17), IpProtocol::Udp);
        assert_eq!(IpProtocol::from(99), IpProtocol::Unknown(99));
    }
}
