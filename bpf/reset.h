/* Answer a packet of a purged flow (on_marked_down shutdown_sessions) with a TCP RST,
 * sent back out the device it came in on. The sequence number is the one the sender expects
 * (its ACK), so its stack accepts the RST at once. The control plane elicits such a
 * packet from each side of an idle flow (lbfast/xdp/purge.py). */
#ifndef LBFAST_RESET_H
#define LBFAST_RESET_H

#include "checksum.h"
#include "conntrack.h"
#include "next_hop.h"

#define RST_TTL 64

/* Pseudo-header words for a 20-byte TCP segment; returns bytes. */
static __always_inline __u32 rst_pseudo_words(__be32 *w, const struct flow_key *k)
{
    if (k->family == FAMILY_V4) {
        w[0] = k->dst.v4;               /* the reply's source */
        w[1] = k->src.v4;
        w[2] = bpf_htonl((IPPROTO_TCP << 16) | sizeof(struct tcphdr));
        return 12;
    }
    __builtin_memcpy(&w[0], &k->dst, 16);
    __builtin_memcpy(&w[4], &k->src, 16);
    w[8] = bpf_htonl(sizeof(struct tcphdr));
    w[9] = bpf_htonl(IPPROTO_TCP);
    return 40;
}

static __always_inline void swap_macs(struct ethhdr *eth)
{
    __u8 tmp[ETH_ALEN];
    __builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
    __builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
    __builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

static __always_inline int write_reset(struct xdp_md *ctx, const struct packet *pkt,
                                       __u32 l2_len)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    __u32 l3_hlen = pkt->key.family == FAMILY_V4 ? sizeof(struct iphdr)
                                                 : sizeof(struct ipv6hdr);
    struct tcphdr *th = data + l2_len + l3_hlen;
    if ((void *)(th + 1) > data_end)
        return XDP_DROP;

    /* what the reply acknowledges: the whole incoming segment */
    __u32 seg_len = pkt->l3_len - l3_hlen - th->doff * 4 + th->syn + th->fin;
    __be32 seq = 0, ack_seq = 0;
    int with_ack = !th->ack;
    if (th->ack)
        seq = th->ack_seq;
    else
        ack_seq = bpf_htonl(bpf_ntohl(th->seq) + seg_len);

    /* cut everything after the bare TCP header */
    int cut = (int)(data_end - (void *)(th + 1));
    if (cut > 0 && bpf_xdp_adjust_tail(ctx, -cut))
        return XDP_DROP;
    data = (void *)(long)ctx->data;
    data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    th = data + l2_len + l3_hlen;
    if ((void *)(th + 1) > data_end)
        return XDP_DROP;
    swap_macs(eth);

    if (pkt->key.family == FAMILY_V4) {
        struct iphdr *iph = data + l2_len;
        iph->tot_len = bpf_htons(sizeof(*iph) + sizeof(*th));
        iph->id = 0;
        iph->frag_off = bpf_htons(IP_DF);
        iph->ttl = RST_TTL;
        iph->saddr = pkt->key.dst.v4;
        iph->daddr = pkt->key.src.v4;
        iph->check = 0;
        iph->check = ipv4_header_csum(iph);
    } else {
        struct ipv6hdr *ip6h = data + l2_len;
        ip6h->payload_len = bpf_htons(sizeof(*th));
        ip6h->hop_limit = RST_TTL;
        __builtin_memcpy(&ip6h->saddr, &pkt->key.dst, 16);
        __builtin_memcpy(&ip6h->daddr, &pkt->key.src, 16);
    }

    th->source = pkt->key.dport;
    th->dest = pkt->key.sport;
    th->seq = seq;
    th->ack_seq = ack_seq;
    ((__u8 *)th)[12] = 5 << 4;                     /* data offset 5, no options */
    ((__u8 *)th)[13] = TCP_RST | (with_ack ? TCP_ACK : 0);
    th->window = 0;
    th->urg_ptr = 0;
    th->check = 0;

    __be32 pseudo[10];
    __u32 pseudo_size = rst_pseudo_words(pseudo, &pkt->key);
    if (pseudo_size != 12)
        pseudo_size = 40;
    __s64 sum = bpf_csum_diff(0, 0, pseudo, pseudo_size, 0);
    sum = bpf_csum_diff(0, 0, (__be32 *)th, sizeof(*th), (__u32)sum);
    th->check = fold_csum((__u64)sum);
    return send_out(ctx, ctx->ingress_ifindex);
}

/* A packet of a flow marked CT_F_RESET. The flow closes here (counters lowered once);
 * later packets of it get a RST too until the entry expires or a new SYN reuses it. */
static __always_inline int reply_with_reset(struct xdp_md *ctx, const struct packet *pkt,
                                            struct flow_nat *nat)
{
    if (!(nat->flags & CT_F_CLOSED)) {
        struct flow_key peer_key;
        ct_peer_key(nat, pkt->key.proto, &peer_key);
        ct_close(nat, ct_lookup(&peer_key));
    }
    if (pkt->key.proto != IPPROTO_TCP || (pkt->tcp_flags & TCP_RST))
        return XDP_DROP;
    count_reason(REASON_TX_RESET);
    if (pkt->l3_off == ETH_HLEN)
        return write_reset(ctx, pkt, ETH_HLEN);
    return write_reset(ctx, pkt, ETH_HLEN + sizeof(struct vlan_hdr));
}

#endif
