//! Ethernet II frames with up to two VLAN tags (802.1Q, and 802.1ad "QinQ" with an outer
//! 0x88a8 S-tag).
//!
//! ```text
//!  0      6      12          14 (untagged)   18 (one tag)        22 (two tags)
//!  | dst  | src  | EtherType  | payload ...
//!  | dst  | src  | TPID | TCI | EtherType | payload ...
//!  | dst  | src  | TPID | TCI | TPID | TCI | EtherType | payload ...
//! ```
//!
//! A tag is recognised when the EtherType field holds a TPID (0x8100 or 0x88a8); at most two
//! tags are parsed. [`Frame::inner_ethertype`] is the EtherType after the tags and
//! [`Frame::header_len`] (= [`Frame::l3_offset`]) is where the L3 header starts. A frame with
//! three or more tags reports the third TPID as its inner EtherType, which callers treat as
//! "not IP".
//!
//! Untrusted frames go through [`Frame::new_checked`]: it guarantees the buffer holds every tag
//! the frame announces. Frames being built use [`Frame::new_unchecked`] and [`Repr::emit`].

use super::{read_u16, write_u16, Error, Field, Rest};

mod field {
    use super::{Field, Rest};
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag (TPID + TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Largest header this view parses (two tags).
pub const MAX_HEADER_LEN: usize = HEADER_LEN + 2 * VLAN_TAG_LEN;

/// An EtherType (or TPID) value. Unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EtherType {
    /// IPv4 (0x0800).
    Ipv4,
    /// ARP (0x0806).
    Arp,
    /// 802.1Q VLAN tag, C-tag (0x8100).
    Vlan,
    /// IPv6 (0x86dd).
    Ipv6,
    /// 802.1ad service tag, S-tag (0x88a8).
    QinQ,
    /// Any other value.
    Unknown(u16),
}

impl EtherType {
    /// Whether this value introduces a VLAN tag.
    #[inline]
    pub fn is_tpid(self) -> bool {
        matches!(self, EtherType::Vlan | EtherType::QinQ)
    }
}

impl From<u16> for EtherType {
    #[inline]
    fn from(value: u16) -> Self {
        match value {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x86dd => EtherType::Ipv6,
            0x88a8 => EtherType::QinQ,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    #[inline]
    fn from(value: EtherType) -> Self {
        match value {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::Ipv6 => 0x86dd,
            EtherType::QinQ => 0x88a8,
            EtherType::Unknown(other) => other,
        }
    }
}

impl core::fmt::Display for EtherType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "0x{:04x}", u16::from(*self))
    }
}

/// A 48-bit MAC address: linen's one MAC type, for packets, leases, kernel state and the CNI
/// plugin alike.
///
/// Text form: [`Display`](core::fmt::Display) writes six lowercase two-digit hex octets
/// separated by `:` (as `ip` and Go's `net.HardwareAddr`, and so flanneld's `VtepMAC`, print
/// them). [`FromStr`](core::str::FromStr) reads six two-digit hex octets in either case,
/// separated all by `:` or all by `-`; anything else (a sign, one or three digits, a missing or
/// extra octet, mixed separators, surrounding space) is a [`ParseMacError`].
///
/// ```
/// use linen_dataplane::wire::MacAddr;
///
/// let mac: MacAddr = "C6-D2-32-6F-8F-44".parse().unwrap();
/// assert_eq!(mac.to_string(), "c6:d2:32:6f:8f:44");
/// assert!("c6:d2:32:6f:8f:+4".parse::<MacAddr>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Reads an address from exactly six bytes.
    ///
    /// # Panics
    /// When `data` is not six bytes long (a programming error: views pass fixed fields).
    #[inline]
    pub fn from_bytes(data: &[u8]) -> MacAddr {
        let mut octets = [0u8; 6];
        octets.copy_from_slice(data);
        MacAddr(octets)
    }

    /// The six octets.
    #[inline]
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// ff:ff:ff:ff:ff:ff.
    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Group bit set (broadcast included).
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Neither multicast nor broadcast.
    #[inline]
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// Locally administered bit set (as for the random MACs of VXLAN and veth devices).
    #[inline]
    pub fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> MacAddr {
        MacAddr(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> [u8; 6] {
        mac.0
    }
}

impl TryFrom<&[u8]> for MacAddr {
    type Error = ParseMacError;

    /// An address from a hardware-address attribute (netlink's `IFLA_ADDRESS`): exactly six
    /// bytes, else [`ParseMacError`].
    fn try_from(bytes: &[u8]) -> Result<MacAddr, ParseMacError> {
        bytes.try_into().map(MacAddr).map_err(|_| ParseMacError)
    }
}

impl core::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

/// Error parsing a MAC address (see [`MacAddr`] for the accepted forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address: expected six two-digit hex octets separated by ':' or '-'")]
pub struct ParseMacError;

impl core::str::FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // "xx:xx:xx:xx:xx:xx": 17 bytes, a separator after every octet but the last. Digits
        // are checked one by one: `u8::from_str_radix` would also take a sign ("+a").
        let b: &[u8; 17] = s.as_bytes().try_into().map_err(|_| ParseMacError)?;
        let sep = b[2];
        if sep != b':' && sep != b'-' {
            return Err(ParseMacError);
        }
        let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8).ok_or(ParseMacError);
        let mut out = [0u8; 6];
        for (i, octet) in out.iter_mut().enumerate() {
            let at = 3 * i;
            if i > 0 && b[at - 1] != sep {
                return Err(ParseMacError);
            }
            *octet = digit(b[at])? << 4 | digit(b[at + 1])?;
        }
        Ok(MacAddr(out))
    }
}

