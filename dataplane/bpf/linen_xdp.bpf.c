// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0-only)
/*
 * linen's XDP programs. Built by dataplane/build.rs with clang (-target bpf) and embedded in the
 * linen binary; loaded and attached with a bpf_link by dataplane/src/io/xsk/program.rs.
 *
 *   linen_underlay  (underlay NIC): IPv4/IPv6 UDP to the configured VXLAN port addressed to the
 *                   local VTEP IP goes to the AF_XDP socket bound to the RX queue the frame
 *                   arrived on; everything else (ARP, ICMP, SSH, etcd, other UDP, fragments,
 *                   VLAN-tagged frames) is passed to the kernel unchanged.
 *   linen_overlay   (linen.1x): every frame goes to the AF_XDP socket of its RX queue.
 *
 * Both programs fall back to XDP_PASS when no socket is bound at the queue's XSKMAP index, so a
 * node whose router is not running (or is still starting) keeps its kernel networking.
 *
 * Each attachment opens its own copy of this object, so each device gets its own maps.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* Bits of linen_config.flags. */
#define LINEN_CFG_IPV4 0x1 /* vtep_ip4 is set: steer IPv4 */
#define LINEN_CFG_IPV6 0x2 /* vtep_ip6 is set: steer IPv6 */

/*
 * Written by userspace (program.rs `UnderlayConfig`): all addresses and the port in network byte
 * order. Layout is fixed: 4 + 16 + 2 + 1 + 1 = 24 bytes, no implicit padding.
 */
struct linen_config {
	__u32 vtep_ip4;
	__u8 vtep_ip6[16];
	__u16 port;
	__u8 flags;
	__u8 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct linen_config);
} linen_config SEC(".maps");

/* Queue index -> AF_XDP socket. Userspace may raise max_entries before loading. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} linen_xsks SEC(".maps");

/* Per-CPU decision counters, read by userspace (program.rs `ProgramCounters`). */
#define LINEN_STAT_STEERED 0 /* handed to bpf_redirect_map (socket or, if none, the kernel) */
#define LINEN_STAT_PASSED 1  /* left to the kernel by the filter */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} linen_stats SEC(".maps");

static __always_inline void count(__u32 key)
{
	__u64 *v = bpf_map_lookup_elem(&linen_stats, &key);

	if (v)
		*v += 1;
}

static __always_inline int to_socket(struct xdp_md *ctx)
{
	count(LINEN_STAT_STEERED);
	/* The low bits of flags are the action taken when the index holds no socket. */
	return bpf_redirect_map(&linen_xsks, ctx->rx_queue_index, XDP_PASS);
}

static __always_inline int ip6_equal(const __u8 *a, const __u8 *b)
{
	int i;

#pragma unroll
	for (i = 0; i < 16; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* Whether a frame is VXLAN for this VTEP: the filter of linen_underlay. */
static __always_inline int is_local_vxlan(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct linen_config *cfg;
	struct udphdr *udp;
	__u32 key = 0;

	if ((void *)(eth + 1) > data_end)
		return 0;

	cfg = bpf_map_lookup_elem(&linen_config, &key);
	if (!cfg || cfg->port == 0)
		return 0;

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if (!(cfg->flags & LINEN_CFG_IPV4))
			return 0;
		if ((void *)(ip + 1) > data_end)
			return 0;
		if (ip->version != 4 || ip->ihl < 5 || ip->protocol != IPPROTO_UDP)
			return 0;
		/* Fragments carry no (or a partial) UDP datagram: leave them to the kernel. */
		if (ip->frag_off & bpf_htons(0x3fff))
			return 0;
		if (ip->daddr != cfg->vtep_ip4)
			return 0;
		udp = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if (!(cfg->flags & LINEN_CFG_IPV6))
			return 0;
		if ((void *)(ip6 + 1) > data_end)
			return 0;
		/* Extension headers are not walked: such datagrams go to the kernel. */
		if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
			return 0;
		if (!ip6_equal(ip6->daddr.s6_addr, cfg->vtep_ip6))
			return 0;
		udp = (void *)(ip6 + 1);
	} else {
		/* ARP, 802.1Q/802.1ad tagged frames, LLDP, ...: the kernel's. */
		return 0;
	}

	if ((void *)(udp + 1) > data_end)
		return 0;
	return udp->dest == cfg->port;
}

SEC("xdp")
int linen_underlay(struct xdp_md *ctx)
{
	if (is_local_vxlan(ctx))
		return to_socket(ctx);
	count(LINEN_STAT_PASSED);
	return XDP_PASS;
}

SEC("xdp")
int linen_overlay(struct xdp_md *ctx)
{
	return to_socket(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
