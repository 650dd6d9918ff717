//! ICMPv4 (RFC 792): enough to parse and build echo messages and "fragmentation needed"
//! (destination unreachable, code 4, with the next-hop MTU of RFC 1191).
//!
//! ```text
//!  0        8        16                32
//!  |  type  |  code  |    checksum      |
//!  |  identifier     |  sequence number |   (echo)
//!  |  unused         |  next-hop MTU    |   (fragmentation needed)
//!  |  data ...
//! ```
//!
//! A view covers exactly one ICMP message (slice the IPv4 payload to it): the checksum is
//! over the whole buffer.

use super::checksum;
use super::{read_u16, write_u16, Error, Field, Rest};

mod field {
    use super::{Field, Rest};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const UNUSED: Field = 4..6;
    pub const MTU: Field = 6..8;
    pub const DATA: Rest = 8..;
}

/// Length of the ICMPv4 header (type, code, checksum and the 4-byte rest-of-header).
pub const HEADER_LEN: usize = 8;
/// `code` of destination-unreachable meaning "fragmentation needed and DF set".
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Most invoking-packet bytes an error should quote so the whole IPv4 datagram stays within
/// 576 bytes (RFC 1812 §4.3.2.3).
pub const MAX_ERROR_DATA_LEN: usize = 576 - 20 - HEADER_LEN;

/// ICMPv4 message type. Unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Message {
    /// Echo reply (0).
    EchoReply,
    /// Destination unreachable (3).
    DstUnreachable,
    /// Redirect (5).
    Redirect,
    /// Echo request (8).
    EchoRequest,
    /// Time exceeded (11).
    TimeExceeded,
    /// Parameter problem (12).
    ParamProblem,
    /// Any other value.
    Unknown(u8),
}

impl From<u8> for Message {
    fn from(value: u8) -> Self {
        match value {
            0 => Message::EchoReply,
            3 => Message::DstUnreachable,
            5 => Message::Redirect,
            8 => Message::EchoRequest,
            11 => Message::TimeExceeded,
            12 => Message::ParamProblem,
            other => Message::Unknown(other),
        }
    }
}

impl From<Message> for u8 {
    fn from(value: Message) -> Self {
        match value {
            Message::EchoReply => 0,
            Message::DstUnreachable => 3,
            Message::Redirect => 5,
            Message::EchoRequest => 8,
            Message::TimeExceeded => 11,
            Message::ParamProblem => 12,
            Message::Unknown(other) => other,
        }
    }
}

/// A read/write view of one ICMPv4 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the 8-byte header is present.
    ///
    /// # Errors
    /// [`Error::Truncated`] when it is not.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> Message {
        Message::from(self.buffer.as_ref()[field::TYPE])
    }

    /// Message code.
    #[inline]
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Echo identifier.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQNO)
    }

    /// Next-hop MTU of a "fragmentation needed" message (RFC 1191).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::MTU)
    }

    /// Everything after the 8-byte header (echo data, or the quoted invoking packet).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }

    /// Whether the checksum over the whole message verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(checksum::sum(self.buffer.as_ref()))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The data with the buffer's lifetime.
    #[inline]
    pub fn data_ref(&self) -> &'a [u8] {
        &T::as_ref(self.buffer)[field::DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, value: Message) {
        self.buffer.as_mut()[field::TYPE] = value.into();
    }

    /// Sets the message code.
    #[inline]
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the stored checksum.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT, value);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQNO, value);
    }

    /// Sets the next-hop MTU and zeroes the unused field before it.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::UNUSED, 0);
        write_u16(self.buffer.as_mut(), field::MTU, value);
    }

    /// Mutable data after the header.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }

    /// Computes and stores the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

