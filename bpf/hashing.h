/* The source-address hash that picks a Maglev slot. Bit for bit the same as
 * lbfast.hashing.source_hash (tests compare both on the same vectors), so every LB
 * host, and the Python side, map a source to the same slot. */
#ifndef LBFAST_HASHING_H
#define LBFAST_HASHING_H

#include "structs.h"

/* MurmurHash3's 32-bit finaliser */
static __always_inline __u32 fmix32(__u32 h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6B;
    h ^= h >> 13;
    h *= 0xC2B2AE35;
    h ^= h >> 16;
    return h;
}

/* One big-endian word of the address at a time, seeded with SOURCE_HASH_SEED. */
static __always_inline __u32 source_hash(const union addr *a, __u8 family)
{
    __u32 h = fmix32(SOURCE_HASH_SEED ^ bpf_ntohl(a->v6[0]));
    if (family == FAMILY_V6) {
        h = fmix32(h ^ bpf_ntohl(a->v6[1]));
        h = fmix32(h ^ bpf_ntohl(a->v6[2]));
        h = fmix32(h ^ bpf_ntohl(a->v6[3]));
    }
    return h;
}

#endif
