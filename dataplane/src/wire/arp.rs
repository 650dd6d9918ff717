//! ARP for Ethernet and IPv4 (RFC 826).
//!
//! ```text
//!  0        2        4    5    6        8          14       18         24       28
//!  | htype  | ptype  |hlen|plen|  oper  | sender MAC | sender IP | target MAC | target IP |
//! ```
//!
//! linen only ever answers or inspects ARP for Ethernet/IPv4, so the address getters read the
//! fixed 28-byte Ethernet/IPv4 layout. [`Packet::check_len`] therefore requires 28 bytes *and*
//! the length implied by `hlen`/`plen`; [`Repr::parse`] rejects any other hardware or protocol
//! type, or other address lengths, with [`Error::Unsupported`].

use std::net::Ipv4Addr;

use super::ethernet::{EtherType, MacAddr};
use super::{read_ipv4, read_u16, write_u16, Error, Field};

mod field {
    use super::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Length of the fixed part before the addresses.
const FIXED_LEN: usize = 8;

/// ARP hardware type. Unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hardware {
    /// Ethernet (1).
    Ethernet,
    /// Any other value.
    Unknown(u16),
}

impl From<u16> for Hardware {
    fn from(value: u16) -> Self {
        match value {
            1 => Hardware::Ethernet,
            other => Hardware::Unknown(other),
        }
    }
}

impl From<Hardware> for u16 {
    fn from(value: Hardware) -> Self {
        match value {
            Hardware::Ethernet => 1,
            Hardware::Unknown(other) => other,
        }
    }
}

/// ARP operation. Unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Request (1).
    Request,
    /// Reply (2).
    Reply,
    /// Any other value.
    Unknown(u16),
}

impl From<u16> for Operation {
    fn from(value: u16) -> Self {
        match value {
            1 => Operation::Request,
            2 => Operation::Reply,
            other => Operation::Unknown(other),
        }
    }
}

impl From<Operation> for u16 {
    fn from(value: Operation) -> Self {
        match value {
            Operation::Request => 1,
            Operation::Reply => 2,
            Operation::Unknown(other) => other,
        }
    }
}

/// A read/write view of an ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the buffer holds the 28-byte Ethernet/IPv4 layout and the addresses the
    /// length fields announce.
    ///
    /// # Errors
    /// [`Error::Truncated`] when it does not.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let data = self.buffer.as_ref();
        if data.len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        let addrs = 2 * (usize::from(data[field::HLEN]) + usize::from(data[field::PLEN]));
        if data.len() < FIXED_LEN + addrs {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Hardware type.
    #[inline]
    pub fn hardware_type(&self) -> Hardware {
        Hardware::from(read_u16(self.buffer.as_ref(), field::HTYPE))
    }

    /// Protocol type (an EtherType).
    #[inline]
    pub fn protocol_type(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::PTYPE))
    }

    /// Hardware address length.
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// Protocol address length.
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// Operation.
    #[inline]
    pub fn operation(&self) -> Operation {
        Operation::from(read_u16(self.buffer.as_ref(), field::OPER))
    }

    /// Sender MAC address (Ethernet/IPv4 layout).
    #[inline]
    pub fn sender_hardware_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SHA])
    }

    /// Sender IPv4 address (Ethernet/IPv4 layout).
    #[inline]
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::SPA)
    }

    /// Target MAC address (Ethernet/IPv4 layout).
    #[inline]
    pub fn target_hardware_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::THA])
    }

    /// Target IPv4 address (Ethernet/IPv4 layout).
    #[inline]
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the hardware type.
    #[inline]
    pub fn set_hardware_type(&mut self, value: Hardware) {
        write_u16(self.buffer.as_mut(), field::HTYPE, value.into());
    }

    /// Sets the protocol type.
    #[inline]
    pub fn set_protocol_type(&mut self, value: EtherType) {
        write_u16(self.buffer.as_mut(), field::PTYPE, value.into());
    }

    /// Sets the hardware address length.
    #[inline]
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Sets the protocol address length.
    #[inline]
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    /// Sets the operation.
    #[inline]
    pub fn set_operation(&mut self, value: Operation) {
        write_u16(self.buffer.as_mut(), field::OPER, value.into());
    }

    /// Sets the sender MAC address.
    #[inline]
    pub fn set_sender_hardware_addr(&mut self, value: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&value.0);
    }

    /// Sets the sender IPv4 address.
    #[inline]
    pub fn set_sender_protocol_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&value.octets());
    }

    /// Sets the target MAC address.
    #[inline]
    pub fn set_target_hardware_addr(&mut self, value: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&value.0);
    }

    /// Sets the target IPv4 address.
    #[inline]
    pub fn set_target_protocol_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&value.octets());
    }
}