/// One VLAN tag: the TPID that introduced it and its 16-bit TCI (PCP, DEI, VID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// The tag protocol identifier (0x8100 C-tag or 0x88a8 S-tag).
    pub tpid: EtherType,
    /// Tag control information as on the wire.
    pub tci: u16,
}

impl VlanTag {
    /// A tag from its parts; `vid` is masked to 12 bits and `pcp` to 3.
    #[inline]
    pub fn new(tpid: EtherType, pcp: u8, dei: bool, vid: u16) -> VlanTag {
        let tci = (u16::from(pcp & 0x7) << 13) | (u16::from(dei) << 12) | (vid & 0x0fff);
        VlanTag { tpid, tci }
    }

    /// VLAN identifier (12 bits).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci & 0x0fff
    }

    /// Priority code point (3 bits).
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci & 0x1000 != 0
    }
}

/// The VLAN tags of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Vlan {
    /// Untagged.
    #[default]
    None,
    /// One tag (usually an 802.1Q C-tag).
    Single(VlanTag),
    /// Two tags: the outer (usually an 802.1ad S-tag, 0x88a8) and the inner (C-tag).
    Double {
        /// The first tag on the wire.
        outer: VlanTag,
        /// The second tag on the wire.
        inner: VlanTag,
    },
}

impl Vlan {
    /// Number of tags (0, 1 or 2).
    #[inline]
    pub fn count(&self) -> usize {
        match self {
            Vlan::None => 0,
            Vlan::Single(_) => 1,
            Vlan::Double { .. } => 2,
        }
    }

    /// The innermost tag, which carries the customer VLAN ID.
    #[inline]
    pub fn innermost(&self) -> Option<VlanTag> {
        match *self {
            Vlan::None => None,
            Vlan::Single(tag) => Some(tag),
            Vlan::Double { inner, .. } => Some(inner),
        }
    }
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

view_constructors!(Frame);

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks that the buffer holds the untagged header and every announced tag, so that no
    /// getter can panic.
    ///
    /// # Errors
    /// [`Error::Truncated`] when it does not.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.header_len_unchecked(len) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Header length computed from the tags that fit in `len` bytes; never reads past `len`.
    #[inline]
    fn header_len_unchecked(&self, len: usize) -> usize {
        let data = self.buffer.as_ref();
        let mut offset = HEADER_LEN;
        for _ in 0..2 {
            if len < offset {
                return offset;
            }
            let ty = EtherType::from(read_u16(data, offset - 2..offset));
            if !ty.is_tpid() {
                return offset;
            }
            offset += VLAN_TAG_LEN;
        }
        offset
    }

    /// Destination MAC address.
    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Source MAC address.
    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    /// The EtherType field at offset 12: the L3 EtherType of an untagged frame, or the TPID of
    /// the first tag.
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType::from(read_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Number of VLAN tags (0, 1 or 2).
    #[inline]
    pub fn vlan_count(&self) -> usize {
        (self.header_len() - HEADER_LEN) / VLAN_TAG_LEN
    }

    /// Header length including tags: the offset of the L3 header.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_len_unchecked(self.buffer.as_ref().len())
    }

