//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Vocabulary used by every function here:
//!
//! - a **sum** is the folded 16-bit ones'-complement sum of big-endian 16-bit words
//!   ([`sum`], [`add`], [`pseudo_header_v4`]); sums of pieces combine with [`add`];
//! - a **checksum** is the complement of a sum, the value stored in a header ([`finish`],
//!   [`checksum`]). A header verifies when the sum over it, checksum field included, is `0xffff`.
//!
//! An odd-length piece is padded with a zero byte at its end, so when combining the sums of
//! several pieces only the last one may have odd length.
//!
//! [`sum`] reads 8 bytes per step in the host's byte order into a 128-bit accumulator (an
//! add/add-with-carry pair per step; 2^64 ≡ 1 modulo 2^16 − 1, so the wide sum folds to the
//! same 16-bit result) and swaps the folded result once; it is `#[inline]`.
//!
//! This is linen's only checksum code. Where it is used:
//!
//! - **encap** keeps each route's outer IPv4 header sum (length, ID and checksum zero) next to
//!   its template, adds the two per-packet words to it in a `u32` and finishes with [`fold32`]
//!   and [`finish`]: no pass over the header per packet.
//! - **ICMP errors, the optional outer UDP checksum, verification**: [`sum`] over the bytes,
//!   [`pseudo_header_v4`] / [`pseudo_header_v6`] for the upper-layer checksums.
//! - **Changing fields of a header whose checksum is already valid** (a TTL, a segment's
//!   length, ID or sequence number): RFC 1624's incremental [`update16`] / [`update32`] /
//!   [`update_sum`], without re-reading the header or payload.
//!
//! # Incremental update
//!
//! A header built once with total length and identification zero and its checksum filled in;
//! then those two words change and the checksum follows with two [`update16`] calls:
//!
//! ```
//! use linen_dataplane::wire::{checksum, ipv4, IpProtocol};
//! use std::net::Ipv4Addr;
//!
//! // Built once, checksum filled in.
//! let mut template = [0u8; 20];
//! ipv4::Repr {
//!     src_addr: Ipv4Addr::new(192, 168, 77, 1),
//!     dst_addr: Ipv4Addr::new(192, 168, 77, 2),
//!     protocol: IpProtocol::Udp,
//!     payload_len: 0,
//!     ttl: 64,
//!     ident: 0,
//!     dont_frag: false,
//!     more_frags: false,
//!     frag_offset: 0,
//!     dscp: 0,
//!     ecn: 0,
//! }
//! .emit(&mut ipv4::Packet::new_unchecked(&mut template[..]));
//!
//! // Later two words change, and the checksum follows them.
//! let mut hdr = template;
//! let mut ip = ipv4::Packet::new_unchecked(&mut hdr[..]);
//! let (total_len, ident) = (1478u16, 2656u16);
//! let c = checksum::update16(ip.checksum(), 20, total_len);
//! let c = checksum::update16(c, 0, ident);
//! ip.set_total_len(total_len);
//! ip.set_ident(ident);
//! ip.set_checksum(c);
//! assert!(ip.verify_checksum());
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use super::ip::IpProtocol;

/// Adds `word` to `acc` with end-around carry.
#[inline(always)]
fn add_carry(acc: u64, word: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(word);
    s + u64::from(carry)
}

/// Folds a 32-bit accumulator of 16-bit words (at most 65 537 of them) to 16 bits, not
/// complemented, in four instructions: adding the value to itself rotated by 16 bits leaves
/// high half + low half, end-around carry included, in the upper 16 bits. The fast path sums a
/// few words into a `u32` and finishes with this; [`fold`] is the general version.
#[inline(always)]
pub fn fold32(acc: u32) -> u16 {
    (acc.wrapping_add(acc.rotate_left(16)) >> 16) as u16
}

/// Folds a 64-bit ones'-complement accumulator to 16 bits.
#[inline]
pub fn fold(acc: u64) -> u16 {
    let mut acc = (acc & 0xffff_ffff) + (acc >> 32); // < 2^33
    acc = (acc & 0xffff_ffff) + (acc >> 32); // <= 2^32
    acc = (acc & 0xffff) + (acc >> 16); // <= 2^17
    acc = (acc & 0xffff) + (acc >> 16); // <= 2^16
    acc = (acc & 0xffff) + (acc >> 16); // < 2^16
    acc as u16
}

