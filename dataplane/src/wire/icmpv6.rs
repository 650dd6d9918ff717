//! ICMPv6 (RFC 4443): enough to parse and build echo messages and "packet too big" (type 2,
//! with the MTU), with the checksum over the IPv6 pseudo-header.
//!
//! ```text
//!  0        8        16                32
//!  |  type  |  code  |    checksum      |
//!  |              MTU (32)              |   (packet too big)
//!  |  identifier     |  sequence number |   (echo)
//!  |  data ...
//! ```
//!
//! A view covers exactly one ICMPv6 message (slice the IPv6 payload to it): the checksum is
//! over the pseudo-header and the whole buffer.

use std::net::Ipv6Addr;

use super::checksum;
use super::ip::IpProtocol;
use super::{read_u16, read_u32, write_u16, write_u32, Error, Field, Rest};

mod field {
    use super::{Field, Rest};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const MTU: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    pub const DATA: Rest = 8..;
}

/// Length of the ICMPv6 header (type, code, checksum and the 4-byte message body start).
pub const HEADER_LEN: usize = 8;
/// Most invoking-packet bytes an error may quote so the whole IPv6 packet stays within the
/// minimum MTU of 1280 (RFC 4443 §2.4 (c)).
pub const MAX_ERROR_DATA_LEN: usize = 1280 - 40 - HEADER_LEN;

/// ICMPv6 message type. Unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Message {
    /// Destination unreachable (1).
    DstUnreachable,
    /// Packet too big (2).
    PacketTooBig,
    /// Time exceeded (3).
    TimeExceeded,
    /// Parameter problem (4).
    ParamProblem,
    /// Echo request (128).
    EchoRequest,
    /// Echo reply (129).
    EchoReply,
    /// Router solicitation (133).
    RouterSolicit,
    /// Router advertisement (134).
    RouterAdvert,
    /// Neighbour solicitation (135).
    NeighborSolicit,
    /// Neighbour advertisement (136).
    NeighborAdvert,
    /// Redirect (137).
    Redirect,
    /// Any other value.
    Unknown(u8),
}

impl From<u8> for Message {
    fn from(value: u8) -> Self {
        match value {
            1 => Message::DstUnreachable,
            2 => Message::PacketTooBig,
            3 => Message::TimeExceeded,
            4 => Message::ParamProblem,
            128 => Message::EchoRequest,
            129 => Message::EchoReply,
            133 => Message::RouterSolicit,
            134 => Message::RouterAdvert,
            135 => Message::NeighborSolicit,
            136 => Message::NeighborAdvert,
            137 => Message::Redirect,
            other => Message::Unknown(other),
        }
    }
}

impl From<Message> for u8 {
    fn from(value: Message) -> Self {
        match value {
            Message::DstUnreachable => 1,
            Message::PacketTooBig => 2,
            Message::TimeExceeded => 3,
            Message::ParamProblem => 4,
            Message::EchoRequest => 128,
            Message::EchoReply => 129,
            Message::RouterSolicit => 133,
            Message::RouterAdvert => 134,
            Message::NeighborSolicit => 135,
            Message::NeighborAdvert => 136,
            Message::Redirect => 137,
            Message::Unknown(other) => other,
        }
    }
}

/// A read/write view of one ICMPv6 message.
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

    /// MTU of a "packet too big" message.
    #[inline]
    pub fn mtu(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::MTU)
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

    /// Everything after the 8-byte header.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }

    fn pseudo_sum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> u16 {
        let len = u32::try_from(self.buffer.as_ref().len()).unwrap_or(u32::MAX);
        checksum::pseudo_header_v6(src, dst, IpProtocol::Icmpv6, len)
    }

    /// Whether the checksum over the pseudo-header of `src` → `dst` and the whole message
    /// verifies.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let s = checksum::add(self.pseudo_sum(src, dst), checksum::sum(self.buffer.as_ref()));
        checksum::verifies(s)
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

    /// Sets the MTU of a "packet too big" message.
    #[inline]
    pub fn set_mtu(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::MTU, value);
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

    /// Mutable data after the header.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }

    /// Computes and stores the checksum over the pseudo-header and the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let s = checksum::add(self.pseudo_sum(src, dst), checksum::sum(self.buffer.as_ref()));
        self.set_checksum(checksum::finish(s));
    }
}

