//! TCP segment headers (RFC 9293) and their checksums over the IPv4 and IPv6 pseudo-headers.
//!
//! ```text
//!  0              16             32
//!  |  source port  |   dest port   |
//!  |        sequence number        |
//!  |     acknowledgment number     |
//!  |off|rsv|flags  |    window     |
//!  |   checksum    | urgent pointer|
//!  |  options (data offset > 5) ...
//!  |  payload ...
//! ```
//!
//! TCP has no length field: a view covers exactly one segment, so slice the IP payload to it
//! (the IPv4 total length or IPv6 payload length says where it ends). The checksum and
//! [`Packet::payload`] run to the end of the buffer.
//!
//! [`Packet::new_checked`] guarantees `20 <= data offset × 4 <= buffer length`. linen never
//! terminates TCP: it reads and rewrites fields of segments in place (sequence numbers, flags,
//! checksums when it cuts a large segment into MSS-sized ones), so [`Repr`] keeps the fixed
//! header's fields and not the options, like IPv4's.
//!
//! The flags are one byte ([`Packet::flags`], the `FLAG_*` constants) so that a segment's
//! flags are read and rewritten in one access. The bit before CWR (the former ECN nonce, RFC
//! 3540, now historic) is one of the reserved bits and is left as found.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::ip::IpProtocol;
use super::{read_u16, read_u32, write_u16, write_u32, Error, Field};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;
/// Length of the longest TCP header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;

/// No more data from the sender.
pub const FLAG_FIN: u8 = 0x01;
/// Synchronize sequence numbers.
pub const FLAG_SYN: u8 = 0x02;
/// Reset the connection.
pub const FLAG_RST: u8 = 0x04;
/// Push: deliver the data to the application without waiting.
pub const FLAG_PSH: u8 = 0x08;
/// The acknowledgment number is valid.
pub const FLAG_ACK: u8 = 0x10;
/// The urgent pointer is valid.
pub const FLAG_URG: u8 = 0x20;
/// ECN-Echo (RFC 3168).
pub const FLAG_ECE: u8 = 0x40;
/// Congestion window reduced (RFC 3168).
pub const FLAG_CWR: u8 = 0x80;

/// A read/write view of one TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks `20 <= data offset × 4 <= buffer length`.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 20 bytes or than the header with
    /// its options; [`Error::BadHeaderLen`] when the data offset is below 5.
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

    /// Sequence number (of the first payload byte; of the SYN on a SYN segment).
    #[inline]
    pub fn seq_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ_NUM)
    }

    /// Acknowledgment number (meaningful when [`FLAG_ACK`] is set).
    #[inline]
    pub fn ack_number(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::ACK_NUM)
    }

    /// Header length in bytes (data offset × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The flags byte: CWR, ECE, URG, ACK, PSH, RST, SYN, FIN (the `FLAG_*` constants).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Window size (unscaled, as on the wire).
    #[inline]
    pub fn window(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer (meaningful when [`FLAG_URG`] is set).
    #[inline]
    pub fn urgent_ptr(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// The options (empty when the data offset is 5).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload: from the end of the header to the end of the buffer.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Verifies the checksum over the IPv4 pseudo-header and the whole buffer.
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let data = self.buffer.as_ref();
        let Ok(len) = u16::try_from(data.len()) else {
            return false;
        };
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, len);
        checksum::verifies(checksum::add(pseudo, checksum::sum(data)))
    }

    /// Verifies the checksum over the IPv6 pseudo-header and the whole buffer.
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let data = self.buffer.as_ref();
        let Ok(len) = u32::try_from(data.len()) else {
            return false;
        };
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Tcp, len);
        checksum::verifies(checksum::add(pseudo, checksum::sum(data)))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload with the buffer's lifetime.
    #[inline]
    pub fn payload_ref(&self) -> &'a [u8] {
        let data: &'a [u8] = T::as_ref(self.buffer);
        &data[usize::from(data[field::DATA_OFF] >> 4) * 4..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ_NUM, value);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::ACK_NUM, value);
    }

    /// Sets the header length in bytes (a multiple of 4, 20 to 60); the reserved bits beside
    /// the data offset are kept.
    #[inline]
    pub fn set_header_len(&mut self, value: usize) {
        let b = &mut self.buffer.as_mut()[field::DATA_OFF];
        *b = (*b & 0x0f) | (((value / 4) as u8) << 4);
    }

    /// Sets the flags byte (the `FLAG_*` constants).
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the window size.
    #[inline]
    pub fn set_window(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WINDOW, value);
    }

    /// Sets the stored checksum.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_ptr(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT, value);
    }

    /// Mutable options.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Mutable payload (header end to buffer end).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }

    /// Computes and stores the checksum over the IPv4 pseudo-header and the whole buffer.
    ///
    /// # Panics
    /// When the buffer is longer than 65535 bytes (a segment cannot be).
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let len = u16::try_from(data.len()).expect("TCP segment above 65535 bytes");
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, len);
        let c = checksum::finish(checksum::add(pseudo, checksum::sum(data)));
        self.set_checksum(c);
    }

    /// Computes and stores the checksum over the IPv6 pseudo-header and the whole buffer.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let len = u32::try_from(data.len()).expect("TCP segment above 4 GiB");
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Tcp, len);
        let c = checksum::finish(checksum::add(pseudo, checksum::sum(data)));
        self.set_checksum(c);
    }
}