/// The ones'-complement sum of `data` read as *native-endian* 16-bit words, folded.
///
/// RFC 1071 §2(B): the sum is byte-order independent, so reading words in the host's order
/// (no byte swap per load) and swapping the 16-bit result once gives the big-endian sum.
/// 8-byte words go into a 128-bit accumulator, which compiles to an add/add-with-carry pair
/// per word and cannot overflow for any slice; 32-byte blocks let the compiler unroll.
#[inline]
fn sum_native(data: &[u8]) -> u16 {
    let mut acc: u128 = 0;
    let (blocks, rest) = data.as_chunks::<32>();
    for block in blocks {
        let (words, _) = block.as_chunks::<8>();
        for word in words {
            acc += u128::from(u64::from_ne_bytes(*word));
        }
    }
    let (words, mut tail) = rest.as_chunks::<8>();
    for word in words {
        acc += u128::from(u64::from_ne_bytes(*word));
    }
    // The last 0..=7 bytes in 4-, 2- and 1-byte pieces (no variable-length copy). Every piece
    // starts at an even offset, so its 16-bit words keep their place in the sum.
    if let Some((word, rest)) = tail.split_first_chunk::<4>() {
        acc += u128::from(u32::from_ne_bytes(*word));
        tail = rest;
    }
    if let Some((word, rest)) = tail.split_first_chunk::<2>() {
        acc += u128::from(u16::from_ne_bytes(*word));
        tail = rest;
    }
    if let Some(&last) = tail.first() {
        // An odd final byte is the high byte of a big-endian word padded with zero (RFC 1071).
        acc += u128::from(u16::from_ne_bytes([last, 0]));
    }
    fold(add_carry(acc as u64, (acc >> 64) as u64))
}

/// Adds the sum of `data` (big-endian 16-bit words) into a 64-bit accumulator, unfolded;
/// [`fold`] finishes it. For summing several pieces (each but the last of even length).
#[inline]
pub fn accumulate(acc: u64, data: &[u8]) -> u64 {
    add_carry(acc, u64::from(sum(data)))
}

/// The 16-bit ones'-complement sum of `data` (not complemented).
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    u16::from_be(sum_native(data))
}

/// Ones'-complement addition of two sums.
#[inline]
pub fn add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// Turns a sum into the checksum value stored in a header.
#[inline]
pub fn finish(sum: u16) -> u16 {
    !sum
}

/// The checksum of `data` (`finish(sum(data))`).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// Whether a sum taken over a header *including* its checksum field verifies.
#[inline]
pub fn verifies(sum: u16) -> bool {
    sum == 0xffff
}

/// The sum of the IPv4 pseudo-header (RFC 768): source, destination, zero + protocol, and the
/// upper-layer `length`.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, length: u16) -> u16 {
    let s = u64::from(u32::from(src)) + u64::from(u32::from(dst));
    fold(s + u64::from(u8::from(protocol)) + u64::from(length))
}

/// The sum of the IPv6 pseudo-header (RFC 8200 §8.1): source, destination, upper-layer
/// `length` (32 bits) and next header.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: IpProtocol, length: u32) -> u16 {
    let mut acc = accumulate(0, &src.octets());
    acc = accumulate(acc, &dst.octets());
    acc = add_carry(acc, u64::from(length));
    fold(add_carry(acc, u64::from(u8::from(next_header))))
}

/// RFC 1624 incremental update (eqn. 3, `HC' = ~(~HC + ~m + m')`): the new checksum after one
/// 16-bit word covered by `checksum` changed from `old` to `new`.
#[inline]
pub fn update16(checksum: u16, old: u16, new: u16) -> u16 {
    !add(add(!checksum, !old), new)
}

/// RFC 1624 incremental update for an aligned 32-bit field (e.g. an IPv4 address) that changed
/// from `old` to `new`.
#[inline]
pub fn update32(checksum: u16, old: u32, new: u32) -> u16 {
    let c = update16(checksum, (old >> 16) as u16, (new >> 16) as u16);
    update16(c, old as u16, new as u16)
}

