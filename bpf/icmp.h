/* ICMP errors about NATed flows, translated as nf_nat and IPVS do (RFC 5508 4.1): a
 * server, or a router between the LB and a server, reports a problem with a packet the
 * LB sent it (port unreachable, fragmentation needed, time exceeded) to the SNAT
 * address; a router on the client's side reports one about a reply to the VIP. Without
 * this the kernel drops them (no socket has that address and port), so path-MTU
 * discovery through the LB fails and UDP clients never hear of a closed port.
 *
 * An error quotes the packet it is about; that packet's tuple reversed is a conntrack
 * key whose entry is the flow. The error then travels as that entry's packets do (outer
 * addresses, next hop), and its quote is put back to what the other end sent before the
 * NAT. Checksums are updated incrementally, the quoted L4 one when it is in the quote.
 * Errors of flows translated between IPv4 and IPv6 pass to the kernel (pass_icmp_family).
 */
#ifndef LBFAST_ICMP_H
#define LBFAST_ICMP_H

#include <linux/icmp.h>
#include <linux/icmpv6.h>

#include "checksum.h"
#include "conntrack.h"
#include "nat.h"
#include "next_hop.h"

#define ICMP_HLEN 8     /* type, code, checksum, 4 bytes of rest: then the quote */
#define QUOTED_L4 8     /* what RFC 792 promises of the quoted packet's L4 header */

static __always_inline int icmp4_is_error(__u8 type)
{
    return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED;
}

static __always_inline int icmp6_is_error(__u8 type)
{
    return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG ||
           type == ICMPV6_TIME_EXCEED;
}

/* The quoted L4 header: ports back to the pre-NAT ones, its checksum updated when the
 * quote holds it (UDP's always does; zero means none) by `change` (the addresses',
 * which its pseudo-header covers, and the ports'). Returns the ICMP checksum's change
 * for the ports and that checksum. */
static __always_inline __u64 quote_rewrite_l4(void *l4, void *data_end, __u8 proto,
                                              __u32 ports, __u64 change)
{
    __u32 *old_ports = l4;
    __u64 icmp_change = csum_change32(*old_ports, ports);
    change += icmp_change;
    *old_ports = ports;
    __u16 *check = proto == IPPROTO_TCP ? l4 + 16 : l4 + 6;
    if ((void *)(check + 1) > data_end || (proto == IPPROTO_UDP && *check == 0))
        return icmp_change;
    __u16 old = *check;
    __u16 new = csum_apply(old, change);
    if (new == 0 && proto == IPPROTO_UDP)
        new = 0xffff;
    *check = new;
    return icmp_change + csum_change16(old, new);
}

/* Both ports of the pre-NAT quote, as they lie in memory: the entry's rewrite, reversed */
static __always_inline __u32 quote_ports(const struct flow_nat *nat)
{
    return ports_word(nat->dport, nat->sport);
}

static __always_inline int send_icmp_error(struct xdp_md *ctx, struct packet *pkt,
                                           struct flow_nat *nat, __u32 l2_len)
{
    int reason = rewrite_l3_same(ctx, pkt, nat, l2_len);
    if (reason)
        return verdict(XDP_DROP, reason);
    if (!nat->nh.ifindex) {
        int unsent = resolve_next_hop(ctx, pkt, nat, &nat->nh);
        if (unsent)
            return unsent_verdict(unsent);
    }
    count_reason(REASON_TX_ICMP);
    return send_via(ctx, &nat->nh);
}

