/* Flood mode: each CPU counts the SYNs to each frontend per second (syn_rate). Above
 * SYN_FLOOD_PER_CPU in this second or the one before, that CPU is in flood mode for the
 * frontend: its SYNs count as flood_syns, and their flows create no table-stickiness or
 * client_conn_throttle entries until the client completes the handshake (handshake.h),
 * so spoofed sources cannot grow those maps. Per CPU: no shared line is written per SYN,
 * and the threshold is divided by the online CPUs a flood spreads over. */
#ifndef LBFAST_FLOOD_H
#define LBFAST_FLOOD_H

#include "counters.h"
#include "maps.h"

static __always_inline int syn_flood_over(const struct syn_window *w, __u64 second)
{
    if (w->second == second)
        return w->syns > SYN_FLOOD_PER_CPU || w->last_syns > SYN_FLOOD_PER_CPU;
    return w->second + 1 == second && w->syns > SYN_FLOOD_PER_CPU;
}

/* Count a SYN to frontend slot `fe`; 1 when its CPU is in flood mode for it. */
static __always_inline int syn_flood_note(__u32 fe, __u64 now)
{
    struct syn_window *w = syn_rate.lookup(&fe);
    if (!w)
        return 0;
    __u64 second = now / JIFFIES_PER_S;
    if (w->second != second) {
        w->last_syns = w->second + 1 == second ? w->syns : 0;
        w->second = second;
        w->syns = 0;
    }
    w->syns += 1;
    if (!syn_flood_over(w, second))
        return 0;
    w->flood_syns += 1;
    count_event(EVENT_FLOOD_SYNS);
    return 1;
}

/* Is this CPU in flood mode for frontend slot `fe` (without counting anything)? */
static __always_inline int syn_flood_on(__u32 fe, __u64 now)
{
    struct syn_window *w = syn_rate.lookup(&fe);
    return w && syn_flood_over(w, now / JIFFIES_PER_S);
}

#endif
