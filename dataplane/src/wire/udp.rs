//! UDP datagrams (RFC 768) and their checksums over the IPv4 and IPv6 pseudo-headers.
//!
//! ```text
//!  0              16             32
//!  |  source port  |   dest port   |
//!  |    length     |   checksum    |
//!  |  payload ...
//! ```
//!
//! [`Packet::new_checked`] guarantees `8 <= length <= buffer length`; [`Packet::payload`] ends
//! at the length field (trailing bytes are ignored).
//!
//! Checksums: over IPv4 a stored checksum of zero means "no checksum" and verifies (VXLAN
//! senders commonly leave it zero, RFC 7348 §5). Over IPv6 zero is not a valid checksum
//! (RFC 8200 §8.1) and [`Packet::verify_checksum_v6`] rejects it; a receiver that accepts
//! zero-checksum tunnel traffic (RFC 6935/6936) checks [`Packet::checksum`] for zero itself.
//! A computed checksum of zero is sent as `0xffff`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::ip::IpProtocol;
use super::{read_u16, write_u16, Error, Field};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// Length of a UDP header.
pub const HEADER_LEN: usize = 8;

/// A read/write view of a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks `8 <= length field <= buffer length`.
    ///
    /// # Errors
    /// [`Error::Truncated`] when the buffer is shorter than 8 bytes or than the length field;
    /// [`Error::BadLength`] when the length field is below 8.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            return Err(Error::BadLength);
        }
        if len < field_len {
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

    /// Length field (header + payload).
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Checksum as stored (zero: none was computed).
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, up to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// The datagram as the length field delimits it.
    #[inline]
    fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.len())]
    }

    /// Verifies the checksum over the IPv4 pseudo-header; a zero checksum ("none") verifies.
    #[inline]
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, self.len());
        checksum::verifies(checksum::add(pseudo, checksum::sum(self.datagram())))
    }

    /// Verifies the checksum over the IPv6 pseudo-header; zero is invalid over IPv6.
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Udp, u32::from(self.len()));
        checksum::verifies(checksum::add(pseudo, checksum::sum(self.datagram())))
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload with the buffer's lifetime.
    #[inline]
    pub fn payload_ref(&self) -> &'a [u8] {
        let data: &'a [u8] = T::as_ref(self.buffer);
        &data[HEADER_LEN..usize::from(read_u16(data, field::LENGTH))]
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

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    /// Sets the stored checksum (zero: none, IPv4 only).
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and stores the checksum over the IPv4 pseudo-header and `len` bytes.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, self.len());
        let c = checksum::finish(checksum::add(pseudo, checksum::sum(self.datagram())));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Computes and stores the checksum over the IPv6 pseudo-header and `len` bytes.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::Udp, u32::from(self.len()));
        let c = checksum::finish(checksum::add(pseudo, checksum::sum(self.datagram())));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Mutable payload, up to the length field.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// Which checksum [`Repr::emit`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumMode {
    /// Store zero: "no checksum" (IPv4 only; RFC 7348's recommendation for VXLAN).
    None,
    /// Compute over the IPv4 or IPv6 pseudo-header of these addresses.
    Compute {
        /// IP source address.
        src: IpAddr,
        /// IP destination address.
        dst: IpAddr,
    },
}

/// The meaning of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Payload length in bytes.
    pub payload_len: usize,
}

