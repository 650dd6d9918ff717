//! [`DropReason`] and the per-worker [`WorkerStats`] counters.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Action;

/// Why the pipeline dropped a frame. Each reason has its own counter in [`WorkerStats`] and a
/// stable snake_case [`name`](DropReason::name) for metrics labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Encap: the inner frame's EtherType is neither IPv4 nor IPv6 (ARP, LLDP, …).
    /// Decap: the outer frame's EtherType is neither IPv4 nor IPv6.
    NotIpv4OrIpv6 = 0,
    /// The frame carries an 802.1Q or 802.1ad VLAN tag; linen carries untagged frames only.
    VlanTagged,
    /// The frame is shorter than its headers, or than the lengths its IP or UDP header claims.
    Truncated,
    /// The IP header's version does not match the EtherType, or its header length is below 20.
    BadIpHeader,
    /// Decap: the outer IPv4 packet is a fragment; linen does not reassemble.
    OuterFragment,
    /// Decap: the outer destination address is not the local VTEP address.
    NotLocalVtep,
    /// Decap: the outer IP protocol is not UDP.
    NotUdp,
    /// Decap: the outer UDP destination port is not the configured VXLAN port.
    WrongPort,
    /// Decap: the VXLAN flags are not exactly the I flag, or a reserved bit is set (RFC 7348;
    /// like Linux, linen rejects extensions it was not configured for, such as GBP).
    BadVxlanFlags,
    /// Decap: the VNI is not the configured VNI.
    WrongVni,
    /// Decap: the outer source address is not a known cluster node (lease holder).
    UnknownVtep,
    /// Decap: the inner frame is shorter than an Ethernet header plus the minimal IP header.
    InnerTruncated,
    /// Decap: the inner frame's EtherType is neither IPv4 nor IPv6.
    InnerNotIpv4OrIpv6,
    /// Decap: the inner destination MAC is a unicast address other than the local VtepMAC.
    InnerMacMismatch,
    /// Decap: the inner destination MAC is broadcast or multicast. flannel's overlay is routed
    /// with static neighbours and never floods, so such frames have no business arriving.
    InnerMulticast,
    /// Encap: no route covers the inner destination address.
    NoRoute,
    /// Encap: the inner IPv4 TTL or IPv6 hop limit is zero.
    TtlExpired,
    /// Encap: an IPv4 packet over the overlay MTU without DF. The kernel would fragment it;
    /// linen does not (`linen.1` has the overlay MTU, so the host stack fragments before the
    /// router sees a frame, and this only counts misconfiguration).
    TooBigDfClear,
    /// Encap: a packet over the overlay MTU that may not be answered with an ICMP error (it is
    /// itself an ICMP error, a non-initial fragment, or comes from a non-unicast source).
    TooBigNoIcmp,
    /// Encap: the frame has less headroom than the outer header needs (an I/O-layer bug).
    NoHeadroom,
    /// Encap: a packet from the overlay device whose offload metadata (its virtio-net header)
    /// linen cannot honour: a segmentation type it does not handle, segmentation of something
    /// that is not TCP or UDP over IPv4/IPv6, a checksum position outside the packet.
    BadOffload,
}

// A new reason goes last, and COUNT and ALL grow with it (the tests check ALL's order).
const _: () = assert!(DropReason::BadOffload as usize + 1 == DropReason::COUNT);

impl DropReason {
    /// Number of reasons (the length of [`DropReason::ALL`]).
    pub const COUNT: usize = 21;

