/* Internet checksums: incremental L4 updates (the payload is never summed again) and a
 * full sum of the 20-byte IPv4 header the program writes. The update is plain
 * arithmetic: the bpf_csum_diff helper cost a quarter of an established packet here. */
#ifndef LBFAST_CHECKSUM_H
#define LBFAST_CHECKSUM_H

#include "structs.h"

static __always_inline __u16 fold_csum(__u64 sum)
{
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

/* Incremental L4 checksum update for a changed 5-tuple (RFC 1624: add the complement
 * of each old word and each new word; 32-bit words folded at the end give the same
 * one's-complement sum as 16-bit ones). Only the pseudo-header addresses and the ports
 * count: length and protocol weigh the same in the IPv4 and IPv6 pseudo-headers, so
 * this also covers a 4 <-> 6 translation. */
static __always_inline __u64 csum_add_addr(__u64 sum, const union addr *a, __u8 family,
                                           __u32 flip)
{
    sum += a->v6[0] ^ flip;
    if (family == FAMILY_V6) {
        sum += a->v6[1] ^ flip;
        sum += a->v6[2] ^ flip;
        sum += a->v6[3] ^ flip;
    }
    return sum;
}

/* The two ports as one word, as they lie in memory. */
static __always_inline __u32 ports_word(__be16 sport, __be16 dport)
{
    return ((__u32)dport << 16) | sport;
}

struct tuple_ref {
    const union addr *src;
    const union addr *dst;
    __u32 ports;
    __u8 family;
};

static __always_inline __u16 csum_replace_tuple(__u16 csum, const struct tuple_ref *from,
                                                const struct tuple_ref *to)
{
    if (from->family == FAMILY_V4 && to->family == FAMILY_V4) {    /* the common case */
        __u64 sum = (__u16)~csum;
        sum += (__u32)~from->src->v4;
        sum += (__u32)~from->dst->v4;
        sum += (__u32)~from->ports;
        sum += to->src->v4;
        sum += to->dst->v4;
        sum += to->ports;
        return fold_csum(sum);
    }
    __u64 sum = (__u16)~csum;
    sum = csum_add_addr(sum, from->src, from->family, 0xffffffff);
    sum = csum_add_addr(sum, from->dst, from->family, 0xffffffff);
    sum += from->ports ^ 0xffffffff;
    sum = csum_add_addr(sum, to->src, to->family, 0);
    sum = csum_add_addr(sum, to->dst, to->family, 0);
    sum += to->ports;
    return fold_csum(sum);
}

/* A checksum change word by word (icmp.h): the sum of each old word's complement and
 * each new word, added to the complemented checksum and folded. */
static __always_inline __u64 csum_change16(__u16 old, __u16 new)
{
    return (__u16)~old + new;
}

static __always_inline __u64 csum_change32(__u32 old, __u32 new)
{
    return (__u64)(__u32)~old + new;
}

static __always_inline __u16 csum_apply(__u16 check, __u64 change)
{
    return fold_csum((__u16)~check + change);
}

static __always_inline __u64 csum_change_addr6(const __be32 *old, const union addr *new)
{
    __u64 sum = 0;
#pragma unroll
    for (int i = 0; i < 4; i++)
        sum += csum_change32(old[i], new->v6[i]);
    return sum;
}

/* Checksum of an option-less IPv4 header (its check field must be zero). */
static __always_inline __u16 ipv4_header_csum(struct iphdr *iph)
{
    __u16 *w = (__u16 *)iph;
    __u32 sum = 0;
#pragma unroll
    for (int i = 0; i < 10; i++)
        sum += w[i];
    return fold_csum(sum);
}

#endif