/* IPv4: ICMP after a 20-byte header (options pass), quoting an option-less IPv4 header. */
static __always_inline int icmp4_translate(struct xdp_md *ctx, struct packet *pkt,
                                           __u32 l2_len)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct icmphdr *icmph = data + l2_len + sizeof(struct iphdr);
    struct iphdr *q = (void *)icmph + ICMP_HLEN;
    __u32 *q_l4 = (void *)(q + 1);
    if ((void *)q_l4 + QUOTED_L4 > data_end)
        return XDP_PASS;    /* not an error we can read (or not an error at all) */
    if (!icmp4_is_error(icmph->type) || q->version != 4 || q->ihl != 5 ||
        (q->protocol != IPPROTO_TCP && q->protocol != IPPROTO_UDP) ||
        q->saddr != pkt->key.dst.v4)
        return XDP_PASS;

    /* the flow's key is the quoted tuple reversed (ports: dport high, sport low) */
    struct flow_key4 key = {
        .src = q->daddr, .dst = q->saddr,
        .sport = *q_l4 >> 16, .dport = *q_l4 & 0xffff, .proto = q->protocol,
    };
    struct flow_nat *nat = conntrack.lookup(&key);
    if (!nat)
        return XDP_PASS;    /* about the host's own traffic */
    if (nat->family != FAMILY_V4)
        return verdict(XDP_PASS, REASON_PASS_ICMP_FAMILY);
    if (pkt->ttl <= 1)
        return verdict(XDP_PASS, REASON_PASS_TTL);

    /* the quote becomes what the flow's other end sent */
    __u64 addrs = csum_change32(q->saddr, nat->dst.v4) + csum_change32(q->daddr, nat->src.v4);
    __u64 icmp = addrs + quote_rewrite_l4(q_l4, data_end, q->protocol, quote_ports(nat), addrs);
    __u16 q_check = csum_apply(q->check, addrs);
    icmp += csum_change16(q->check, q_check);
    q->saddr = nat->dst.v4;
    q->daddr = nat->src.v4;
    q->check = q_check;
    icmph->checksum = csum_apply(icmph->checksum, icmp);
    return send_icmp_error(ctx, pkt, nat, l2_len);
}

/* IPv6: ICMPv6 right after the fixed header, quoting a header with TCP/UDP next. Its
 * checksum also covers the outer addresses (pseudo-header), which change too. */
static __always_inline int icmp6_translate(struct xdp_md *ctx, struct packet *pkt,
                                           __u32 l2_len)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct icmp6hdr *icmph = data + l2_len + sizeof(struct ipv6hdr);
    struct ipv6hdr *q = (void *)icmph + ICMP_HLEN;
    __u32 *q_l4 = (void *)(q + 1);
    if ((void *)q_l4 + QUOTED_L4 > data_end)
        return XDP_PASS;
    if (!icmp6_is_error(icmph->icmp6_type) || q->version != 6 ||
        (q->nexthdr != IPPROTO_TCP && q->nexthdr != IPPROTO_UDP))
        return XDP_PASS;

    struct flow_key key = {
        .sport = *q_l4 >> 16, .dport = *q_l4 & 0xffff, .proto = q->nexthdr,
        .family = FAMILY_V6,
    };
    __builtin_memcpy(&key.src, &q->daddr, 16);
    __builtin_memcpy(&key.dst, &q->saddr, 16);
    if (!addr_eq(&key.dst, &pkt->key.dst, FAMILY_V6))
        return XDP_PASS;
    struct flow_nat *nat = conntrack6.lookup(&key);
    if (!nat)
        return XDP_PASS;
    if (nat->family != FAMILY_V6)
        return verdict(XDP_PASS, REASON_PASS_ICMP_FAMILY);
    if (pkt->ttl <= 1)
        return verdict(XDP_PASS, REASON_PASS_TTL);

    __u64 addrs = csum_change_addr6(key.dst.v6, &nat->dst) +
                  csum_change_addr6(key.src.v6, &nat->src);
    __u64 icmp = addrs + quote_rewrite_l4(q_l4, data_end, q->nexthdr, quote_ports(nat), addrs);
    /* the pseudo-header: the outer addresses become the entry's (as rewrite_l3_same does) */
    icmp += csum_change_addr6(pkt->key.src.v6, &nat->src) +
            csum_change_addr6(pkt->key.dst.v6, &nat->dst);
    __builtin_memcpy(&q->saddr, &nat->dst, 16);
    __builtin_memcpy(&q->daddr, &nat->src, 16);
    icmph->icmp6_cksum = csum_apply(icmph->icmp6_cksum, icmp);
    return send_icmp_error(ctx, pkt, nat, l2_len);
}

/* An ICMP or ICMPv6 packet (parse_packet's PARSE_ICMP): errors about NATed flows go on,
 * everything else (echo to a VIP, errors for the host's own sockets) to the kernel. */
static __always_inline int forward_icmp_error(struct xdp_md *ctx, struct packet *pkt)
{
    /* constant L2 lengths let the verifier check the offsets statically */
    if (pkt->key.family == FAMILY_V4)
        return pkt->l3_off == ETH_HLEN
                   ? icmp4_translate(ctx, pkt, ETH_HLEN)
                   : icmp4_translate(ctx, pkt, ETH_HLEN + sizeof(struct vlan_hdr));
    return pkt->l3_off == ETH_HLEN
               ? icmp6_translate(ctx, pkt, ETH_HLEN)
               : icmp6_translate(ctx, pkt, ETH_HLEN + sizeof(struct vlan_hdr));
}

#endif