/// The meaning of a TCP header's fixed part. Options are not represented: [`Repr::emit`]
/// writes a 20-byte header, and [`Repr::parse`] accepts options but does not keep them (read
/// them from [`Packet::options`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// The flags byte (`FLAG_*`).
    pub flags: u8,
    /// Window size.
    pub window: u16,
    /// Urgent pointer.
    pub urgent_ptr: u16,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Repr {
    /// Validates lengths and the checksum over the pseudo-header of `src` → `dst`.
    ///
    /// # Errors
    /// The length errors of [`Packet::check_len`]; [`Error::BadChecksum`] when the checksum
    /// does not verify; [`Error::Unsupported`] when `src` and `dst` are of different families.
    pub fn parse<T: AsRef<[u8]>>(
        packet: &Packet<T>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Repr, Error> {
        packet.check_len()?;
        let ok = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => packet.verify_checksum_v4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => packet.verify_checksum_v6(s, d),
            _ => return Err(Error::Unsupported),
        };
        if !ok {
            return Err(Error::BadChecksum);
        }
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window: packet.window(),
            urgent_ptr: packet.urgent_ptr(),
            payload_len: packet.payload().len(),
        })
    }

    /// Bytes of the header [`Repr::emit`] writes (20; the payload is the caller's).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header and the checksum over the pseudo-header of `src` → `dst`. The
    /// buffer must be exactly the segment, with the payload already in place after the header.
    ///
    /// # Panics
    /// When the buffer is not 20 + `payload_len` bytes long, or `src` and `dst` mix address
    /// families (programming errors).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: IpAddr,
        dst: IpAddr,
    ) {
        assert_eq!(packet.buffer.as_ref().len(), HEADER_LEN + self.payload_len, "segment length");
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        packet.buffer.as_mut()[field::DATA_OFF] = (HEADER_LEN as u8 / 4) << 4;
        packet.set_flags(self.flags);
        packet.set_window(self.window);
        packet.set_urgent_ptr(self.urgent_ptr);
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => packet.fill_checksum_v4(s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => packet.fill_checksum_v6(s, d),
            _ => panic!("TCP checksum over mixed address families"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);

    /// A SYN with MSS and SACK-permitted options, 10.244.1.2:41234 -> 10.244.2.2:5201, written
    /// out by hand (checksum filled in by the test).
    fn syn() -> Vec<u8> {
        let mut b = vec![
            0xa1, 0x12, 0x14, 0x51, // ports 41234 -> 5201
            0x12, 0x34, 0x56, 0x78, // seq
            0x00, 0x00, 0x00, 0x00, // ack
            0x70, 0x02, 0xfa, 0xf0, // data offset 7, SYN, window 64240
            0x00, 0x00, 0x00, 0x00, // checksum, urgent pointer
            0x02, 0x04, 0x05, 0x8a, // MSS 1418
            0x04, 0x02, 0x01, 0x01, // SACK permitted, NOP, NOP
        ];
        Packet::new_unchecked(&mut b[..]).fill_checksum_v4(SRC, DST);
        b
    }

    #[test]
    fn fields_and_options() {
        let b = syn();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (41234, 5201));
        assert_eq!((p.seq_number(), p.ack_number()), (0x1234_5678, 0));
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.flags(), FLAG_SYN);
        assert_eq!((p.window(), p.urgent_ptr()), (64240, 0));
        assert_eq!(p.options(), &[0x02, 0x04, 0x05, 0x8a, 0x04, 0x02, 0x01, 0x01]);
        assert!(p.payload().is_empty() && p.payload_ref().is_empty());
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v4(SRC, Ipv4Addr::new(10, 244, 2, 3)));

        // smoltcp reads the same fields and accepts the checksum.
        let theirs = smoltcp::wire::TcpPacket::new_checked(&b[..]).unwrap();
        assert!(theirs.syn() && !theirs.ack() && !theirs.fin());
        assert_eq!(theirs.header_len(), 28);
        assert_eq!(theirs.seq_number(), smoltcp::wire::TcpSeqNumber(0x1234_5678));
        assert!(theirs.verify_checksum(&SRC.into(), &DST.into()));
    }

    #[test]
    fn flags_are_one_byte_and_setters_keep_neighbours() {
        let mut b = syn();
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_flags(FLAG_ACK | FLAG_PSH | FLAG_FIN | FLAG_CWR);
        p.set_flags(p.flags() & !(FLAG_PSH | FLAG_FIN));
        assert_eq!(p.flags(), FLAG_ACK | FLAG_CWR);
        assert_eq!(p.header_len(), 28);
        p.set_header_len(20);
        assert_eq!((p.header_len(), p.flags(), p.window()), (20, FLAG_ACK | FLAG_CWR, 64240));
        p.set_seq_number(u32::MAX);
        p.set_ack_number(7);
        assert_eq!((p.seq_number(), p.ack_number(), p.src_port()), (u32::MAX, 7, 41234));
        let theirs = smoltcp::wire::TcpPacket::new_checked(&b[..]).unwrap();
        assert!(theirs.ack() && theirs.cwr() && !theirs.psh() && !theirs.fin());
    }

    #[test]
    fn repr_round_trip_v4_and_v6() {
        let s6: Ipv6Addr = "fd00:244:1::2".parse().unwrap();
        let d6: Ipv6Addr = "fd00:244:2::2".parse().unwrap();
        let repr = Repr {
            src_port: 5201,
            dst_port: 41234,
            seq_number: 0xfedc_ba98,
            ack_number: 0x1234_5679,
            flags: FLAG_ACK | FLAG_PSH,
            window: 502,
            urgent_ptr: 0,
            payload_len: 37,
        };
        for (src, dst) in [(IpAddr::from(SRC), IpAddr::from(DST)), (s6.into(), d6.into())] {
            let mut b = [0u8; 20 + 37];
            for (i, x) in b[20..].iter_mut().enumerate() {
                *x = (i * 13) as u8;
            }
            repr.emit(&mut Packet::new_unchecked(&mut b[..]), src, dst);
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(Repr::parse(&p, src, dst).unwrap(), repr);
            assert_eq!(p.payload().len(), 37);
            let theirs = smoltcp::wire::TcpPacket::new_checked(&b[..]).unwrap();
            assert!(theirs.verify_checksum(&src.into(), &dst.into()));
            // One payload bit flipped fails the checksum.
            b[40] ^= 0x10;
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(Repr::parse(&p, src, dst).unwrap_err(), Error::BadChecksum);
        }
        let b = syn();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p, SRC.into(), s6.into()).unwrap_err(), Error::Unsupported);
    }

    #[test]
    fn length_errors() {
        let b = syn();
        assert_eq!(Packet::new_checked(&b[..19]).unwrap_err(), Error::Truncated);
        // Data offset 7 (28 bytes) in a 24-byte buffer.
        assert_eq!(Packet::new_checked(&b[..24]).unwrap_err(), Error::Truncated);
        let mut bad = b.clone();
        bad[12] = 0x40; // data offset 4
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::BadHeaderLen);
    }
}
