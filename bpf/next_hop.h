/* Where a rewritten packet goes: the kernel's FIB gives the egress device and both MAC
 * addresses, cached in the conntrack entry; then a redirect (or XDP_TX, see
 * TX_ON_SAME_DEVICE). XDP never resolves neighbours: a packet whose next hop is unresolved
 * is passed, rewritten, to the kernel, which forwards it and resolves the hop itself; the
 * hop is also noted in neigh_wanted for the dataplane. Nothing is cached, so the flow's
 * next packet asks the FIB again. */
#ifndef LBFAST_NEXT_HOP_H
#define LBFAST_NEXT_HOP_H

#include "counters.h"
#include "parsing.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* The IP length once nat's rewrite is done (4 <-> 6 changes the header by 20 bytes). */
static __always_inline __u32 l3_len_after(const struct packet *pkt, const struct flow_nat *nat)
{
    if (nat->family == pkt->key.family)
        return pkt->l3_len;
    return nat->family == FAMILY_V6 ? pkt->l3_len + 20 : pkt->l3_len - 20;
}

/* FIB lookup for nat's tuple into nh, with the route's MTU (no tot_len is given, so the
 * FIB checks no size: the program compares every packet with the cached MTU, see
 * too_big.h). Returns REASON_NONE or why the packet cannot be sent (pass_no_neigh,
 * drop_fib). */
static __always_inline int resolve_next_hop(struct xdp_md *ctx, const struct packet *pkt,
                                            const struct flow_nat *nat, struct next_hop *nh)
{
    struct bpf_fib_lookup fib = {};
    fib.l4_protocol = pkt->key.proto;
    fib.sport = nat->sport;
    fib.dport = nat->dport;
    fib.ifindex = ctx->ingress_ifindex;
    if (nat->family == FAMILY_V4) {
        fib.family = AF_INET;
        fib.tos = pkt->tos;
        fib.ipv4_src = nat->src.v4;
        fib.ipv4_dst = nat->dst.v4;
    } else {
        fib.family = AF_INET6;
        __builtin_memcpy(fib.ipv6_src, &nat->src, 16);
        __builtin_memcpy(fib.ipv6_dst, &nat->dst, 16);
    }
    int rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), FIB_LOOKUP_FLAGS);
    if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
        /* the FIB left the next hop (gateway or destination) and its device in fib */
        struct neigh_key hop = { .ifindex = fib.ifindex, .family = nat->family };
        if (nat->family == FAMILY_V4)
            hop.addr.v4 = fib.ipv4_dst;
        else
            __builtin_memcpy(&hop.addr, fib.ipv6_dst, 16);
        __u64 now = bpf_jiffies64();
        neigh_wanted.update(&hop, &now);
        return REASON_PASS_NO_NEIGH;
    }
    if (rc != BPF_FIB_LKUP_RET_SUCCESS)
        return REASON_DROP_FIB;
    __builtin_memcpy(nh->dmac, fib.dmac, ETH_ALEN);
    __builtin_memcpy(nh->smac, fib.smac, ETH_ALEN);
    nh->ifindex = fib.ifindex;
    nh->mtu = fib.mtu_result ? fib.mtu_result : 0xffff;
    nh->pad = 0;
    return REASON_NONE;
}

/* A new flow's next hop: the one its server's previous new flow resolved, renewed about
 * once a second, so new flows cost one FIB lookup per server and second rather than
 * one each. (Routes that pick by source port, or multipath hashing, are thereby chosen
 * per server and second rather than per flow.) */
static __always_inline int server_next_hop(struct xdp_md *ctx, const struct packet *pkt,
                                           struct server *srv, struct flow_nat *fwd,
                                           __u64 now)
{
    if (srv->nh.ifindex && now - srv->nh_seen <= CT_REFRESH_JIFFIES) {
        fwd->nh = srv->nh;
        return REASON_NONE;
    }
    int unsent = resolve_next_hop(ctx, pkt, fwd, &fwd->nh);
    if (!unsent) {
        srv->nh = fwd->nh;
        srv->nh_seen = now;
    }
    return unsent;
}

static __always_inline int send_out(struct xdp_md *ctx, __u32 ifindex)
{
    if (TX_ON_SAME_DEVICE && ifindex == ctx->ingress_ifindex)
        return XDP_TX;
    return bpf_redirect(ifindex, 0);
}

/* The verdict for a rewritten packet that resolve_next_hop could not place: the kernel
 * routes a packet whose next hop is unresolved (and queues it until the neighbour
 * answers); one the FIB cannot route is dropped. */
static __always_inline int unsent_verdict(int reason)
{
    return verdict(reason == REASON_PASS_NO_NEIGH ? XDP_PASS : XDP_DROP, reason);
}

/* next_hop starts with dmac, smac: the first 12 bytes of the Ethernet header, copied as
 * two words (a memcpy into the packed ethhdr would go byte by byte) */
static __always_inline int send_via(struct xdp_md *ctx, const struct next_hop *nh)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    if (data + ETH_HLEN > data_end)
        return verdict(XDP_DROP, REASON_DROP_MALFORMED);
    *(__u64 *)data = *(const __u64 *)nh->dmac;
    *(__u32 *)(data + 8) = *(const __u32 *)(nh->dmac + 8);
    return send_out(ctx, nh->ifindex);
}

#endif
