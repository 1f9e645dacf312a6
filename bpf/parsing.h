/* Header parsing with a cursor: each parse_* checks bounds, fills what later steps
 * need, moves the cursor past its header and says what comes next. */
#ifndef LBFAST_PARSING_H
#define LBFAST_PARSING_H

#include "structs.h"

#define IP_DF 0x4000
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF
#define NEXTHDR_HOP_BY_HOP 0
#define NEXTHDR_ROUTING_HDR 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST_OPTS 60
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

struct vlan_hdr {
    __be16 tci;
    __be16 encapsulated_proto;
};

struct hdr_cursor {
    void *pos;
};

/* What the later steps need from a parsed packet. Offsets are from ctx->data. */
struct packet {
    struct flow_key key;
    __u32 l3_off;       /* 14, or 18 with a VLAN tag */
    __u32 l4_off;
    __u32 l3_len;       /* IP total length (IPv6: header + payload) */
    __u32 frame_len;
    __u8 tcp_flags;
    __u8 ttl;
    __u8 tos;
    __u8 df;            /* IPv4 don't-fragment set; always for IPv6 (no router fragments) */
    __be32 seq;         /* TCP: the handshake check (conntrack.h ct_handshake) */
    __be32 ack_seq;
};

enum parse_result {
    PARSE_OK,           /* TCP or UDP, key filled */
    PARSE_NOT_OURS,     /* not IP, or IP but neither TCP nor UDP */
    PARSE_MALFORMED,
    PARSE_FRAGMENT,
    PARSE_IP_OPTIONS,
    PARSE_ICMP,         /* ICMP or ICMPv6 (icmp.h reads on); key has the addresses only */
};

/* Ethernet plus at most one 802.1Q/802.1ad tag; returns the inner EtherType. */
static __always_inline int parse_ethhdr(struct hdr_cursor *c, void *data_end)
{
    struct ethhdr *eth = c->pos;
    if ((void *)(eth + 1) > data_end)
        return -1;
    c->pos = eth + 1;
    __be16 proto = eth->h_proto;
    if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
        struct vlan_hdr *vlan = c->pos;
        if ((void *)(vlan + 1) > data_end)
            return -1;
        c->pos = vlan + 1;
        proto = vlan->encapsulated_proto;
    }
    return bpf_ntohs(proto);
}

/* IPv4 without options (options pass to the kernel) carrying TCP, UDP or ICMP; returns
 * the L4 protocol. */
static __always_inline int parse_iphdr(struct hdr_cursor *c, void *data_end,
                                       struct packet *pkt)
{
    struct iphdr *iph = c->pos;
    if ((void *)(iph + 1) > data_end)
        return -PARSE_MALFORMED;
    if (iph->version != 4 || iph->ihl < 5)
        return -PARSE_MALFORMED;
    __u32 tot_len = bpf_ntohs(iph->tot_len);
    if (tot_len < iph->ihl * 4 || tot_len > (__u32)(data_end - (void *)iph))
        return -PARSE_MALFORMED;
    if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP &&
        iph->protocol != IPPROTO_ICMP)
        return -PARSE_NOT_OURS;
    if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
        return -PARSE_FRAGMENT;
    if (iph->ihl != 5)
        return -PARSE_IP_OPTIONS;
    pkt->key.src.v4 = iph->saddr;
    pkt->key.dst.v4 = iph->daddr;
    pkt->key.family = FAMILY_V4;
    pkt->l3_len = tot_len;
    pkt->ttl = iph->ttl;
    pkt->tos = iph->tos;
    pkt->df = !!(iph->frag_off & bpf_htons(IP_DF));
    c->pos = iph + 1;
    return iph->protocol;
}

