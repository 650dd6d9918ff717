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
    ports_mask(proto) != 0
}

/// `!0` for protocols with ports (TCP 6, UDP 17, SCTP 132, UDP-Lite 136), else 0: a table lookup
/// instead of a chain of compares on the fast path.
#[inline(always)]
pub(crate) fn ports_mask(proto: u8) -> u32 {
    PORTS_MASK[usize::from(proto)]
}

static PORTS_MASK: [u32; 256] = {
    let mut t = [0u32; 256];
    t[6] = !0;
    t[17] = !0;
    t[132] = !0;
    t[136] = !0;
    t
};

/// Folded multiply: the 128-bit product of `a` and `b` with its halves xored. One `mul`; every
/// input bit reaches the middle bits of the result.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;

/// Hash of an IPv4 flow. `ports` is the first four L4 bytes (source and destination port) or 0.
///
/// The fields are xored into one 64-bit word (ports rotated so they overlap both addresses) and
/// multiplied by an odd constant; bit `i` of a product depends on every input bit at or below
/// `i`, so the high 32 bits, which [`source_port`] uses, depend on all of them.
#[inline(always)]
pub(crate) fn hash_v4(src: u32, dst: u32, proto: u8, ports: u32) -> u32 {
    let x = ((u64::from(src) << 32) | u64::from(dst))
        ^ u64::from(ports).rotate_left(16)
        ^ u64::from(proto) << 56;
    (x.wrapping_mul(K0 | 1) >> 32) as u32
}

/// Hash of an IPv6 flow (addresses as read big-endian).
#[inline(always)]
pub(crate) fn hash_v6(src: u128, dst: u128, proto: u8, ports: u32) -> u32 {
    let s = fold_mul((src as u64) ^ K0, ((src >> 64) as u64) ^ K1);
    let d = fold_mul((dst as u64) ^ K2, ((dst >> 64) as u64) ^ K0);
    let rest = (u64::from(ports) << 8) | u64::from(proto);
    let h = fold_mul(s ^ d.rotate_left(32), rest ^ K2);
    (h ^ (h >> 32)) as u32
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

    #[test]
    fn flows_differing_in_one_field_spread() {
        let spread = |f: &dyn Fn(u32) -> u32| {
            let seen: std::collections::HashSet<u16> =
                (0..4096u32).map(|i| source_port(f(i), 32768, 60999)).collect();
            seen.len()
        };
        let base_ports = u32::from_ne_bytes([0x9c, 0x40, 0x23, 0x28]);
        // Destination address only (a client talking to 4096 pods), source only, protocol only.
        let by_dst = spread(&|i| hash_v4(0x0201_f40a, 0x0000_f40a | (i << 16), 6, base_ports));
        let by_src = spread(&|i| hash_v4(0x0000_f40a | (i << 16), 0x0202_f40a, 17, base_ports));
        let by_dport = spread(&|i| hash_v4(0x0201_f40a, 0x0202_f40a, 6, (i << 16) | 0x409c));
        for (what, n) in
            [("destination", by_dst), ("source", by_src), ("destination port", by_dport)]
        {
            assert!(n > 3800, "flows differing in {what}: only {n} distinct ports");
        }
        let protos: std::collections::HashSet<u32> =
            (0..=255u8).map(|p| hash_v4(1, 2, p, 0)).collect();
        assert_eq!(protos.len(), 256);
        let v6: std::collections::HashSet<u16> = (0..4096u128)
            .map(|i| source_port(hash_v6(1 << 100, i << 64, 6, 0), 32768, 60999))
            .collect();
        assert!(v6.len() > 3800, "IPv6 destinations: only {} distinct ports", v6.len());
    }
}
