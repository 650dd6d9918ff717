//! IPv4 headers (RFC 791), options included.
//!
//! ```text
//!  0       4       8               16    19                        32
//!  |version|  IHL  |  DSCP  |ECN  |         total length           |
//!  |         identification       |flags|    fragment offset       |
//!  |      TTL      |   protocol    |        header checksum         |
//!  |                       source address                           |
//!  |                    destination address                         |
//!  |                 options (IHL > 5) ...                          |
//! ```
//!
//! [`Packet::new_checked`] guarantees `20 <= IHL*4 <= total length <= buffer length`, so the
//! header, its options and the payload are all inside the buffer. Bytes beyond the total
//! length (Ethernet padding) are not part of [`Packet::payload`]. The version nibble and the
//! checksum are validated by [`Repr::parse`] (or by the caller through [`Packet::version`] and
//! [`Packet::verify_checksum`]).

use std::net::Ipv4Addr;

use super::checksum;
use super::ip::IpProtocol;
use super::{read_ipv4, read_u16, write_u16, Error, Field};

mod field {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;
/// Length of the longest IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// A read/write view of an IPv4 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks `20 <= header length <= total length <= buffer length`.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 20 bytes, the header length or the
    /// total length; [`Error::BadHeaderLen`] when IHL < 5; [`Error::BadLength`] when the total
    /// length is below the header length.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = self.header_len();
        if header_len < HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        if len < header_len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::BadLength);
        }
        if len < total_len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Version nibble (4 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Differentiated services code point.
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// Explicit congestion notification bits.
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// Total length (header + payload) in bytes.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// The reserved (evil) bit of the flags field.
    #[inline]
    pub fn reserved_flag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & 0x8000 != 0
    }

    /// Fragment offset in bytes (the field × 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & OFFSET_MASK) << 3
    }

    /// Whether this packet is a fragment (MF set or a non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The payload's protocol.
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The payload's protocol number as on the wire: for the fast path, which indexes tables
    /// and hashes with it (converting [`Packet::protocol`] back to a number costs a jump table).
    #[inline]
    pub fn protocol_raw(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// Whether the header checksum (over the whole header, options included) verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(checksum::sum(&self.buffer.as_ref()[..self.header_len()]))
    }

    /// The options (empty when IHL is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload: from the end of the header to the total length (padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload with the buffer's lifetime (so a view of the next header can outlive this
    /// view).
    #[inline]
    pub fn payload_ref(&self) -> &'a [u8] {
        let data: &'a [u8] = T::as_ref(self.buffer);
        let end = usize::from(read_u16(data, field::LENGTH));
        &data[self.header_len()..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (value << 4);
    }

    /// Sets the header length in bytes (a multiple of 4, 20 to 60).
    #[inline]
    pub fn set_header_len(&mut self, value: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((value / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP.
    #[inline]
    pub fn set_dscp(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (value << 2);
    }

    /// Sets the ECN bits.
    #[inline]
    pub fn set_ecn(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (value & 0x03);
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    /// Clears the flags and the fragment offset.
    #[inline]
    pub fn clear_flags(&mut self) {
        write_u16(self.buffer.as_mut(), field::FLG_OFF, 0);
    }

    fn update_flg_off(&mut self, mask: u16, bits: u16) {
        let old = read_u16(self.buffer.as_ref(), field::FLG_OFF);
        write_u16(self.buffer.as_mut(), field::FLG_OFF, (old & !mask) | (bits & mask));
    }

    /// Sets or clears don't-fragment.
    #[inline]
    pub fn set_dont_frag(&mut self, value: bool) {
        self.update_flg_off(FLAG_DF, if value { FLAG_DF } else { 0 });
    }

    /// Sets or clears more-fragments.
    #[inline]
    pub fn set_more_frags(&mut self, value: bool) {
        self.update_flg_off(FLAG_MF, if value { FLAG_MF } else { 0 });
    }

    /// Sets the fragment offset in bytes (must be a multiple of 8).
    #[inline]
    pub fn set_frag_offset(&mut self, value: u16) {
        self.update_flg_off(OFFSET_MASK, value >> 3);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = value.into();
    }

    /// Sets the stored checksum.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// Computes and stores the header checksum (over `header_len` bytes, options included).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }

    /// Mutable options.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Mutable payload (header end to total length).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[start..end]
    }
}

/// The meaning of an IPv4 header. Options are not represented: [`Repr::emit`] writes a 20-byte
/// header, and [`Repr::parse`] accepts options but does not keep them (read them from
/// [`Packet::options`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source address.
    pub src_addr: Ipv4Addr,
    /// Destination address.
    pub dst_addr: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Payload length (total length − header length).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
    /// DSCP.
    pub dscp: u8,
    /// ECN bits.
    pub ecn: u8,
}

impl Repr {
    /// Validates a packet: lengths, version 4 and the header checksum.
    ///
    /// # Errors
    /// The length errors of [`Packet::check_len`], [`Error::BadVersion`] and
    /// [`Error::BadChecksum`].
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(Error::BadVersion);
        }
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            payload_len: usize::from(packet.total_len()) - packet.header_len(),
            ttl: packet.ttl(),
            ident: packet.ident(),
            dont_frag: packet.dont_frag(),
            more_frags: packet.more_frags(),
            frag_offset: packet.frag_offset(),
            dscp: packet.dscp(),
            ecn: packet.ecn(),
        })
    }

    /// Bytes [`Repr::emit`] writes (always 20: no options).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header with the checksum filled in.
    ///
    /// # Panics
    /// When the buffer is shorter than 20 bytes or `payload_len` exceeds 65515 (programming
    /// errors).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version(4);
        packet.set_header_len(HEADER_LEN);
        packet.set_dscp(self.dscp);
        packet.set_ecn(self.ecn);
        let total = u16::try_from(HEADER_LEN + self.payload_len).expect("IPv4 payload above 65515");
        packet.set_total_len(total);
        packet.set_ident(self.ident);
        packet.clear_flags();
        packet.set_dont_frag(self.dont_frag);
        packet.set_more_frags(self.more_frags);
        packet.set_frag_offset(self.frag_offset);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Outer IPv4 header + 4 payload bytes of frame 1 of the flannel fixture
    /// (192.168.77.1 -> .2, id 2607, TTL 64, DF clear, UDP, total length 134).
    fn outer_header() -> Vec<u8> {
        let mut b = vec![
            0x45, 0x00, 0x00, 0x86, 0x0a, 0x2f, 0x00, 0x00, 0x40, 0x11, 0x00, 0x00, 192, 168, 77,
            1, 192, 168, 77, 2,
        ];
        let c = checksum::checksum(&b);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b.resize(134, 0xab);
        b
    }

    #[test]
    fn parse_fields() {
        let b = outer_header();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 134);
        assert_eq!(p.ident(), 2607);
        assert!(!p.dont_frag() && !p.more_frags() && !p.is_fragment() && !p.reserved_flag());
        assert_eq!(p.frag_offset(), 0);
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), IpProtocol::Udp);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 77, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 168, 77, 2));
        assert!(p.verify_checksum());
        assert!(p.options().is_empty());
        assert_eq!(p.payload().len(), 114);
        assert_eq!(p.payload_ref().len(), 114);
        let r = Repr::parse(&p).unwrap();
        assert_eq!(r.payload_len, 114);
        assert_eq!(r.buffer_len(), 20);
    }

    #[test]
    fn emit_round_trip_and_smoltcp_agrees() {
        let repr = Repr {
            src_addr: Ipv4Addr::new(10, 244, 1, 2),
            dst_addr: Ipv4Addr::new(10, 244, 2, 2),
            protocol: IpProtocol::Icmp,
            payload_len: 64,
            ttl: 63,
            ident: 57117,
            dont_frag: true,
            more_frags: false,
            frag_offset: 0,
            dscp: 10,
            ecn: 1,
        };
        let mut b = [0u8; 84];
        repr.emit(&mut Packet::new_unchecked(&mut b[..]));
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), repr);

        let theirs = smoltcp::wire::Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(theirs.verify_checksum());
        assert_eq!(theirs.checksum(), p.checksum());
        assert_eq!(theirs.hop_limit(), 63);
        assert!(theirs.dont_frag());
        assert_eq!(theirs.src_addr(), repr.src_addr);
    }

    #[test]
    fn options_and_fragments() {
        // IHL 6 with a 4-byte option (router alert), MF set, offset 1480.
        let mut b = [0u8; 40];
        {
            let mut p = Packet::new_unchecked(&mut b[..]);
            p.set_version(4);
            p.set_header_len(24);
            p.set_total_len(40);
            p.set_more_frags(true);
            p.set_frag_offset(1480);
            p.set_ttl(1);
            p.set_protocol(IpProtocol::Unknown(253));
            p.options_mut().copy_from_slice(&[0x94, 0x04, 0x00, 0x00]);
            p.payload_mut().fill(7);
            p.fill_checksum();
        }
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0, 0]);
        assert!(p.more_frags() && p.is_fragment() && !p.dont_frag());
        assert_eq!(p.frag_offset(), 1480);
        assert_eq!(p.protocol(), IpProtocol::Unknown(253));
        assert_eq!(p.payload(), &[7u8; 16]);
        assert!(p.verify_checksum());
        let r = Repr::parse(&p).unwrap();
        assert_eq!((r.payload_len, r.frag_offset, r.more_frags), (16, 1480, true));
        let theirs = smoltcp::wire::Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(theirs.verify_checksum());
        assert_eq!(theirs.frag_offset(), 1480);
    }

    #[test]
    fn setter_flags_are_independent() {
        let mut b = outer_header();
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_frag_offset(8 * 100);
        p.set_dont_frag(true);
        p.set_more_frags(true);
        p.set_dont_frag(false);
        assert!(!p.dont_frag() && p.more_frags());
        assert_eq!(p.frag_offset(), 800);
        p.clear_flags();
        assert!(!p.is_fragment());
    }

    #[test]
    fn length_errors() {
        let b = outer_header();
        assert_eq!(Packet::new_checked(&b[..19]).unwrap_err(), Error::Truncated);
        // Total length 134 but only 133 bytes.
        assert_eq!(Packet::new_checked(&b[..133]).unwrap_err(), Error::Truncated);
        // Ethernet padding after the total length is fine and excluded from the payload.
        let mut padded = b.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(Packet::new_checked(&padded[..]).unwrap().payload().len(), 114);

        let mut bad = b.clone();
        bad[0] = 0x44; // IHL 4
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::BadHeaderLen);
        let mut bad = b.clone();
        bad[0] = 0x4f; // IHL 15 = 60 bytes; fits in 134 but total length below it:
        bad[2..4].copy_from_slice(&40u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::BadLength);
        // IHL 15 with only 40 bytes of buffer.
        assert_eq!(Packet::new_checked(&bad[..40]).unwrap_err(), Error::Truncated);
        let mut bad = b.clone();
        bad[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::BadLength);
    }

    #[test]
    fn meaning_errors() {
        let b = outer_header();
        let mut v6 = b.clone();
        v6[0] = 0x65;
        assert_eq!(
            Repr::parse(&Packet::new_checked(&v6[..]).unwrap()).unwrap_err(),
            Error::BadVersion
        );
        let mut bad_sum = b.clone();
        bad_sum[8] = 63; // TTL changed without updating the checksum
        let p = Packet::new_checked(&bad_sum[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Repr::parse(&p).unwrap_err(), Error::BadChecksum);
        // Repr::parse re-checks lengths even on an unchecked view.
        assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..100])).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn incremental_ttl_update_matches_fill() {
        let mut b = outer_header();
        let mut p = Packet::new_unchecked(&mut b[..]);
        let old_word = u16::from_be_bytes([p.ttl(), 17]);
        p.set_ttl(63);
        let c = checksum::update16(p.checksum(), old_word, u16::from_be_bytes([63, 17]));
        p.set_checksum(c);
        assert!(p.verify_checksum());
    }
}
