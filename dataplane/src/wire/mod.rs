//! Zero-copy header views for the packet path: Ethernet (with 802.1Q / 802.1ad tags), ARP,
//! IPv4, IPv6, UDP, TCP, VXLAN, the two ICMP messages linen originates, and Internet checksums.
//! The pipeline reads and writes every header through them (docs/wire.md says why these and
//! not smoltcp's).
//!
//! Every header has the same three layers:
//!
//! - a **view** (`Packet<T>` or `Frame<T>`) generic over its buffer `T: AsRef<[u8]>`. Getters read
//!   fields at fixed offsets (declared as ranges in a private `field` module); setters live in an
//!   `impl<T: AsRef<[u8]> + AsMut<[u8]>>` block. A view never copies the packet and never casts
//!   bytes to a `#[repr(C)]` struct: fields are read and written byte by byte at their offsets, so
//!   alignment never matters.
//! - a **`Repr`**: the validated meaning of one header (`parse` from a view, `emit` into a view,
//!   `buffer_len` for the bytes `emit` writes).
//! - a shared, one-byte [`Error`] saying what was wrong. It is `Copy` and allocation-free, so the
//!   fast path can turn it into a drop reason.
//!
//! # Untrusted input vs. output buffers
//!
//! **Bytes that came off a wire always go through `new_checked`** (which runs `check_len`): after
//! it succeeds no getter of that view can index out of bounds, whatever the bytes say. Meaning
//! (version numbers, checksums, flags) is then validated by `Repr::parse` or by the caller.
//!
//! **Output buffers that are being filled use `new_unchecked`**: their length fields are not
//! written yet, so checking them would be meaningless. Never trust an earlier check after
//! changing a length field — re-check.
//!
//! Getters on a view built with `new_unchecked` over a too-short buffer panic (slice indexing);
//! that is a programming error, never a packet's doing.
//!
//! **Fixed-size chunks on the fast path.** The pipeline takes one checked, fixed-size chunk of
//! a frame (`data.first_chunk::<64>()`) and builds `new_unchecked` views over constant ranges of
//! it: the array type is the length check, so every getter compiles to a plain load with no
//! bounds check left. A few accessors exist for that path only, on the same views and offsets:
//! `Ipv4Packet::protocol_raw`, `Ipv6Packet::next_header_raw`, [`Ports::octets`] and
//! `VxlanPacket::matches`.
//!
//! Unknown protocol numbers are kept (`EtherType::Unknown(0x1234)`, `IpProtocol::Unknown(99)`)
//! instead of being treated as errors: what to do with them is the caller's policy.
//!
//! This module never allocates, never locks and never logs.

/// Declares what every view (`Packet<T>`, `Frame<T>`) shares: `new_unchecked`, `new_checked`
/// (which runs the view's own `check_len`), `into_inner`, and `AsRef<[u8]>` for the whole buffer.
macro_rules! view_constructors {
    ($view:ident) => {
        impl<T: AsRef<[u8]>> $view<T> {
            /// Wraps a buffer without checking it (for output buffers being filled).
            #[inline]
            pub const fn new_unchecked(buffer: T) -> $view<T> {
                $view { buffer }
            }

            /// Wraps untrusted bytes after `check_len`, so that no getter can index out of bounds.
            ///
            /// # Errors
            /// What `check_len` finds.
            #[inline]
            pub fn new_checked(buffer: T) -> Result<$view<T>, Error> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            /// The underlying buffer.
            #[inline]
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }

        impl<T: AsRef<[u8]>> AsRef<[u8]> for $view<T> {
            fn as_ref(&self) -> &[u8] {
                self.buffer.as_ref()
            }
        }
    };
}

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vxlan;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod prop_tests;

pub use arp::{
    Hardware as ArpHardware, Operation as ArpOperation, Packet as ArpPacket, Repr as ArpRepr,
};
pub use ethernet::{
    EtherType, Frame as EthernetFrame, MacAddr, ParseMacError, Repr as EthernetRepr, Vlan, VlanTag,
};
pub use icmpv4::{Message as Icmpv4Message, Packet as Icmpv4Packet, Repr as Icmpv4Repr};
pub use icmpv6::{Message as Icmpv6Message, Packet as Icmpv6Packet, Repr as Icmpv6Repr};
pub use ip::{IpProtocol, Ports};
pub use ipv4::{Packet as Ipv4Packet, Repr as Ipv4Repr};
pub use ipv6::{Packet as Ipv6Packet, Repr as Ipv6Repr};
pub use tcp::{Packet as TcpPacket, Repr as TcpRepr};
pub use udp::{ChecksumMode as UdpChecksumMode, Packet as UdpPacket, Repr as UdpRepr};
pub use vxlan::{Packet as VxlanPacket, Repr as VxlanRepr, Vni};

/// What was wrong with a header. One byte, `Copy`, no allocation: the fast path maps it to a
/// drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer is shorter than the header, or shorter than a length field in the header says.
    #[error("packet truncated: buffer shorter than the header or its length field")]
    Truncated,
    /// A length field is smaller than the header it belongs to (e.g. UDP length < 8, IPv4 total
    /// length < header length).
    #[error("length field smaller than its own header")]
    BadLength,
    /// The IPv4 header length (IHL) is below 5 words.
    #[error("IPv4 header length (IHL) below 5")]
    BadHeaderLen,
    /// The IP version nibble is not the one the view expects.
    #[error("wrong IP version")]
    BadVersion,
    /// The checksum does not verify.
    #[error("checksum mismatch")]
    BadChecksum,
    /// A required flag is missing (VXLAN: the I flag is clear).
    #[error("required flag missing")]
    BadFlags,
    /// Reserved bits that must be zero are set (VXLAN).
    #[error("reserved bits set")]
    ReservedNonZero,
    /// A well-formed header linen does not model: ARP for something other than Ethernet/IPv4, an
    /// ICMP message type without a `Repr` variant, or mixed IPv4/IPv6 addresses for a checksum.
    #[error("unsupported header contents")]
    Unsupported,
}

/// A byte range of a header field.
pub(crate) type Field = core::ops::Range<usize>;

/// A field that runs from `start` to the end of the header or buffer.
pub(crate) type Rest = core::ops::RangeFrom<usize>;

#[inline]
pub(crate) fn read_u16(data: &[u8], field: Field) -> u16 {
    u16::from_be_bytes([data[field.start], data[field.start + 1]])
}

#[inline]
pub(crate) fn write_u16(data: &mut [u8], field: Field, value: u16) {
    data[field].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn read_u32(data: &[u8], field: Field) -> u32 {
    let s = field.start;
    u32::from_be_bytes([data[s], data[s + 1], data[s + 2], data[s + 3]])
}

#[inline]
pub(crate) fn write_u32(data: &mut [u8], field: Field, value: u32) {
    data[field].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn read_ipv4(data: &[u8], field: Field) -> std::net::Ipv4Addr {
    let s = field.start;
    std::net::Ipv4Addr::new(data[s], data[s + 1], data[s + 2], data[s + 3])
}

#[inline]
pub(crate) fn read_ipv6(data: &[u8], field: Field) -> std::net::Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&data[field]);
    std::net::Ipv6Addr::from(octets)
}
