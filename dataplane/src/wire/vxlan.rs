//! VXLAN headers (RFC 7348).
//!
//! ```text
//!  0        8                               32
//!  |R R R R I R R R|      reserved (24)      |
//!  |          VNI (24)             | rsvd (8)|
//! ```
//!
//! RFC 7348 says the reserved bits are sent as zero and *ignored on receipt*, but the Linux
//! VXLAN driver (which flannel uses) drops frames with flag bits it does not understand.
//! [`Repr::parse`] follows Linux: it requires the I flag ([`Error::BadFlags`]) and all
//! reserved bits clear ([`Error::ReservedNonZero`]). A lenient receiver reads
//! [`Packet::i_flag`] and [`Packet::vni`] directly.

use super::{Error, Field, Rest};

mod field {
    use super::{Field, Rest};
    pub const FLAGS: usize = 0;
    pub const RESERVED1: Field = 1..4;
    pub const VNI: Field = 4..7;
    pub const RESERVED2: usize = 7;
    pub const PAYLOAD: Rest = 8..;
}

/// Length of a VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// Bytes VXLAN adds in front of an inner frame over an untagged IPv4 underlay:
/// Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (why flannel's overlay MTU is the underlay's − 50).
pub const OVERHEAD_IPV4: usize = 14 + 20 + 8 + HEADER_LEN;
/// The same over an untagged IPv6 underlay: Ethernet 14 + IPv6 40 + UDP 8 + VXLAN 8.
pub const OVERHEAD_IPV6: usize = 14 + 40 + 8 + HEADER_LEN;
/// The IANA-assigned VXLAN UDP port.
pub const IANA_PORT: u16 = 4789;
/// The port Linux (and so flannel) uses by default.
pub const LINUX_PORT: u16 = 8472;

/// A 24-bit VXLAN network identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Vni(u32);

impl Vni {
    /// The largest VNI.
    pub const MAX: u32 = 0x00ff_ffff;

    /// A VNI, or `None` when `value` does not fit in 24 bits.
    #[inline]
    pub const fn new(value: u32) -> Option<Vni> {
        if value <= Self::MAX {
            Some(Vni(value))
        } else {
            None
        }
    }

    /// The numeric value.
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl From<Vni> for u32 {
    fn from(value: Vni) -> u32 {
        value.0
    }
}

impl core::fmt::Display for Vni {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A read/write view of a VXLAN header and its inner frame.
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

    /// The flags byte (0x08 when only I is set).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Whether the I flag (valid VNI) is set.
    #[inline]
    pub fn i_flag(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// Whether every reserved bit (the seven R flags and both reserved fields) is zero.
    #[inline]
    pub fn reserved_is_zero(&self) -> bool {
        let d = self.buffer.as_ref();
        let reserved1 = d[field::RESERVED1].iter().fold(0, |acc, b| acc | b);
        (d[field::FLAGS] & !FLAG_I) | reserved1 | d[field::RESERVED2] == 0
    }

    /// The 24-bit VNI.
    #[inline]
    pub fn vni(&self) -> Vni {
        let d = self.buffer.as_ref();
        let s = field::VNI.start;
        Vni(u32::from_be_bytes([0, d[s], d[s + 1], d[s + 2]]))
    }

    /// Whether the header is exactly what `Repr { vni }.emit` writes — flags just the I bit,
    /// every reserved bit zero, VNI `vni` — which is what [`Repr::parse`] accepts for that VNI.
    /// One 8-byte compare, for the fast path. A `vni` above 24 bits never matches.
    #[inline]
    pub fn matches(&self, vni: u32) -> bool {
        let d = self.buffer.as_ref();
        let word = u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        word == (u64::from(FLAG_I) << 56) | (u64::from(vni) << 8)
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The inner frame with the buffer's lifetime.
    #[inline]
    pub fn payload_ref(&self) -> &'a [u8] {
        &T::as_ref(self.buffer)[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Zeroes both reserved fields (not the flags).
    #[inline]
    pub fn clear_reserved(&mut self) {
        let d = self.buffer.as_mut();
        d[field::RESERVED1].fill(0);
        d[field::RESERVED2] = 0;
    }

    /// Sets the VNI.
    #[inline]
    pub fn set_vni(&mut self, value: Vni) {
        let b = value.0.to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&b[1..]);
    }

    /// The mutable inner frame.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// The meaning of a VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// The network identifier.
    pub vni: Vni,
}

impl Repr {
    /// Validates the header as the Linux driver does.
    ///
    /// # Errors
    /// [`Error::Truncated`], [`Error::BadFlags`] when I is clear, [`Error::ReservedNonZero`]
    /// when a reserved bit is set.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if !packet.i_flag() {
            return Err(Error::BadFlags);
        }
        if !packet.reserved_is_zero() {
            return Err(Error::ReservedNonZero);
        }
        Ok(Repr { vni: packet.vni() })
    }