    /// Every reason, in counter order.
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::NotIpv4OrIpv6,
        DropReason::VlanTagged,
        DropReason::Truncated,
        DropReason::BadIpHeader,
        DropReason::OuterFragment,
        DropReason::NotLocalVtep,
        DropReason::NotUdp,
        DropReason::WrongPort,
        DropReason::BadVxlanFlags,
        DropReason::WrongVni,
        DropReason::UnknownVtep,
        DropReason::InnerTruncated,
        DropReason::InnerNotIpv4OrIpv6,
        DropReason::InnerMacMismatch,
        DropReason::InnerMulticast,
        DropReason::NoRoute,
        DropReason::TtlExpired,
        DropReason::TooBigDfClear,
        DropReason::TooBigNoIcmp,
        DropReason::NoHeadroom,
        DropReason::BadOffload,
    ];

    /// The stable snake_case name used as the metrics label (`reason="unknown_vtep"`).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::NotIpv4OrIpv6 => "not_ipv4_or_ipv6",
            DropReason::VlanTagged => "vlan_tagged",
            DropReason::Truncated => "truncated",
            DropReason::BadIpHeader => "bad_ip_header",
            DropReason::OuterFragment => "outer_fragment",
            DropReason::NotLocalVtep => "not_local_vtep",
            DropReason::NotUdp => "not_udp",
            DropReason::WrongPort => "wrong_port",
            DropReason::BadVxlanFlags => "bad_vxlan_flags",
            DropReason::WrongVni => "wrong_vni",
            DropReason::UnknownVtep => "unknown_vtep",
            DropReason::InnerTruncated => "inner_truncated",
            DropReason::InnerNotIpv4OrIpv6 => "inner_not_ipv4_or_ipv6",
            DropReason::InnerMacMismatch => "inner_mac_mismatch",
            DropReason::InnerMulticast => "inner_multicast",
            DropReason::NoRoute => "no_route",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::TooBigDfClear => "too_big_df_clear",
            DropReason::TooBigNoIcmp => "too_big_no_icmp",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::BadOffload => "bad_offload",
        }
    }

    /// The counter index of this reason (its position in [`DropReason::ALL`]).
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One worker's packet counters.
///
/// Exactly one thread (the worker) writes; any thread may read through [`WorkerStats::snapshot`]
/// (the metrics endpoint does, off the hot path). Because there is a single writer, an increment
/// is a relaxed load and store, not a locked read-modify-write: a few cycles, no bus lock. Readers
/// see each counter monotonic, but counters are not read as one atomic set. The struct is aligned
/// to a cache line so workers' counters never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    /// Frames received and handed to the pipeline (both directions).
    pub rx: AtomicU64,
    /// Frames the pipeline said to transmit ([`Action::Transmit`]).
    pub tx: AtomicU64,
    /// Frames handed to the kernel path ([`Action::ToKernel`], e.g. unresolved underlay next hop).
    pub to_kernel: AtomicU64,
    /// ICMP errors generated in reply ([`Action::Reply`]).
    pub replies: AtomicU64,
    /// Dropped frames, one counter per [`DropReason`], indexed by [`DropReason::index`].
    pub drops: [AtomicU64; DropReason::COUNT],
}

/// A plain copy of a [`WorkerStats`], for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// See [`WorkerStats::rx`].
    pub rx: u64,
    /// See [`WorkerStats::tx`].
    pub tx: u64,
    /// See [`WorkerStats::to_kernel`].
    pub to_kernel: u64,
    /// See [`WorkerStats::replies`].
    pub replies: u64,
    /// See [`WorkerStats::drops`].
    pub drops: [u64; DropReason::COUNT],
}

impl StatsSnapshot {
    /// The count for one drop reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// All drops, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// `(reason, count)` for every reason, for metrics export.
    pub fn drops_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.drops[r.index()]))
    }
}

/// Adds `n` to a counter only one thread writes.
#[inline(always)]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl WorkerStats {
    /// Zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `n` received frames. Call only from the owning worker.
    #[inline]
    pub fn add_rx(&self, n: u64) {
        bump(&self.rx, n);
    }

    /// Counts the outcome of one pipeline call. Call only from the owning worker.
    #[inline]
    pub fn record(&self, action: &Action) {
        match action {
            Action::Transmit(_) => bump(&self.tx, 1),
            Action::ToKernel => bump(&self.to_kernel, 1),
            Action::Reply => bump(&self.replies, 1),
            Action::Drop(reason) => self.add_drop(*reason),
        }
    }

    /// Counts one drop. Call only from the owning worker.
    #[inline]
    pub fn add_drop(&self, reason: DropReason) {
        if let Some(counter) = self.drops.get(reason.index()) {
            bump(counter, 1);
        }
    }

    /// Reads every counter (relaxed; safe from any thread).
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut drops = [0u64; DropReason::COUNT];
        for (d, c) in drops.iter_mut().zip(&self.drops) {
            *d = c.load(Ordering::Relaxed);
        }
        StatsSnapshot {
            rx: self.rx.load(Ordering::Relaxed),
            tx: self.tx.load(Ordering::Relaxed),
            to_kernel: self.to_kernel.load(Ordering::Relaxed),
            replies: self.replies.load(Ordering::Relaxed),
            drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Egress;

    #[test]
    fn reasons_index_their_own_slot_and_names_are_unique() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn record_counts_each_action() {
        let s = WorkerStats::new();
        s.add_rx(5);
        s.record(&Action::Transmit(Egress::Overlay));
        s.record(&Action::ToKernel);
        s.record(&Action::Reply);
        s.record(&Action::Drop(DropReason::UnknownVtep));
        s.record(&Action::Drop(DropReason::UnknownVtep));
        let snap = s.snapshot();
        assert_eq!((snap.rx, snap.tx, snap.to_kernel, snap.replies), (5, 1, 1, 1));
        assert_eq!(snap.dropped(DropReason::UnknownVtep), 2);
        assert_eq!(snap.dropped_total(), 2);
        assert_eq!(snap.drops_by_reason().count(), DropReason::COUNT);
    }
}
