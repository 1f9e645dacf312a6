/* Full-NAT rewrite of a parsed packet to a conntrack entry's tuple: ports and the L4
 * checksum first (same place in every case), then the IP header, which keeps its family
 * or is translated 4<->6 by growing or shrinking the headroom by 20 bytes. */
#ifndef LBFAST_NAT_H
#define LBFAST_NAT_H

#include "checksum.h"
#include "parsing.h"

#define V4_V6_GROWTH ((int)(sizeof(struct ipv6hdr) - sizeof(struct iphdr)))

/* Ports and L4 checksum. Returns REASON_NONE or a reason to drop. */
static __always_inline int rewrite_l4(struct xdp_md *ctx, struct packet *pkt,
                                      const struct flow_nat *nat)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    __u32 off = pkt->l4_off;
    if (off > 18 + sizeof(struct ipv6hdr))
        return REASON_DROP_MALFORMED;
    __u16 *l4 = data + off;           /* source port, dest port: same for TCP and UDP */
    if ((void *)(l4 + 4) > data_end)
        return REASON_DROP_MALFORMED;
    __u16 *check = pkt->key.proto == IPPROTO_TCP ? &l4[8] : &l4[3];
    if ((void *)(check + 1) > data_end)
        return REASON_DROP_MALFORMED;

    int zero_udp = pkt->key.proto == IPPROTO_UDP && *check == 0;
    if (zero_udp && nat->family == FAMILY_V6)
        return REASON_DROP_UDP_ZERO_CSUM;
    if (!zero_udp) {   /* an absent IPv4 UDP checksum stays absent */
        struct tuple_ref from = {
            .src = &pkt->key.src, .dst = &pkt->key.dst,
            .ports = ports_word(pkt->key.sport, pkt->key.dport), .family = pkt->key.family,
        };
        struct tuple_ref to = {
            .src = &nat->src, .dst = &nat->dst,
            .ports = ports_word(nat->sport, nat->dport), .family = nat->family,
        };
        __u16 sum = csum_replace_tuple(*check, &from, &to);
        if (sum == 0 && pkt->key.proto == IPPROTO_UDP)
            sum = 0xffff;
        *check = sum;
    }
    l4[0] = nat->sport;
    l4[1] = nat->dport;
    return REASON_NONE;
}

static __always_inline void write_ipv4(struct iphdr *iph, struct packet *pkt,
                                       const struct flow_nat *nat, __u16 tot_len)
{
    iph->version = 4;
    iph->ihl = 5;
    iph->tos = pkt->tos;
    iph->tot_len = bpf_htons(tot_len);
    iph->id = 0;
    iph->frag_off = bpf_htons(IP_DF);
    iph->ttl = pkt->ttl - 1;
    iph->protocol = pkt->key.proto;
    iph->saddr = nat->src.v4;
    iph->daddr = nat->dst.v4;
    iph->check = 0;
    iph->check = ipv4_header_csum(iph);
}

static __always_inline void write_ipv6(struct ipv6hdr *ip6h, struct packet *pkt,
                                       const struct flow_nat *nat, __u16 payload_len)
{
    ip6h->version = 6;
    ip6h->priority = pkt->tos >> 4;
    ip6h->flow_lbl[0] = (pkt->tos & 0xf) << 4;
    ip6h->flow_lbl[1] = 0;
    ip6h->flow_lbl[2] = 0;
    ip6h->payload_len = bpf_htons(payload_len);
    ip6h->nexthdr = pkt->key.proto;
    ip6h->hop_limit = pkt->ttl - 1;
    __builtin_memcpy(&ip6h->saddr, &nat->src, 16);
    __builtin_memcpy(&ip6h->daddr, &nat->dst, 16);
}

/* The EtherType is the last two bytes of the L2 header, with or without a VLAN tag. */
static __always_inline int set_ethertype(void *data, void *data_end, __u32 l2_len,
                                         __u16 proto)
{
    __be16 *type = data + l2_len - 2;
    if ((void *)(type + 1) > data_end)
        return -1;
    *type = bpf_htons(proto);
    return 0;
}