/// RFC 1624 incremental update for a whole region whose sum changed from `old_sum` to
/// `new_sum` (sums as returned by [`sum`]; the region must start at an even offset).
#[inline]
pub fn update_sum(checksum: u16, old_sum: u16, new_sum: u16) -> u16 {
    update16(checksum, old_sum, new_sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: RFC 1071 word-by-word with a 32-bit accumulator.
    fn naive_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            acc += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            i += 2;
        }
        if i < data.len() {
            acc += u32::from(data[i]) << 8;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example: words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn ipv4_header_checksum_known_value() {
        // The classic worked example (192.168.0.1 -> 192.168.0.199, UDP), checksum zeroed.
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        hdr[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verifies(sum(&hdr)));
    }

    #[test]
    fn odd_lengths_and_all_chunk_remainders_match_naive() {
        let data: Vec<u8> = (0..300u32).map(|i| (i.wrapping_mul(97) ^ 0x5a) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(sum(&data[..len]), naive_sum(&data[..len]), "len {len}");
        }
        // Carries: all-ones data must fold to 0xffff.
        assert_eq!(sum(&[0xff; 1024]), 0xffff);
        assert_eq!(sum(&[]), 0);
    }

    #[test]
    fn fold32_matches_fold() {
        // 0x0000 and 0xffff are the same number in ones' complement.
        let same = |a: u16, b: u16| a == b || (a | b == 0xffff && a & b == 0);
        let mut x: u32 = 1;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            assert!(same(fold32(x), fold(u64::from(x))), "{x:#x}");
        }
        for x in [0, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_fffe, 0xfffe_0001] {
            assert!(same(fold32(x), fold(u64::from(x))), "{x:#x}");
        }
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        // TTL 64 -> 63 (word 8..10 changes from 0x4011 to 0x3f11).
        let c2 = update16(c, 0x4011, 0x3f11);
        hdr[8] = 0x3f;
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(c2, checksum(&hdr));
        // Destination address change.
        hdr[10..12].copy_from_slice(&c2.to_be_bytes());
        let c3 = update32(c2, 0xc0a8_00c7, 0x0a00_0001);
        hdr[16..20].copy_from_slice(&[10, 0, 0, 1]);
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(c3, checksum(&hdr));
        // Total length change via sums of the region.
        hdr[10..12].copy_from_slice(&c3.to_be_bytes());
        let c4 = update_sum(c3, sum(&hdr[2..4]), sum(&[0x05, 0xc6]));
        hdr[2..4].copy_from_slice(&[0x05, 0xc6]);
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(c4, checksum(&hdr));
    }

    #[test]
    fn pseudo_headers_match_byte_layout() {
        let src = Ipv4Addr::new(192, 168, 77, 1);
        let dst = Ipv4Addr::new(192, 168, 77, 2);
        let bytes = [192, 168, 77, 1, 192, 168, 77, 2, 0, 17, 0x00, 0x7a];
        assert_eq!(pseudo_header_v4(src, dst, IpProtocol::Udp, 0x7a), sum(&bytes));

        let s6: Ipv6Addr = "fd00::1".parse().unwrap();
        let d6: Ipv6Addr = "fd00::ffff:2".parse().unwrap();
        let mut b6 = Vec::new();
        b6.extend_from_slice(&s6.octets());
        b6.extend_from_slice(&d6.octets());
        b6.extend_from_slice(&0x0001_0010u32.to_be_bytes());
        b6.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(pseudo_header_v6(s6, d6, IpProtocol::Icmpv6, 0x0001_0010), sum(&b6));
    }

    proptest::proptest! {
        #[test]
        fn sum_matches_naive(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            proptest::prop_assert_eq!(sum(&data), naive_sum(&data));
        }

        #[test]
        fn update16_matches_recompute(
            mut data in proptest::collection::vec(proptest::num::u8::ANY, 2..200),
            word in 0usize..100,
            new in proptest::num::u16::ANY,
        ) {
            let len = data.len() & !1;
            let data = &mut data[..len];
            let i = (word * 2) % len;
            let before = checksum(data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let after = checksum(data);
            let incr = update16(before, old, new);
            // 0x0000 and 0xffff are the same value in ones'-complement; RFC 1624's eqn. 3
            // never yields -0 from +0 inputs, but compare modulo that equivalence.
            proptest::prop_assert!(incr == after || (incr ^ after == 0xffff && (incr == 0 || after == 0)));
        }
    }
}