impl Repr {
    /// Validates lengths and the checksum over the pseudo-header of `src` → `dst`.
    ///
    /// # Errors
    /// The length errors of [`Packet::check_len`]; [`Error::BadChecksum`] when the checksum
    /// does not verify (zero verifies over IPv4 only); [`Error::Unsupported`] when `src` and
    /// `dst` are of different families.
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
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    /// Bytes of the header [`Repr::emit`] writes (8; the payload is the caller's).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header. The payload must already be in place after the header (emit does
    /// not touch it) when a checksum is computed.
    ///
    /// # Panics
    /// When the buffer is shorter than 8 + `payload_len` bytes, or `payload_len` exceeds
    /// 65527, or `checksum` mixes address families (programming errors).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        checksum: ChecksumMode,
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        let len = u16::try_from(HEADER_LEN + self.payload_len).expect("UDP payload above 65527");
        packet.set_len(len);
        match checksum {
            ChecksumMode::None => packet.set_checksum(0),
            ChecksumMode::Compute { src: IpAddr::V4(s), dst: IpAddr::V4(d) } => {
                packet.fill_checksum_v4(s, d)
            }
            ChecksumMode::Compute { src: IpAddr::V6(s), dst: IpAddr::V6(d) } => {
                packet.fill_checksum_v6(s, d)
            }
            ChecksumMode::Compute { .. } => panic!("UDP checksum over mixed address families"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);

    /// A datagram shaped like the fixture's inner UDP flow: 10.244.1.2:42059 -> 10.244.2.2:9000
    /// with a 15-byte payload (the fixture walk checks the real captured ones).
    fn datagram() -> Vec<u8> {
        let payload = b"hello over vxl\n";
        let repr = Repr { src_port: 42059, dst_port: 9000, payload_len: payload.len() };
        let mut b = vec![0u8; 8 + payload.len()];
        b[8..].copy_from_slice(payload);
        repr.emit(
            &mut Packet::new_unchecked(&mut b[..]),
            ChecksumMode::Compute { src: SRC.into(), dst: DST.into() },
        );
        b
    }

    #[test]
    fn fields_and_checksum_v4() {
        let b = datagram();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (42059, 9000, 23));
        assert_eq!(p.payload(), b"hello over vxl\n");
        assert_eq!(p.payload_ref().len(), 15);
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v4(SRC, Ipv4Addr::new(10, 244, 2, 3)));
        let r = Repr::parse(&p, SRC.into(), DST.into()).unwrap();
        assert_eq!(r, Repr { src_port: 42059, dst_port: 9000, payload_len: 15 });

        // smoltcp computes the same checksum.
        let theirs = smoltcp::wire::UdpPacket::new_checked(&b[..]).unwrap();
        assert!(theirs.verify_checksum(&SRC.into(), &DST.into()));
    }

    #[test]
    fn zero_checksum_is_none_for_v4_only() {
        let mut b = datagram();
        Packet::new_unchecked(&mut b[..]).set_checksum(0);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum_v4(SRC, DST));
        assert!(!p.verify_checksum_v6(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST));
        // emit with None stores zero.
        let mut out = b.clone();
        Repr { src_port: 1, dst_port: 8472, payload_len: 15 }
            .emit(&mut Packet::new_unchecked(&mut out[..]), ChecksumMode::None);
        assert_eq!(Packet::new_unchecked(&out[..]).checksum(), 0);
    }

    #[test]
    fn checksum_v6_round_trip_and_smoltcp_agrees() {
        let s: Ipv6Addr = "fd00:77::1".parse().unwrap();
        let d: Ipv6Addr = "fd00:77::2".parse().unwrap();
        let mut b = [0u8; 8 + 33];
        for (i, x) in b[8..].iter_mut().enumerate() {
            *x = i as u8 * 7;
        }
        let repr = Repr { src_port: 50000, dst_port: 8472, payload_len: 33 };
        repr.emit(
            &mut Packet::new_unchecked(&mut b[..]),
            ChecksumMode::Compute { src: s.into(), dst: d.into() },
        );
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum_v6(s, d));
        assert_eq!(Repr::parse(&p, s.into(), d.into()).unwrap(), repr);
        let theirs = smoltcp::wire::UdpPacket::new_checked(&b[..]).unwrap();
        assert!(theirs.verify_checksum(&s.into(), &d.into()));
        // A corrupted payload byte fails.
        b[20] ^= 1;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p, s.into(), d.into()).unwrap_err(), Error::BadChecksum);
        assert_eq!(Repr::parse(&p, s.into(), DST.into()).unwrap_err(), Error::Unsupported);
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Find a payload word that makes the checksum come out as zero, then check 0xffff.
        let mut b = [0u8; 10];
        let mut p = Packet::new_unchecked(&mut b[..]);
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_len(10);
        p.fill_checksum_v4(SRC, DST);
        let c = p.checksum();
        // Adding the checksum value into the payload word makes the new sum all ones.
        p.payload_mut().copy_from_slice(&c.to_be_bytes());
        p.fill_checksum_v4(SRC, DST);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum_v4(SRC, DST));
    }

    #[test]
    fn length_errors() {
        let b = datagram();
        assert_eq!(Packet::new_checked(&b[..7]).unwrap_err(), Error::Truncated);
        assert_eq!(Packet::new_checked(&b[..22]).unwrap_err(), Error::Truncated);
        let mut bad = b.clone();
        bad[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&bad[..]).unwrap_err(), Error::BadLength);
        // Trailing bytes beyond the length field are ignored.
        let mut long = b.clone();
        long.extend_from_slice(&[1, 2, 3]);
        let p = Packet::new_checked(&long[..]).unwrap();
        assert_eq!(p.payload().len(), 15);
        assert!(p.verify_checksum_v4(SRC, DST));
    }
}
