/* A rewritten packet larger than its next hop's MTU (cached with the next hop): XDP
 * cannot fragment, so like a router the LB answers the sender with ICMP fragmentation
 * needed (IPv4 with DF) or packet too big (IPv6), carrying the size it must keep to;
 * its path-MTU discovery then works through the LB. IPv4 without DF is dropped
 * (drop_frag_needed). The answer goes out the device the packet came in on, from the
 * address the packet was sent to, and quotes its IP header and first 8 bytes of L4. */
#ifndef LBFAST_TOO_BIG_H
#define LBFAST_TOO_BIG_H

#include "checksum.h"
#include "icmp.h"
#include "next_hop.h"
#include "reset.h"

#define QUOTE_L4 8
#define ICMP_TTL 64
#define IPV6_MIN_MTU 1280

/* Does the packet, once rewritten to nat, fit its next hop? (an unknown MTU is 0xffff) */
static __always_inline int fits_next_hop(const struct packet *pkt, const struct flow_nat *nat,
                                         const struct next_hop *nh)
{
    return l3_len_after(pkt, nat) <= nh->mtu;
}

/* The size the sender must keep to: the next hop's MTU less what the rewrite adds. */
static __always_inline __u32 sender_mtu(const struct packet *pkt, const struct flow_nat *nat,
                                        const struct next_hop *nh)
{
    __u32 mtu = nh->mtu + pkt->l3_len - l3_len_after(pkt, nat);
    if (pkt->key.family == FAMILY_V6 && mtu < IPV6_MIN_MTU)
        mtu = IPV6_MIN_MTU;
    return mtu;
}

/* One's-complement sum of `words` 16-bit words (a constant count, unrolled). */
static __always_inline __u64 sum_words(const __u16 *w, int words)
{
    __u64 sum = 0;
#pragma unroll
    for (int i = 0; i < words; i++)
        sum += w[i];
    return sum;
}

/* Make room for the new IP and ICMP headers in front of the packet's IP header (the L2
 * header moves to the new front) and cut the packet after the quote. Returns 0. */
static __always_inline int icmp_frame(struct xdp_md *ctx, __u32 l2_len, int grow, __u32 keep)
{
    if (bpf_xdp_adjust_head(ctx, -grow))
        return -1;
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    if (data + grow + l2_len > data_end)
        return -1;
    __builtin_memcpy(data, data + grow, ETH_HLEN);      /* no overlap: 14 < grow */
    if (l2_len > ETH_HLEN)
        __builtin_memcpy(data + ETH_HLEN, data + grow + ETH_HLEN, sizeof(struct vlan_hdr));
    int cut = (int)(data_end - data) - (int)keep;
    if (cut < 0 || (cut > 0 && bpf_xdp_adjust_tail(ctx, -cut)))
        return -1;
    return 0;
}

static __always_inline int write_frag_needed(struct xdp_md *ctx, const struct packet *pkt,
                                             __u32 mtu, __u32 l2_len)
{
    const int grow = sizeof(struct iphdr) + ICMP_HLEN;
    const __u32 quote = sizeof(struct iphdr) + QUOTE_L4;
    if (icmp_frame(ctx, l2_len, grow, l2_len + grow + quote))
        return XDP_DROP;
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct iphdr *iph = data + l2_len;
    struct icmphdr *icmph = (void *)(iph + 1);
    if ((void *)icmph + ICMP_HLEN + quote > data_end)
        return XDP_DROP;
    swap_macs(data);
    iph->version = 4;
    iph->ihl = 5;
    iph->tos = 0xc0;                    /* internetwork control, as the kernel's errors */
    iph->tot_len = bpf_htons(grow + quote);
    iph->id = 0;
    iph->frag_off = 0;
    iph->ttl = ICMP_TTL;
    iph->protocol = IPPROTO_ICMP;
    iph->saddr = pkt->key.dst.v4;
    iph->daddr = pkt->key.src.v4;
    iph->check = 0;
    iph->check = ipv4_header_csum(iph);
    icmph->type = ICMP_DEST_UNREACH;
    icmph->code = ICMP_FRAG_NEEDED;
    icmph->checksum = 0;
    icmph->un.frag.__unused = 0;
    icmph->un.frag.mtu = bpf_htons(mtu);
    icmph->checksum = fold_csum(sum_words((__u16 *)icmph, (ICMP_HLEN + quote) / 2));
    return send_out(ctx, ctx->ingress_ifindex);
}

static __always_inline int write_packet_too_big(struct xdp_md *ctx, const struct packet *pkt,
                                                __u32 mtu, __u32 l2_len)
{
    const int grow = sizeof(struct ipv6hdr) + ICMP_HLEN;
    const __u32 quote = sizeof(struct ipv6hdr) + QUOTE_L4;
    if (icmp_frame(ctx, l2_len, grow, l2_len + grow + quote))
        return XDP_DROP;
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ipv6hdr *ip6h = data + l2_len;
    struct icmp6hdr *icmph = (void *)(ip6h + 1);
    if ((void *)icmph + ICMP_HLEN + quote > data_end)
        return XDP_DROP;
    swap_macs(data);
    ip6h->version = 6;
    ip6h->priority = 0;
    ip6h->flow_lbl[0] = ip6h->flow_lbl[1] = ip6h->flow_lbl[2] = 0;
    ip6h->payload_len = bpf_htons(ICMP_HLEN + quote);
    ip6h->nexthdr = IPPROTO_ICMPV6;
    ip6h->hop_limit = ICMP_TTL;
    __builtin_memcpy(&ip6h->saddr, &pkt->key.dst, 16);
    __builtin_memcpy(&ip6h->daddr, &pkt->key.src, 16);
    icmph->icmp6_type = ICMPV6_PKT_TOOBIG;
    icmph->icmp6_code = 0;
    icmph->icmp6_cksum = 0;
    icmph->icmp6_mtu = bpf_htonl(mtu);
    /* pseudo-header: both addresses (the 16 words in front), length, next header */
    __u64 sum = sum_words((__u16 *)&ip6h->saddr, 16) + bpf_htons(ICMP_HLEN + quote) +
                bpf_htons(IPPROTO_ICMPV6);
    sum += sum_words((__u16 *)icmph, (ICMP_HLEN + quote) / 2);
    icmph->icmp6_cksum = fold_csum(sum);
    return send_out(ctx, ctx->ingress_ifindex);
}

static __always_inline int answer_too_big(struct xdp_md *ctx, const struct packet *pkt,
                                          __u32 mtu)
{
    if (!pkt->df)
        return verdict(XDP_DROP, REASON_DROP_FRAG_NEEDED);
    count_reason(REASON_TX_TOO_BIG);
    __u32 l2_len = pkt->l3_off == ETH_HLEN ? ETH_HLEN : ETH_HLEN + sizeof(struct vlan_hdr);
    /* constant L2 lengths let the verifier check the header writes statically */
    const __u32 tagged = ETH_HLEN + sizeof(struct vlan_hdr);
    if (pkt->key.family == FAMILY_V4)
        return l2_len == ETH_HLEN ? write_frag_needed(ctx, pkt, mtu, ETH_HLEN)
                                  : write_frag_needed(ctx, pkt, mtu, tagged);
    return l2_len == ETH_HLEN ? write_packet_too_big(ctx, pkt, mtu, ETH_HLEN)
                              : write_packet_too_big(ctx, pkt, mtu, tagged);
}

#endif