/// The meaning of the ICMPv4 messages linen handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Repr<'a> {
    /// Echo request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Echo reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Echo data.
        data: &'a [u8],
    },
    /// Destination unreachable, fragmentation needed and DF set (type 3, code 4).
    FragNeeded {
        /// The MTU of the next hop the packet did not fit.
        next_hop_mtu: u16,
        /// The invoking packet's IPv4 header and leading payload (at most
        /// [`MAX_ERROR_DATA_LEN`] bytes are usual).
        data: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Validates the checksum and decodes a supported message.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::BadChecksum`], and [`Error::Unsupported`] for message
    /// types or codes without a variant here.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> Result<Repr<'a>, Error> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        let data = packet.data_ref();
        match (packet.msg_type(), packet.msg_code()) {
            (Message::EchoRequest, 0) => Ok(Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            (Message::EchoReply, 0) => Ok(Repr::EchoReply {
                ident: packet.echo_ident(),
                seq_no: packet.echo_seq_no(),
                data,
            }),
            (Message::DstUnreachable, CODE_FRAG_NEEDED) => {
                Ok(Repr::FragNeeded { next_hop_mtu: packet.next_hop_mtu(), data })
            }
            _ => Err(Error::Unsupported),
        }
    }

    /// Bytes [`Repr::emit`] writes: header plus data.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        match self {
            Repr::EchoRequest { data, .. }
            | Repr::EchoReply { data, .. }
            | Repr::FragNeeded { data, .. } => HEADER_LEN + data.len(),
        }
    }

    /// Writes the message and its checksum. The view's buffer must be exactly
    /// [`Repr::buffer_len`] bytes (the checksum covers the whole buffer).
    ///
    /// # Panics
    /// When the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let data = match *self {
            Repr::EchoRequest { ident, seq_no, data } | Repr::EchoReply { ident, seq_no, data } => {
                let ty = if matches!(self, Repr::EchoRequest { .. }) {
                    Message::EchoRequest
                } else {
                    Message::EchoReply
                };
                packet.set_msg_type(ty);
                packet.set_msg_code(0);
                packet.set_echo_ident(ident);
                packet.set_echo_seq_no(seq_no);
                data
            }
            Repr::FragNeeded { next_hop_mtu, data } => {
                packet.set_msg_type(Message::DstUnreachable);
                packet.set_msg_code(CODE_FRAG_NEEDED);
                packet.set_next_hop_mtu(next_hop_mtu);
                data
            }
        };
        packet.data_mut()[..data.len()].copy_from_slice(data);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20-byte IPv4 header + 8 bytes, standing for the invoking packet.
    const INVOKING: [u8; 28] = [
        0x45, 0, 0x05, 0xc8, 0xdf, 0x23, 0x40, 0, 0x3f, 0x01, 0, 0, 10, 244, 1, 2, 10, 244, 2, 2,
        8, 0, 0x12, 0x34, 0x29, 0x62, 0, 1,
    ];

    #[test]
    fn frag_needed_round_trip_and_smoltcp_agrees() {
        let repr = Repr::FragNeeded { next_hop_mtu: 1450, data: &INVOKING };
        let mut b = vec![0xaau8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(&b[..8], &[3, 4, b[2], b[3], 0, 0, 0x05, 0xaa]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Message::DstUnreachable);
        assert_eq!(p.msg_code(), CODE_FRAG_NEEDED);
        assert_eq!(p.next_hop_mtu(), 1450);
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap(), repr);

        use smoltcp::wire::{Icmpv4DstUnreachable, Icmpv4Message, Icmpv4Packet};
        let theirs = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert!(theirs.verify_checksum());
        assert_eq!(theirs.msg_type(), Icmpv4Message::DstUnreachable);
        assert_eq!(
            Icmpv4DstUnreachable::from(theirs.msg_code()),
            Icmpv4DstUnreachable::FragRequired
        );
    }

    #[test]
    fn echo_round_trip() {
        let data = [1u8, 2, 3, 4, 5];
        for repr in [
            Repr::EchoRequest { ident: 10593, seq_no: 1, data: &data },
            Repr::EchoReply { ident: 10593, seq_no: 2, data: &data },
        ] {
            let mut b = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut b[..]));
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(Repr::parse(&p).unwrap(), repr);
            let theirs = smoltcp::wire::Icmpv4Packet::new_checked(&b[..]).unwrap();
            assert!(theirs.verify_checksum());
            assert_eq!(theirs.echo_ident(), 10593);
        }
    }

    #[test]
    fn errors() {
        let repr = Repr::FragNeeded { next_hop_mtu: 1450, data: &INVOKING };
        let mut b = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(Packet::new_checked(&b[..7]).unwrap_err(), Error::Truncated);
        let mut bad = b.clone();
        bad[30] ^= 0x40;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&bad[..]).unwrap()).unwrap_err(),
            Error::BadChecksum
        );
        // Host unreachable (code 1) is well formed but not modelled.
        let mut other = b.clone();
        let mut p = Packet::new_unchecked(&mut other[..]);
        p.set_msg_code(1);
        p.fill_checksum();
        assert_eq!(
            Repr::parse(&Packet::new_checked(&other[..]).unwrap()).unwrap_err(),
            Error::Unsupported
        );
        assert_eq!(Message::from(42), Message::Unknown(42));
        assert_eq!(u8::from(Message::Unknown(42)), 42);
    }
}