    /// Same as [`Frame::header_len`]: where the L3 header starts.
    #[inline]
    pub fn l3_offset(&self) -> usize {
        self.header_len()
    }

    /// The EtherType after the VLAN tags (the L3 protocol).
    #[inline]
    pub fn inner_ethertype(&self) -> EtherType {
        let end = self.header_len();
        EtherType::from(read_u16(self.buffer.as_ref(), end - 2..end))
    }

    /// The VLAN tags.
    #[inline]
    pub fn vlan(&self) -> Vlan {
        let data = self.buffer.as_ref();
        let tag = |at: usize| VlanTag {
            tpid: EtherType::from(read_u16(data, at - 2..at)),
            tci: read_u16(data, at..at + 2),
        };
        match self.vlan_count() {
            0 => Vlan::None,
            1 => Vlan::Single(tag(HEADER_LEN)),
            _ => Vlan::Double { outer: tag(HEADER_LEN), inner: tag(HEADER_LEN + VLAN_TAG_LEN) },
        }
    }

    /// Everything after the header and tags.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Frame<&'a T> {
    /// The payload after the header and tags, with the buffer's lifetime.
    #[inline]
    pub fn payload_ref(&self) -> &'a [u8] {
        let data: &'a [u8] = T::as_ref(self.buffer);
        &data[self.header_len_unchecked(data.len())..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    #[inline]
    pub fn set_dst_addr(&mut self, value: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&value.0);
    }

    /// Sets the source MAC address.
    #[inline]
    pub fn set_src_addr(&mut self, value: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&value.0);
    }

    /// Sets the EtherType field at offset 12 (the first TPID on a tagged frame).
    #[inline]
    pub fn set_ethertype(&mut self, value: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, value.into());
    }

    /// Sets the EtherType after the current tags (the L3 protocol).
    #[inline]
    pub fn set_inner_ethertype(&mut self, value: EtherType) {
        let end = self.header_len();
        write_u16(self.buffer.as_mut(), end - 2..end, value.into());
    }

    /// Mutable payload after the header and tags.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }

    /// Mutable payload assuming an untagged header (for output buffers whose EtherType is not
    /// written yet).
    #[inline]
    pub fn untagged_payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// The meaning of an Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    /// Source MAC address.
    pub src_addr: MacAddr,
    /// Destination MAC address.
    pub dst_addr: MacAddr,
    /// VLAN tags.
    pub vlan: Vlan,
    /// The L3 EtherType (after any tags).
    pub ethertype: EtherType,
}

