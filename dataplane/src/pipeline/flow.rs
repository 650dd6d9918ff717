//! Flow hash for the outer UDP source port.
//!
//! Receivers spread VXLAN traffic over RSS queues and ECMP paths by the outer UDP source port, so
//! encap derives it from the inner flow: the 5-tuple for TCP, UDP, UDP-Lite and SCTP (when the
//! ports are present: not for IPv4 fragments, whose later pieces carry none), else addresses and
//! protocol. The hash is a fixed function (no per-node seed): the same flow always gets the same
//! port, on every node. Both directions of a flow need not get the same port.

/// IP protocol numbers whose first four L4 bytes are source and destination port.
#[inline(always)]
pub(crate) fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132 | 136)
}

/// A 64-bit mixer (the finaliser of MurmurHash3's 64-bit variant): every input bit affects every
/// output bit.
#[inline(always)]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Hash of an IPv4 flow. `ports` is the first four L4 bytes (source and destination port) or 0.
#[inline(always)]
pub(crate) fn hash_v4(src: u32, dst: u32, proto: u8, ports: u32) -> u32 {
    let addrs = (u64::from(src) << 32) | u64::from(dst);
    let rest = (u64::from(ports) << 8) | u64::from(proto);
    (mix(addrs ^ rest.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 32) as u32
}

/// Hash of an IPv6 flow (addresses as read big-endian).
#[inline(always)]
pub(crate) fn hash_v6(src: u128, dst: u128, proto: u8, ports: u32) -> u32 {
    let s = (src as u64) ^ ((src >> 64) as u64).rotate_left(17);
    let d = (dst as u64) ^ ((dst >> 64) as u64).rotate_left(41);
    let rest = (u64::from(ports) << 8) | u64::from(proto);
    (mix(s ^ d.rotate_left(32) ^ rest.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 32) as u32
}

/// Maps a hash onto `min..=max` without a division (multiply-shift). A reversed range yields `min`.
#[inline(always)]
pub(crate) fn source_port(hash: u32, min: u16, max: u16) -> u16 {
    let span = u64::from(max.saturating_sub(min)) + 1;
    min.wrapping_add(((u64::from(hash) * span) >> 32) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_stay_in_range() {
        for h in [0u32, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
            let p = source_port(h, 32768, 60999);
            assert!((32768..=60999).contains(&p));
        }
        assert_eq!(source_port(u32::MAX, 0, u16::MAX), u16::MAX);
        assert_eq!(source_port(u32::MAX, 9, 9), 9);
        assert_eq!(source_port(u32::MAX, 10, 9), 10);
    }

    #[test]
    fn nearby_flows_spread() {
        // 4096 flows differing only in source port land on many distinct outer ports.
        let mut seen = std::collections::HashSet::new();
        for sport in 0..4096u32 {
            let h = hash_v4(0x0af4_0102, 0x0af4_0202, 6, (sport << 16) | 80);
            seen.insert(source_port(h, 32768, 60999));
        }
        assert!(seen.len() > 3800, "only {} distinct ports", seen.len());
    }
}
