/* client_conn_throttle: a token bucket per (frontend, source address) refilled at the
 * frontend's rate and holding at most one second's worth. Updated without locks: two
 * CPUs admitting the same source at the same instant may both pass. */
#ifndef LBFAST_THROTTLE_H
#define LBFAST_THROTTLE_H

#include "maps.h"
#include "parsing.h"

static __always_inline int throttle_admits(const struct frontend *fe,
                                           const struct packet *pkt, __u64 now)
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

#endif
