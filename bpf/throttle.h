/* client_conn_throttle: a token bucket per (frontend, source address) refilled at the
 * frontend's rate and holding at most one second's worth. Updated without locks: two
 * CPUs admitting the same source at the same instant may both pass. In flood mode
 * (flood.h) a source without a bucket gets none until its handshake completes
 * (throttle_remember): spoofed sources cannot fill the map. */
#ifndef LBFAST_THROTTLE_H
#define LBFAST_THROTTLE_H

#include "maps.h"
#include "parsing.h"

static __always_inline int throttle_admits(const struct frontend *fe,
                                           const struct packet *pkt, __u64 now, int may_grow)
{
    __u64 rate = fe->conn_throttle;
    if (!rate)
        return 1;
    __u64 capacity = rate * THROTTLE_TOKEN;
    struct throttle_key key = {
        .src = pkt->key.src,
        .frontend = fe->slot,
        .family = pkt->key.family,
    };
    struct throttle_bucket *b = throttle.lookup(&key);
    if (!b) {
        struct throttle_bucket fresh = { .tokens = capacity - THROTTLE_TOKEN, .last = now };
        if (may_grow)
            throttle.update(&key, &fresh);
        return 1;
    }
    __u64 elapsed = now - b->last;
    if ((__s64)elapsed < 0)
        elapsed = 0;
    if (elapsed > JIFFIES_PER_S)    /* a full refill takes one second; avoids overflow */
        elapsed = JIFFIES_PER_S;
    __u64 tokens = b->tokens + elapsed * capacity / JIFFIES_PER_S;
    if (tokens > capacity)
        tokens = capacity;
    b->last = now;
    if (tokens < THROTTLE_TOKEN) {
        b->tokens = tokens;
        return 0;
    }
    b->tokens = tokens - THROTTLE_TOKEN;
    return 1;
}

/* A verified source's bucket, for the flow a flood-mode SYN admitted without one. */
static __always_inline void throttle_remember(const struct frontend *fe,
                                              const struct packet *pkt, __u64 now)
{
    __u64 rate = fe->conn_throttle;
    if (!rate)
        return;
    struct throttle_key key = {
        .src = pkt->key.src,
        .frontend = fe->slot,
        .family = pkt->key.family,
    };
    struct throttle_bucket fresh = { .tokens = rate * THROTTLE_TOKEN - THROTTLE_TOKEN,
                                     .last = now };
    throttle.insert(&key, &fresh);
}

#endif
