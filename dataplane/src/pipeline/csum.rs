//! Internet checksum (RFC 1071) helpers tuned for the fast path: partial sums are `u32`
//! accumulators of big-endian 16-bit words, folded and complemented only at the end.

/// Sum of `bytes` as big-endian 16-bit words (an odd last byte is the high half of a word),
/// not folded: add further words to it, then [`finish`].
#[inline]
pub(crate) fn sum(bytes: &[u8]) -> u32 {
    // Ones'-complement addition is byte-order independent up to a final byte swap (RFC 1071
    // §2(B)), so add native-endian 32-bit halves of 8-byte chunks into a u64 and swap once.
    let mut acc: u64 = 0;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w & 0xffff_ffff) + (w >> 32);
    }
    // acc < 2^36 per 2^3 bytes of input: no overflow below 2^60 bytes.
    let folded = fold64(acc);
    let mut be = u32::from(u16::from_be(folded));
    let mut rest = chunks.remainder().chunks_exact(2);
    for c in &mut rest {
        be += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = rest.remainder() {
        be += u32::from(*last) << 8;
    }
    be
}

/// Folds a 64-bit native-endian accumulator of 16-bit words to one native-endian 16-bit word.
#[inline]
fn fold64(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// Folds a partial sum to 16 bits (not complemented).
#[inline(always)]
pub(crate) fn fold(mut s: u32) -> u16 {
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// [`fold`] in four instructions: adding the sum to itself rotated by 16 bits leaves the high half
/// plus the low half, with the end-around carry, in the upper 16 bits.
#[inline(always)]
pub(crate) fn fold_fast(s: u32) -> u16 {
    (s.wrapping_add(s.rotate_left(16)) >> 16) as u16
}

/// The checksum field value for a partial sum: folded and complemented.
#[inline(always)]
pub(crate) fn finish(s: u32) -> u16 {
    !fold(s)
}

/// Sum of the four 16-bit words of an IPv4 address.
#[inline(always)]
pub(crate) fn sum_addr4(a: [u8; 4]) -> u32 {
    u32::from(u16::from_be_bytes([a[0], a[1]])) + u32::from(u16::from_be_bytes([a[2], a[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook definition, for comparison.
    fn naive(bytes: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in bytes.chunks(2) {
            let w =
                if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from(c[0]) << 8 };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn matches_naive_sum_at_every_length() {
        let data: Vec<u8> =
            (0..300u32).map(|i| (i.wrapping_mul(151) ^ (i >> 3)) as u8 | 0x80).collect();
        for len in 0..data.len() {
            let ours = fold(sum(&data[..len]));
            let theirs = naive(&data[..len]);
            // 0x0000 and 0xffff are the same number in ones' complement.
            assert!(ours == theirs || (ours | theirs == 0xffff && ours & theirs == 0), "len {len}");
        }
    }

    #[test]
    fn fold_fast_matches_fold() {
        let mut x: u32 = 1;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let ours = fold_fast(x);
            let theirs = fold(x);
            assert!(ours == theirs || (ours | theirs == 0xffff && ours & theirs == 0), "{x:#x}");
        }
        for x in [0, 0xffff, 0x1_0000, 0xffff_ffff, 0x1_fffe, 0xfffe_0001] {
            let (ours, theirs) = (fold_fast(x), fold(x));
            assert!(ours == theirs || (ours | theirs == 0xffff && ours & theirs == 0), "{x:#x}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(fold(sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
    }
}
