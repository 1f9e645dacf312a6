/* Counters: per-CPU, so the hot path never contends; Python sums the CPUs. The active
 * connection counts are the exception (leastconn compares them across CPUs). */
#ifndef LBFAST_COUNTERS_H
#define LBFAST_COUNTERS_H

#include "maps.h"

static __always_inline void count_reason(__u32 reason)
{
    __u64 *c = reasons.lookup(&reason);
    if (c)
        *c += 1;
}

static __always_inline void count_event(__u32 event)
{
    __u64 *c = ct_events.lookup(&event);
    if (c)
        *c += 1;
}

static __always_inline int verdict(int action, __u32 reason)
{
    count_reason(reason);
    return action;
}

static __always_inline void add_traffic(struct traffic *t, int reply, __u32 bytes,
                                        int new_flow)
{
    if (reply) {
        t->packets_out += 1;
        t->bytes_out += bytes;
    } else {
        t->packets_in += 1;
        t->bytes_in += bytes;
    }
    t->new_flows += new_flow;
}

/* One packet of a flow, in the direction its conntrack entry says. */
static __always_inline void count_traffic(const struct flow_nat *nat, __u32 bytes,
                                          int new_flow)
{
    __u32 fe = nat->frontend, srv = nat->server;
    int reply = nat->flags & CT_F_REPLY;
    struct traffic *t = frontend_traffic.lookup(&fe);
    if (t)
        add_traffic(t, reply, bytes, new_flow);
    t = server_traffic.lookup(&srv);
    if (t)
        add_traffic(t, reply, bytes, new_flow);
}

/* Open connections, in halves (ACTIVE_PER_FLOW): up on a new flow, down as its sides
 * close (FIN each, RST both, or found expired; see conntrack.h). Flows the LRU evicts
 * unseen are never lowered: the counts are approximate and the control plane may
 * recount them from conntrack. The atomic add's result is not used: bcc's LLVM aborts
 * on it. */
static __always_inline void add_active(__u32 server, __u32 frontend, __s64 delta)
{
    __u32 zero = 0;
    struct active_conns *a = active_conns.lookup(&zero);
    if (!a)
        return;
    __sync_fetch_and_add(&a->servers[server & (MAX_SERVERS - 1)], delta);
    __sync_fetch_and_add(&a->frontends[frontend & (MAX_FRONTENDS - 1)], delta);
}

#endif