impl Repr {
    /// Reads a checked frame.
    ///
    /// # Errors
    /// [`Error::Truncated`] if the frame is shorter than its announced tags (only possible when
    /// the view was built unchecked).
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Repr, Error> {
        frame.check_len()?;
        Ok(Repr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            vlan: frame.vlan(),
            ethertype: frame.inner_ethertype(),
        })
    }

    /// Bytes [`Repr::emit`] writes.
    #[inline]
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + VLAN_TAG_LEN * self.vlan.count()
    }

    /// Writes the header and tags.
    ///
    /// # Panics
    /// When the buffer is shorter than [`Repr::buffer_len`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        let data = frame.buffer.as_mut();
        let mut at = field::ETHERTYPE.start;
        let tags: [Option<VlanTag>; 2] = match self.vlan {
            Vlan::None => [None, None],
            Vlan::Single(t) => [Some(t), None],
            Vlan::Double { outer, inner } => [Some(outer), Some(inner)],
        };
        for tag in tags.into_iter().flatten() {
            write_u16(data, at..at + 2, tag.tpid.into());
            write_u16(data, at + 2..at + 4, tag.tci);
            at += VLAN_TAG_LEN;
        }
        write_u16(data, at..at + 2, self.ethertype.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Outer header of frame 1 of tests/fixtures/kernel-vxlan-flannel.pcap (host B <- host A).
    const UNTAGGED: [u8; 18] = [
        0xe6, 0x37, 0x6c, 0xed, 0x27, 0x39, 0x92, 0x14, 0x14, 0x17, 0xdb, 0xd3, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x86,
    ];

    const SINGLE: [u8; 20] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0xa0,
        0x64, 0x08, 0x06, 0xaa, 0xbb,
    ];

    const QINQ: [u8; 24] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x88, 0xa8, 0x00,
        0x0a, 0x81, 0x00, 0x10, 0x14, 0x86, 0xdd, 0x60, 0x00,
    ];

    #[test]
    fn untagged_fields() {
        let f = Frame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst_addr(), "e6:37:6c:ed:27:39".parse().unwrap());
        assert_eq!(f.src_addr().to_string(), "92:14:14:17:db:d3");
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(f.inner_ethertype(), EtherType::Ipv4);
        assert_eq!(f.vlan(), Vlan::None);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.l3_offset(), 14);
        assert_eq!(f.payload(), &[0x45, 0x00, 0x00, 0x86]);
    }

    #[test]
    fn single_tag() {
        let f = Frame::new_checked(&SINGLE[..]).unwrap();
        assert!(f.dst_addr().is_broadcast());
        assert_eq!(f.ethertype(), EtherType::Vlan);
        assert_eq!(f.inner_ethertype(), EtherType::Arp);
        assert_eq!(f.vlan_count(), 1);
        let Vlan::Single(tag) = f.vlan() else { panic!("expected one tag, got {:?}", f.vlan()) };
        assert_eq!((tag.tpid, tag.pcp(), tag.dei(), tag.vid()), (EtherType::Vlan, 5, false, 100));
        assert_eq!(f.l3_offset(), 18);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
        assert_eq!(f.payload_ref(), &[0xaa, 0xbb]);
    }

    #[test]
    fn qinq_tags() {
        let f = Frame::new_checked(&QINQ[..]).unwrap();
        assert_eq!(f.ethertype(), EtherType::QinQ);
        assert_eq!(f.inner_ethertype(), EtherType::Ipv6);
        assert_eq!(f.l3_offset(), 22);
        assert_eq!(
            f.vlan(),
            Vlan::Double {
                outer: VlanTag::new(EtherType::QinQ, 0, false, 10),
                inner: VlanTag::new(EtherType::Vlan, 0, true, 20),
            }
        );
        assert_eq!(f.vlan().innermost().unwrap().vid(), 20);
        assert_eq!(f.payload(), &[0x60, 0x00]);
    }

    #[test]
    fn three_tags_report_third_tpid_as_inner_type() {
        let mut b = QINQ.to_vec();
        b[20..22].copy_from_slice(&[0x81, 0x00]);
        b.extend_from_slice(&[0, 0]);
        let f = Frame::new_checked(&b[..]).unwrap();
        assert_eq!(f.vlan_count(), 2);
        assert_eq!(f.inner_ethertype(), EtherType::Vlan);
    }

    #[test]
    fn truncation() {
        assert_eq!(Frame::new_checked(&UNTAGGED[..13]).unwrap_err(), Error::Truncated);
        assert!(Frame::new_checked(&UNTAGGED[..14]).is_ok());
        // Tag announced but TCI/EtherType missing.
        assert_eq!(Frame::new_checked(&SINGLE[..14]).unwrap_err(), Error::Truncated);
        assert_eq!(Frame::new_checked(&SINGLE[..17]).unwrap_err(), Error::Truncated);
        assert!(Frame::new_checked(&SINGLE[..18]).is_ok());
        assert_eq!(Frame::new_checked(&QINQ[..21]).unwrap_err(), Error::Truncated);
        assert!(Frame::new_checked(&QINQ[..22]).is_ok());
    }

    #[test]
    fn emit_round_trip_every_tagging() {
        for src in [&UNTAGGED[..], &SINGLE[..], &QINQ[..]] {
            let f = Frame::new_checked(src).unwrap();
            let repr = Repr::parse(&f).unwrap();
            assert_eq!(repr.buffer_len(), f.header_len());
            let mut out = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Frame::new_unchecked(&mut out[..]));
            assert_eq!(&out[..], &src[..repr.buffer_len()]);
        }
    }

    #[test]
    fn setters() {
        let mut b = UNTAGGED;
        let mut f = Frame::new_unchecked(&mut b[..]);
        f.set_dst_addr(MacAddr::BROADCAST);
        f.set_src_addr(MacAddr([2, 0, 0, 0, 0, 9]));
        f.set_ethertype(EtherType::Ipv6);
        f.payload_mut()[0] = 0x60;
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert!(f.src_addr().is_local() && f.src_addr().is_unicast());
        assert_eq!(f.inner_ethertype(), EtherType::Ipv6);
        f.set_inner_ethertype(EtherType::Arp);
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.untagged_payload_mut()[0], 0x60);
    }

    #[test]
    fn smoltcp_agrees() {
        use smoltcp::wire::{EthernetFrame, EthernetProtocol};
        let repr = Repr {
            src_addr: MacAddr([0x2a, 0xa9, 0xdf, 0x4e, 0xcb, 0xb8]),
            dst_addr: MacAddr([0x26, 0x69, 0xc7, 0x3a, 0x5b, 0x8c]),
            vlan: Vlan::None,
            ethertype: EtherType::Ipv4,
        };
        let mut out = [0u8; 14];
        repr.emit(&mut Frame::new_unchecked(&mut out[..]));
        let theirs = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(theirs.ethertype(), EthernetProtocol::Ipv4);
        assert_eq!(theirs.src_addr().as_bytes(), &repr.src_addr.0);
        assert_eq!(theirs.dst_addr().as_bytes(), &repr.dst_addr.0);
    }

    #[test]
    fn mac_text_forms() {
        let mac = MacAddr([0xc6, 0xd2, 0x32, 0x6f, 0x8f, 0x44]);
        for good in
            ["c6:d2:32:6f:8f:44", "C6:D2:32:6F:8F:44", "c6:D2:32:6f:8F:44", "c6-d2-32-6f-8f-44"]
        {
            assert_eq!(good.parse::<MacAddr>(), Ok(mac), "{good}");
        }
        assert_eq!(mac.to_string(), "c6:d2:32:6f:8f:44");
        assert_eq!("00:00:00:00:00:00".parse::<MacAddr>(), Ok(MacAddr::default()));
        assert_eq!("FF:FF:FF:FF:FF:FF".parse::<MacAddr>(), Ok(MacAddr::BROADCAST));
        for bad in [
            "",
            "c6:d2:32:6f:8f",       // five octets
            "c6:d2:32:6f:8f:44:00", // seven
            "c6:d2:32:6f:8f:4",     // a one-digit octet
            "c6:d2:32:6f:8f:4g",    // not hex
            "c6:d2:32:6f:8f:+4",    // a sign, which u8::from_str_radix would take
            "+c:d2:32:6f:8f:44",
            "c6:d2:32:6f:8f:-4",
            "c6:d2:32:6f:8f:+a",
            "c:6d2:32:6f:8f:44", // right length, separator in the wrong place
            "a:b:c:d:e:f",       // one-digit octets
            "c6d:2:32:6f:8f:44",
            "c6:d2-32:6f:8f:44",  // mixed separators
            "c6.d2.32.6f.8f.44",  // another separator
            "c6d2.326f.8f44",     // Cisco's dotted form
            "c6d2326f8f44",       // none
            " c6:d2:32:6f:8f:44", // surrounding space
            "c6:d2:32:6f:8f:44 ",
            "c6::d2:32:6f:8f:4",
            "c6:d2:32:6f:8f:４", // a non-ASCII digit
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(ParseMacError), "{bad:?}");
        }
    }

    #[test]
    fn mac_from_bytes() {
        let b = [2u8, 0, 0, 0, 0, 7];
        assert_eq!(MacAddr::try_from(&b[..]), Ok(MacAddr(b)));
        assert_eq!(MacAddr::try_from(&b[..5]), Err(ParseMacError));
        assert_eq!(MacAddr::try_from(&[0u8; 7][..]), Err(ParseMacError));
        assert_eq!(<[u8; 6]>::from(MacAddr::from(b)), b);
    }

    proptest::proptest! {
        #[test]
        fn mac_text_round_trips(octets in proptest::array::uniform6(proptest::num::u8::ANY)) {
            let mac = MacAddr(octets);
            proptest::prop_assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
            proptest::prop_assert_eq!(mac.to_string().to_uppercase().replace(':', "-").parse::<MacAddr>(), Ok(mac));
        }

        #[test]
        fn mac_parse_never_panics(s in "\\PC{0,20}") {
            let _ = s.parse::<MacAddr>();
        }
    }
}