/// The meaning of the ICMPv6 messages linen handles.
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
    /// Packet too big (type 2, code 0).
    PacketTooBig {
        /// The MTU of the link the packet did not fit.
        mtu: u32,
        /// The invoking packet, as much as fits in [`MAX_ERROR_DATA_LEN`].
        data: &'a [u8],
    },
}

impl<'a> Repr<'a> {
    /// Validates the checksum over the pseudo-header of `src` → `dst` and decodes a supported
    /// message.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::BadChecksum`], and [`Error::Unsupported`] for message
    /// types or codes without a variant here.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&'a T>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) -> Result<Repr<'a>, Error> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
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
            (Message::PacketTooBig, 0) => Ok(Repr::PacketTooBig { mtu: packet.mtu(), data }),
            _ => Err(Error::Unsupported),
        }
    }

    /// Bytes [`Repr::emit`] writes: header plus data.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        match self {
            Repr::EchoRequest { data, .. }
            | Repr::EchoReply { data, .. }
            | Repr::PacketTooBig { data, .. } => HEADER_LEN + data.len(),
        }
    }

    /// Writes the message and its checksum over the pseudo-header of `src` → `dst`. The view's
    /// buffer must be exactly [`Repr::buffer_len`] bytes.
    ///
    /// # Panics
    /// When the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) {
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
            Repr::PacketTooBig { mtu, data } => {
                packet.set_msg_type(Message::PacketTooBig);
                packet.set_msg_code(0);
                packet.set_mtu(mtu);
                data
            }
        };
        packet.data_mut()[..data.len()].copy_from_slice(data);
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        ("fd00:77::2".parse().unwrap(), "fd00:244:1::2".parse().unwrap())
    }

    #[test]
    fn packet_too_big_round_trip_and_smoltcp_agrees() {
        let (src, dst) = addrs();
        let invoking = [0x60u8; 48];
        let repr = Repr::PacketTooBig { mtu: 1430, data: &invoking };
        let mut b = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut b[..]), src, dst);
        assert_eq!(&b[4..8], &1430u32.to_be_bytes());
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.msg_type(), Message::PacketTooBig);
        assert_eq!(p.mtu(), 1430);
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum(dst, src.octets().map(|o| o ^ 1).into()));
        assert_eq!(Repr::parse(&p, src, dst).unwrap(), repr);

        use smoltcp::wire::{Icmpv6Message, Icmpv6Packet};
        let theirs = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert!(theirs.verify_checksum(&src, &dst));
        assert_eq!(theirs.msg_type(), Icmpv6Message::PktTooBig);
        assert_eq!(theirs.pkt_too_big_mtu(), 1430);
    }

    #[test]
    fn echo_round_trip() {
        let (src, dst) = addrs();
        let data = [9u8; 7];
        for repr in [
            Repr::EchoRequest { ident: 1, seq_no: 2, data: &data },
            Repr::EchoReply { ident: 3, seq_no: 4, data: &data },
        ] {
            let mut b = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Packet::new_unchecked(&mut b[..]), src, dst);
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(Repr::parse(&p, src, dst).unwrap(), repr);
            let theirs = smoltcp::wire::Icmpv6Packet::new_checked(&b[..]).unwrap();
            assert!(theirs.verify_checksum(&src, &dst));
        }
    }

    #[test]
    fn errors() {
        let (src, dst) = addrs();
        let repr = Repr::PacketTooBig { mtu: 1280, data: &[1, 2, 3] };
        let mut b = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut b[..]), src, dst);
        assert_eq!(Packet::new_checked(&b[..7]).unwrap_err(), Error::Truncated);
        // Wrong pseudo-header address (swapping src and dst would not change the sum).
        let p = Packet::new_checked(&b[..]).unwrap();
        let other: Ipv6Addr = "fd00:77::3".parse().unwrap();
        assert_eq!(Repr::parse(&p, src, other).unwrap_err(), Error::BadChecksum);
        // Neighbour solicitation: valid but not modelled.
        let mut ns = b.clone();
        let mut p = Packet::new_unchecked(&mut ns[..]);
        p.set_msg_type(Message::NeighborSolicit);
        p.fill_checksum(src, dst);
        assert_eq!(
            Repr::parse(&Packet::new_checked(&ns[..]).unwrap(), src, dst).unwrap_err(),
            Error::Unsupported
        );
        for n in 0..=255u8 {
            assert_eq!(u8::from(Message::from(n)), n);
        }
    }
}