/* IPv6 with TCP, UDP or ICMPv6 right after the fixed header; returns the L4 protocol. */
static __always_inline int parse_ip6hdr(struct hdr_cursor *c, void *data_end,
                                        struct packet *pkt)
{
    struct ipv6hdr *ip6h = c->pos;
    if ((void *)(ip6h + 1) > data_end)
        return -PARSE_MALFORMED;
    if (ip6h->version != 6)
        return -PARSE_MALFORMED;
    __u32 payload_len = bpf_ntohs(ip6h->payload_len);
    if (payload_len > (__u32)(data_end - (void *)(ip6h + 1)))
        return -PARSE_MALFORMED;
    __u8 next = ip6h->nexthdr;
    if (next == NEXTHDR_FRAGMENT)
        return -PARSE_FRAGMENT;
    if (next == NEXTHDR_HOP_BY_HOP || next == NEXTHDR_ROUTING_HDR || next == NEXTHDR_DEST_OPTS)
        return -PARSE_IP_OPTIONS;
    if (next != IPPROTO_TCP && next != IPPROTO_UDP && next != IPPROTO_ICMPV6)
        return -PARSE_NOT_OURS;
    __builtin_memcpy(&pkt->key.src, &ip6h->saddr, sizeof(pkt->key.src));
    __builtin_memcpy(&pkt->key.dst, &ip6h->daddr, sizeof(pkt->key.dst));
    pkt->key.family = FAMILY_V6;
    pkt->l3_len = sizeof(*ip6h) + payload_len;
    pkt->ttl = ip6h->hop_limit;
    pkt->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
    pkt->df = 1;
    c->pos = ip6h + 1;
    return next;
}

/* l4_len: bytes the IP header says follow it */
static __always_inline int parse_tcphdr(struct hdr_cursor *c, void *data_end,
                                        __u32 l4_len, struct packet *pkt)
{
    struct tcphdr *tcph = c->pos;
    if ((void *)(tcph + 1) > data_end || l4_len < sizeof(*tcph))
        return -PARSE_MALFORMED;
    if (tcph->doff < 5 || tcph->doff * 4 > l4_len)
        return -PARSE_MALFORMED;
    pkt->key.sport = tcph->source;
    pkt->key.dport = tcph->dest;
    pkt->tcp_flags = ((__u8 *)tcph)[13];
    pkt->seq = tcph->seq;
    pkt->ack_seq = tcph->ack_seq;
    return PARSE_OK;
}

static __always_inline int parse_udphdr(struct hdr_cursor *c, void *data_end,
                                        __u32 l4_len, struct packet *pkt)
{
    struct udphdr *udph = c->pos;
    if ((void *)(udph + 1) > data_end || l4_len < sizeof(*udph))
        return -PARSE_MALFORMED;
    __u32 udp_len = bpf_ntohs(udph->len);
    if (udp_len < sizeof(*udph) || udp_len > l4_len)
        return -PARSE_MALFORMED;
    pkt->key.sport = udph->source;
    pkt->key.dport = udph->dest;
    return PARSE_OK;
}

/* Ethernet -> IP -> TCP/UDP (or ICMP). Fills pkt and returns a parse_result. */
static __always_inline int parse_packet(struct xdp_md *ctx, struct packet *pkt)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct hdr_cursor c = { .pos = data };
    int proto;

    pkt->frame_len = data_end - data;
    int ethertype = parse_ethhdr(&c, data_end);
    if (ethertype < 0)
        return PARSE_MALFORMED;
    pkt->l3_off = c.pos - data;
    if (ethertype == ETH_P_IP)
        proto = parse_iphdr(&c, data_end, pkt);
    else if (ethertype == ETH_P_IPV6)
        proto = parse_ip6hdr(&c, data_end, pkt);
    else
        return PARSE_NOT_OURS;
    if (proto < 0)
        return -proto;

    pkt->l4_off = c.pos - data;
    pkt->key.proto = proto;
    if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6)
        return PARSE_ICMP;
    __u32 l4_len = pkt->l3_off + pkt->l3_len - pkt->l4_off;
    if (proto == IPPROTO_TCP)
        return parse_tcphdr(&c, data_end, l4_len, pkt) < 0 ? PARSE_MALFORMED : PARSE_OK;
    return parse_udphdr(&c, data_end, l4_len, pkt) < 0 ? PARSE_MALFORMED : PARSE_OK;
}

#endif