/* Same family: addresses in place, TTL down, IPv4 checksum recomputed. */
static __always_inline int rewrite_l3_same(struct xdp_md *ctx, struct packet *pkt,
                                           const struct flow_nat *nat, __u32 l2_len)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    if (nat->family == FAMILY_V4) {
        struct iphdr *iph = data + l2_len;
        if ((void *)(iph + 1) > data_end)
            return REASON_DROP_MALFORMED;
        /* incremental (RFC 1624) over the TTL/protocol word and both addresses; each
         * term is added on its own so the 64-bit sum takes the carries */
        __u16 *ttl_proto = (__u16 *)&iph->ttl;
        __u64 sum = (__u16)~iph->check;
        sum += (__u16)~*ttl_proto;
        sum += (__u32)~iph->saddr;
        sum += (__u32)~iph->daddr;
        iph->ttl = pkt->ttl - 1;
        iph->saddr = nat->src.v4;
        iph->daddr = nat->dst.v4;
        sum += *ttl_proto;
        sum += nat->src.v4;
        sum += nat->dst.v4;
        iph->check = fold_csum(sum);
        return REASON_NONE;
    }
    struct ipv6hdr *ip6h = data + l2_len;
    if ((void *)(ip6h + 1) > data_end)
        return REASON_DROP_MALFORMED;
    ip6h->hop_limit = pkt->ttl - 1;
    __builtin_memcpy(&ip6h->saddr, &nat->src, 16);
    __builtin_memcpy(&ip6h->daddr, &nat->dst, 16);
    return REASON_NONE;
}

/* IPv4 -> IPv6: 20 more bytes of headroom, L2 header moved to the new front. */
static __always_inline int rewrite_l3_4to6(struct xdp_md *ctx, struct packet *pkt,
                                           const struct flow_nat *nat, __u32 l2_len)
{
    if (bpf_xdp_adjust_head(ctx, -V4_V6_GROWTH))
        return REASON_DROP_MALFORMED;
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    if (data + V4_V6_GROWTH + l2_len + sizeof(struct ipv6hdr) > data_end)
        return REASON_DROP_MALFORMED;
    __builtin_memcpy(data, data + V4_V6_GROWTH, ETH_HLEN);   /* no overlap: 14 < 20 */
    if (l2_len > ETH_HLEN)
        __builtin_memcpy(data + ETH_HLEN, data + V4_V6_GROWTH + ETH_HLEN,
                         sizeof(struct vlan_hdr));
    if (set_ethertype(data, data_end, l2_len, ETH_P_IPV6))
        return REASON_DROP_MALFORMED;
    struct ipv6hdr *ip6h = data + l2_len;
    if ((void *)(ip6h + 1) > data_end)
        return REASON_DROP_MALFORMED;
    write_ipv6(ip6h, pkt, nat, pkt->l3_len - sizeof(struct iphdr));
    pkt->l3_len += V4_V6_GROWTH;
    return REASON_NONE;
}

/* IPv6 -> IPv4: L2 header moved 20 bytes in, then the front is cut. */
static __always_inline int rewrite_l3_6to4(struct xdp_md *ctx, struct packet *pkt,
                                           const struct flow_nat *nat, __u32 l2_len)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    if (data + V4_V6_GROWTH + l2_len > data_end)
        return REASON_DROP_MALFORMED;
    if (l2_len > ETH_HLEN)
        __builtin_memcpy(data + V4_V6_GROWTH + ETH_HLEN, data + ETH_HLEN,
                         sizeof(struct vlan_hdr));
    __builtin_memcpy(data + V4_V6_GROWTH, data, ETH_HLEN);   /* no overlap: 14 < 20 */
    if (bpf_xdp_adjust_head(ctx, V4_V6_GROWTH))
        return REASON_DROP_MALFORMED;
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    if (set_ethertype(data, data_end, l2_len, ETH_P_IP))
        return REASON_DROP_MALFORMED;
    struct iphdr *iph = data + l2_len;
    if ((void *)(iph + 1) > data_end)
        return REASON_DROP_MALFORMED;
    pkt->l3_len -= V4_V6_GROWTH;
    write_ipv4(iph, pkt, nat, pkt->l3_len);
    return REASON_NONE;
}

static __always_inline int rewrite_l3(struct xdp_md *ctx, struct packet *pkt,
                                      const struct flow_nat *nat, __u32 l2_len)
{
    if (nat->family == pkt->key.family)
        return rewrite_l3_same(ctx, pkt, nat, l2_len);
    if (nat->family == FAMILY_V6)
        return rewrite_l3_4to6(ctx, pkt, nat, l2_len);
    return rewrite_l3_6to4(ctx, pkt, nat, l2_len);
}

/* Rewrite to nat's tuple. Returns REASON_NONE or a reason to drop; pkt->l3_len follows
 * the new IP header. */
static __always_inline int nat_rewrite(struct xdp_md *ctx, struct packet *pkt,
                                       const struct flow_nat *nat)
{
    int reason = rewrite_l4(ctx, pkt, nat);
    if (reason)
        return reason;
    /* constant L2 lengths let the verifier check the header writes statically */
    if (pkt->l3_off == ETH_HLEN)
        return rewrite_l3(ctx, pkt, nat, ETH_HLEN);
    return rewrite_l3(ctx, pkt, nat, ETH_HLEN + sizeof(struct vlan_hdr));
}

#endif
