/* Choice of a server for a new flow: table stickiness first (source -> server, while
 * that server still takes new flows), else the backend's current selector, which holds
 * only usable servers (accept and healthy, or the backups when no accept server is).
 * Python rebuilds a selector on every change of servers, weights, modes or health. */
#ifndef LBFAST_CHOOSE_H
#define LBFAST_CHOOSE_H

#include "bounds.h"
#include "hashing.h"
#include "maps.h"
#include "parsing.h"

static __always_inline int selector_entry(const struct selector *sel, __u32 index)
{
    __u64 idx = opaque(index);
    if (idx >= SELECTOR_SIZE)
        return -1;
    return sel->servers[idx];
}

static __always_inline int server_usable(__u32 slot, __u16 backend)
{
    struct server *srv = servers.lookup(&slot);
    return srv && (srv->flags & SERVER_F_USABLE) && srv->backend == backend;
}

/* The backend's next rotation step. A plain read and write, not an atomic add (whose
 * result bcc's LLVM cannot use): two CPUs at the same instant may take the same step. */
static __always_inline __u32 next_rr(__u32 backend)
{
    __u32 *cursor = rr_cursor.lookup(&backend);
    if (!cursor)
        return 0;
    __u32 n = *cursor;
    *cursor = n + 1;
    return n;
}

/* Fewest open connections relative to weight (a/w < b/v as a*v < b*w) among the first
 * LEASTCONN_MAX_SCAN servers, in `steps` steps (a constant: short lists get a short
 * loop) from a rotating start, so that ties (an idle backend) are shared round robin.
 * Every step is taken, going round again on shorter lists (a repeat never wins a strict
 * <), and the pick is made without a branch: the verifier then walks one straight path
 * instead of one per outcome. Returns an index into sel->servers. */
static __always_inline __u32 scan_leastconn(const struct selector *sel,
                                            const struct active_conns *active, __u32 start,
                                            __u32 len, const __u32 steps)
{
    __u64 best = opaque(start) & (LEASTCONN_MAX_SCAN - 1);
    __s64 best_active = active->servers[sel->servers[best] & (MAX_SERVERS - 1)];
    __s64 best_weight = sel->weights[best];
    for (__u32 i = 1; i < steps; i++) {
        __u64 idx = opaque((start + i) % len) & (LEASTCONN_MAX_SCAN - 1);
        __s64 a = active->servers[sel->servers[idx] & (MAX_SERVERS - 1)];
        __s64 w = sel->weights[idx];
        /* all ones when this server has fewer connections per weight, else zero */
        __u64 take = -(__u64)(opaque(a * best_weight < best_active * w) & 1);
        best = (idx & take) | (best & ~take);
        best_active = (a & take) | (best_active & ~take);
        best_weight = (w & take) | (best_weight & ~take);
    }
    return best;
}

#define MIN_SCAN(n) ((n) < LEASTCONN_MAX_SCAN ? (n) : LEASTCONN_MAX_SCAN)

static __always_inline __u32 pick_leastconn(const struct selector *sel, __u32 backend)
{
    __u32 zero = 0;
    struct active_conns *active = active_conns.lookup(&zero);
    __u32 len = sel->len < LEASTCONN_MAX_SCAN ? sel->len : LEASTCONN_MAX_SCAN;
    __u32 start = next_rr(backend) % len;
    if (!active)
        return start;
    if (len <= MIN_SCAN(4))
        return scan_leastconn(sel, active, start, len, MIN_SCAN(4));
    if (len <= MIN_SCAN(16))
        return scan_leastconn(sel, active, start, len, MIN_SCAN(16));
    return scan_leastconn(sel, active, start, len, LEASTCONN_MAX_SCAN);
}

static __always_inline int pick_from_selector(const struct backend *be, __u32 backend,
                                              const struct packet *pkt)
{
    __u32 sel_slot = be->selector;
    struct selector *sel = selectors.lookup(&sel_slot);
    if (!sel || sel->len == 0 || sel->len > SELECTOR_SIZE)
        return -1;
    __u32 idx;
    if (sel->algorithm == ALGO_SOURCE)
        idx = source_hash(&pkt->key.src, pkt->key.family) % sel->len;
    else if (sel->algorithm == ALGO_LEASTCONN)
        idx = pick_leastconn(sel, backend);
    else    /* roundrobin and first: a ring walked by the backend's cursor */
        idx = next_rr(backend) % sel->len;
    return selector_entry(sel, idx);
}

/* Server slot for a new flow of frontend fe, or -1 when none is usable. Without
 * `may_grow` (flood mode) a new client gets no sticky entry until its handshake
 * completes (sticky_remember). */
static __always_inline int choose_server(const struct frontend *fe, const struct packet *pkt,
                                         __u64 now, int may_grow)
{
    __u32 backend = fe->backend;
    struct backend *be = backends.lookup(&backend);
    if (!be || !(be->flags & BACKEND_F_IN_USE))
        return -1;
    if (!be->sticky_timeout_s)
        return pick_from_selector(be, backend, pkt);

    struct sticky_key key = {
        .src = pkt->key.src,
        .backend = backend,
        .family = pkt->key.family,
    };
    struct sticky *st = sticky.lookup(&key);
    if (st && now - st->last_seen <= be->sticky_timeout_s * (__u64)JIFFIES_PER_S &&
        server_usable(st->server, backend)) {
        st->last_seen = now;
        return st->server;
    }
    int slot = pick_from_selector(be, backend, pkt);
    if (slot >= 0 && may_grow) {
        struct sticky fresh = { .last_seen = now, .server = slot };
        sticky.update(&key, &fresh);
    }
    return slot;
}

/* A verified client's sticky entry, for the flow a flood-mode SYN chose without one. */
static __always_inline void sticky_remember(const struct frontend *fe,
                                            const struct packet *pkt, __u16 server, __u64 now)
{
    __u32 backend = fe->backend;
    struct backend *be = backends.lookup(&backend);
    if (!be || !be->sticky_timeout_s)
        return;
    struct sticky_key key = {
        .src = pkt->key.src,
        .backend = backend,
        .family = pkt->key.family,
    };
    struct sticky fresh = { .last_seen = now, .server = server };
    sticky.update(&key, &fresh);
}

#endif