/// The meaning of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Operation (unknown operations are kept).
    pub operation: Operation,
    /// Sender MAC address.
    pub source_hardware_addr: MacAddr,
    /// Sender IPv4 address.
    pub source_protocol_addr: Ipv4Addr,
    /// Target MAC address.
    pub target_hardware_addr: MacAddr,
    /// Target IPv4 address.
    pub target_protocol_addr: Ipv4Addr,
}

impl Repr {
    /// Validates an Ethernet/IPv4 ARP packet.
    ///
    /// # Errors
    /// [`Error::Truncated`]; [`Error::Unsupported`] for other hardware or protocol types or
    /// address lengths.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.hardware_type() != Hardware::Ethernet
            || packet.protocol_type() != EtherType::Ipv4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(Repr {
            operation: packet.operation(),
            source_hardware_addr: packet.sender_hardware_addr(),
            source_protocol_addr: packet.sender_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    /// Bytes [`Repr::emit`] writes (28).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes an Ethernet/IPv4 ARP packet.
    ///
    /// # Panics
    /// When the buffer is shorter than 28 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_hardware_type(Hardware::Ethernet);
        packet.set_protocol_type(EtherType::Ipv4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_sender_hardware_addr(self.source_hardware_addr);
        packet.set_sender_protocol_addr(self.source_protocol_addr);
        packet.set_target_hardware_addr(self.target_hardware_addr);
        packet.set_target_protocol_addr(self.target_protocol_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "Who has 192.168.77.2? Tell 192.168.77.1" from host A of the flannel fixture's README.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x92, 0x14, 0x14, 0x17, 0xdb, 0xd3, 192,
        168, 77, 1, 0, 0, 0, 0, 0, 0, 192, 168, 77, 2,
    ];

    fn request_repr() -> Repr {
        Repr {
            operation: Operation::Request,
            source_hardware_addr: "92:14:14:17:db:d3".parse().unwrap(),
            source_protocol_addr: Ipv4Addr::new(192, 168, 77, 1),
            target_hardware_addr: MacAddr::default(),
            target_protocol_addr: Ipv4Addr::new(192, 168, 77, 2),
        }
    }

    #[test]
    fn parse_request() {
        let p = Packet::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.hardware_type(), Hardware::Ethernet);
        assert_eq!(p.protocol_type(), EtherType::Ipv4);
        assert_eq!((p.hardware_len(), p.protocol_len()), (6, 4));
        assert_eq!(p.operation(), Operation::Request);
        assert_eq!(Repr::parse(&p).unwrap(), request_repr());
    }

    #[test]
    fn emit_round_trip_and_smoltcp_agrees() {
        let reply = Repr {
            operation: Operation::Reply,
            source_hardware_addr: "e6:37:6c:ed:27:39".parse().unwrap(),
            source_protocol_addr: Ipv4Addr::new(192, 168, 77, 2),
            target_hardware_addr: "92:14:14:17:db:d3".parse().unwrap(),
            target_protocol_addr: Ipv4Addr::new(192, 168, 77, 1),
        };
        let mut b = [0u8; 28];
        reply.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap(), reply);
        assert_eq!(reply.buffer_len(), 28);

        let mut req = [0u8; 28];
        request_repr().emit(&mut Packet::new_unchecked(&mut req[..]));
        assert_eq!(req, REQUEST);

        use smoltcp::wire::{ArpOperation, ArpPacket, ArpRepr};
        let theirs = ArpRepr::parse(&ArpPacket::new_checked(&b[..]).unwrap()).unwrap();
        let ArpRepr::EthernetIpv4 { operation, source_protocol_addr, target_hardware_addr, .. } =
            theirs
        else {
            panic!("smoltcp parsed {theirs:?}");
        };
        assert_eq!(operation, ArpOperation::Reply);
        assert_eq!(source_protocol_addr, reply.source_protocol_addr);
        assert_eq!(target_hardware_addr.as_bytes(), &reply.target_hardware_addr.0);
    }

    #[test]
    fn errors() {
        assert_eq!(Packet::new_checked(&REQUEST[..27]).unwrap_err(), Error::Truncated);
        // Address lengths announcing more than the buffer holds.
        let mut long = REQUEST;
        long[4] = 16;
        assert_eq!(Packet::new_checked(&long[..]).unwrap_err(), Error::Truncated);
        for (at, value) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = REQUEST.to_vec();
            b[at] = value;
            b.resize(80, 0);
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(Repr::parse(&p).unwrap_err(), Error::Unsupported, "byte {at}");
        }
        let mut b = REQUEST;
        b[7] = 9;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap().operation, Operation::Unknown(9));
        assert_eq!(u16::from(Operation::Unknown(9)), 9);
        assert_eq!(Hardware::from(6), Hardware::Unknown(6));
    }
}