    /// Bytes [`Repr::emit`] writes.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes flags 0x08, the VNI and zero reserved fields.
    ///
    /// # Panics
    /// When the buffer is shorter than 8 bytes.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_flags(FLAG_I);
        packet.clear_reserved();
        packet.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The VXLAN header of every frame of the flannel fixture (VNI 1) plus two inner bytes.
    const HEADER: [u8; 10] = [0x08, 0, 0, 0, 0, 0, 0x01, 0, 0x26, 0x69];

    #[test]
    fn parse_fixture_header() {
        let p = Packet::new_checked(&HEADER[..]).unwrap();
        assert_eq!(p.flags(), 0x08);
        assert!(p.i_flag() && p.reserved_is_zero());
        assert_eq!(p.vni().get(), 1);
        assert_eq!(p.payload(), &[0x26, 0x69]);
        assert_eq!(p.payload_ref(), &[0x26, 0x69]);
        assert_eq!(Repr::parse(&p).unwrap(), Repr { vni: Vni::new(1).unwrap() });
    }

    #[test]
    fn emit_round_trip() {
        let repr = Repr { vni: Vni::new(0x00ab_cdef).unwrap() };
        let mut b = [0xffu8; 8];
        repr.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert_eq!(Repr::parse(&Packet::new_checked(&b[..]).unwrap()).unwrap(), repr);
        assert_eq!(repr.buffer_len(), 8);
    }

    #[test]
    fn matches_is_what_parse_accepts() {
        let p = Packet::new_checked(&HEADER[..]).unwrap();
        assert!(p.matches(1));
        assert!(!p.matches(2));
        assert!(!p.matches(1 | 1 << 24), "a VNI above 24 bits never matches");
        for byte in 0..8 {
            for bit in 0..8 {
                let mut b = HEADER;
                b[byte] ^= 1 << bit;
                let p = Packet::new_checked(&b[..]).unwrap();
                let parsed = Repr::parse(&p).ok().map(|r| r.vni.get());
                assert_eq!(p.matches(1), parsed == Some(1), "byte {byte} bit {bit}");
                if let Some(vni) = parsed {
                    assert!(p.matches(vni));
                }
            }
        }
    }

    #[test]
    fn vni_range() {
        assert!(Vni::new(Vni::MAX).is_some());
        assert!(Vni::new(Vni::MAX + 1).is_none());
        assert_eq!(u32::from(Vni::new(7).unwrap()), 7);
    }

    #[test]
    fn bad_headers() {
        assert_eq!(Packet::new_checked(&HEADER[..7]).unwrap_err(), Error::Truncated);
        let mut no_i = HEADER;
        no_i[0] = 0;
        assert_eq!(Repr::parse(&Packet::new_unchecked(&no_i[..])).unwrap_err(), Error::BadFlags);
        for (byte, bit) in [(0, 0x80), (0, 0x01), (1, 0x01), (2, 0x40), (3, 0x02), (7, 0x10)] {
            let mut b = HEADER;
            b[byte] |= bit;
            let p = Packet::new_checked(&b[..]).unwrap();
            assert!(!p.reserved_is_zero(), "byte {byte} bit {bit:#x}");
            assert_eq!(Repr::parse(&p).unwrap_err(), Error::ReservedNonZero);
            assert_eq!(p.vni().get(), 1);
        }
    }
}
