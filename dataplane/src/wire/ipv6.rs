//! IPv6 fixed headers (RFC 8200 §3).
//!
//! ```text
//!  0       4               12                               32
//!  |version| traffic class |           flow label            |
//!  |        payload length         |  next header  | hop limit |
//!  |                  source address (128)                     |
//!  |               destination address (128)                   |
//! ```
//!
//! Extension headers are not walked: [`Packet::next_header`] is the first one, and the
//! payload includes any extension headers. [`Packet::new_checked`] guarantees
//! `40 + payload length <= buffer length`; bytes beyond that are not part of
//! [`Packet::payload`]. Jumbograms (payload length 0 with a hop-by-hop jumbo option) are not
//! supported: a payload length of zero means an empty payload.

use std::net::Ipv6Addr;

use super::ip::IpProtocol;
use super::{read_ipv6, read_u16, read_u32, write_u16, write_u32, Error, Field};

mod field {
    use super::Field;
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// The minimum link MTU every IPv6 link must carry (RFC 8200 §5).
pub const MIN_MTU: usize = 1280;

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks `40 + payload length <= buffer length`.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than the fixed header or than the
    /// payload length says.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Version nibble (6 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class.
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) >> 20) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }

    /// Payload length (extension headers included).
    #[inline]
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The first next-header value.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    /// The first next header's number as on the wire (for the fast path; see
    /// `ipv4::Packet::protocol_raw`).
    #[inline]
    pub fn next_header_raw(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        read_ipv6(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// The payload (extension headers included), up to the payload length.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buffer.as_ref()[HEADER_LEN..end]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload with the buffer's lifetime.
    #[inline]
    pub fn payload_ref(&self) -> &'a [u8] {
        let data: &'a [u8] = T::as_ref(self.buffer);
        &data[HEADER_LEN..HEADER_LEN + usize::from(read_u16(data, field::LENGTH))]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn update_first_word(&mut self, mask: u32, bits: u32) {
        let old = read_u32(self.buffer.as_ref(), field::VER_TC_FLOW);
        write_u32(self.buffer.as_mut(), field::VER_TC_FLOW, (old & !mask) | (bits & mask));
    }

    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        self.update_first_word(0xf000_0000, u32::from(value) << 28);
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, value: u8) {
        self.update_first_word(0x0ff0_0000, u32::from(value) << 20);
    }

    /// Sets the flow label (masked to 20 bits).
    #[inline]
    pub fn set_flow_label(&mut self, value: u32) {
        self.update_first_word(0x000f_ffff, value);
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = value.into();
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = value;
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// Mutable payload, up to the payload length.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The meaning of an IPv6 fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv6Addr,
    /// Destination address.
    pub dst_addr: Ipv6Addr,
    /// First next header.
    pub next_header: IpProtocol,
    /// Payload length.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Repr {
    /// Validates lengths and the version.
    ///
    /// # Errors
    /// [`Error::Truncated`] and [`Error::BadVersion`].
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.version() != 6 {
            return Err(Error::BadVersion);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.payload_len()),
            hop_limit: packet.hop_limit(),
            traffic_class: packet.traffic_class(),
            flow_label: packet.flow_label(),
        })
    }

    /// Bytes [`Repr::emit`] writes (40).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the fixed header.
    ///
    /// # Panics
    /// When the buffer is shorter than 40 bytes or `payload_len` exceeds 65535 (programming
    /// errors).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version(6);
        packet.set_traffic_class(self.traffic_class);
        packet.set_flow_label(self.flow_label);
        let len = u16::try_from(self.payload_len).expect("IPv6 payload above 65535");
        packet.set_payload_len(len);
        packet.set_next_header(self.next_header);
        packet.set_hop_limit(self.hop_limit);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> Repr {
        Repr {
            src_addr: "fd00:244:1::2".parse().unwrap(),
            dst_addr: "fd00:244:2::2".parse().unwrap(),
            next_header: IpProtocol::Udp,
            payload_len: 12,
            hop_limit: 63,
            traffic_class: 0xb8,
            flow_label: 0x5_4321,
        }
    }

    // Header bytes written out by hand for repr().
    const BYTES: [u8; 40] = [
        0x6b, 0x85, 0x43, 0x21, 0x00, 0x0c, 0x11, 0x3f, 0xfd, 0x00, 0x02, 0x44, 0x00, 0x01, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0x02, 0xfd, 0x00, 0x02, 0x44, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x02,
    ];

    #[test]
    fn emit_matches_hand_written_bytes_and_parses_back() {
        let mut b = [0u8; 52];
        repr().emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(&b[..40], &BYTES[..]);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x5_4321);
        assert_eq!(p.payload().len(), 12);
        assert_eq!(p.payload_ref().len(), 12);
        assert_eq!(Repr::parse(&p).unwrap(), repr());
        assert_eq!(repr().buffer_len(), 40);

        let theirs = smoltcp::wire::Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(theirs.next_header(), smoltcp::wire::IpProtocol::Udp);
        assert_eq!(theirs.hop_limit(), 63);
        assert_eq!(theirs.flow_label(), 0x5_4321);
        assert_eq!(theirs.src_addr(), repr().src_addr);
    }

    #[test]
    fn setters_do_not_disturb_neighbours() {
        let mut b = BYTES;
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_flow_label(0xffff_ffff);
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0xb8, 0xf_ffff));
        p.set_traffic_class(0);
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0, 0xf_ffff));
        p.set_next_header(IpProtocol::Unknown(253));
        assert_eq!(p.next_header(), IpProtocol::Unknown(253));
    }

    #[test]
    fn errors() {
        let mut b = vec![0u8; 52];
        repr().emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(Packet::new_checked(&b[..39]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&b[..51]).unwrap_err(), Error::Truncated);
        // Trailing bytes are allowed and excluded.
        b.push(0);
        assert_eq!(Packet::new_checked(&b[..]).unwrap().payload().len(), 12);
        b[0] = 0x45;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap_err(),
            Error::BadVersion
        );
    }
}
