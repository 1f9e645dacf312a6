/* Keys and values of every map, shared with Python: lbfast/xdp/structs.py mirrors each
 * struct with ctypes and tests/test_xdp_structs.py checks that sizes and offsets agree.
 * Padding is explicit so both sides see the same bytes (keys are hashed bytewise).
 */
#ifndef LBFAST_STRUCTS_H
#define LBFAST_STRUCTS_H

#include "consts.h"

/* Indexes are masked rather than compared, which keeps the verifier's path count low. */
_Static_assert((MAX_FRONTENDS & (MAX_FRONTENDS - 1)) == 0, "MAX_FRONTENDS: a power of 2");
_Static_assert((MAX_SERVERS & (MAX_SERVERS - 1)) == 0, "MAX_SERVERS: a power of 2");
_Static_assert((LEASTCONN_MAX_SCAN & (LEASTCONN_MAX_SCAN - 1)) == 0,
               "LEASTCONN_MAX_SCAN: a power of 2");

/* An IPv4 address is the first word, the other three are zero. */
union addr {
    __be32 v4;
    __be32 v6[4];
};

/* A packet's 5-tuple as the LB sees it on the wire: the IPv6 conntrack's key, and how
 * the program handles tuples of either family. Forward entries are keyed client -> VIP,
 * reply entries server -> SNAT address. */
struct flow_key {
    union addr src;
    union addr dst;
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 family;        /* FAMILY_V4 / FAMILY_V6 */
    __u16 pad;
};

/* The IPv4 conntrack's key: the same 5-tuple in 16 bytes. Hashing and comparing the
 * 40-byte key would cost every IPv4 packet a few more nanoseconds. */
struct flow_key4 {
    __be32 src;
    __be32 dst;
    __be16 sport;
    __be16 dport;
    __u8 proto;
    __u8 pad[3];
};

/* Where a rewritten packet goes: the FIB's answer, cached in the conntrack entry (a FIB
 * lookup costs more than the rest of an established packet) and renewed with it. */
struct next_hop {
    __u8 dmac[6];
    __u8 smac[6];
    __u32 ifindex;      /* 0: not resolved (yet, or due for renewal) */
    __u16 mtu;          /* of the route: larger packets are answered "too big" */
    __u16 pad;
};

/* Conntrack value: how to rewrite packets of its key. The peer entry's key is this
 * rewrite reversed (dst -> src), which is how FIN/RST reach both entries. */
struct flow_nat {
    union addr src;
    union addr dst;
    __be16 sport;
    __be16 dport;
    __u8 family;        /* family after the rewrite */
    __u8 flags;         /* CT_F_* */
    __u16 server;       /* server slot */
    __u16 frontend;     /* frontend slot */
    __u16 pad;
    __u32 idle_timeout_s;
    __u64 last_seen;    /* jiffies */
    struct next_hop nh;
    __u32 fins;         /* forward entry: CT_FIN_* sides closed (atomic adds); both
                         * while half-open (nothing counted yet). Half-open reply
                         * entry: the server's ISN + 1, host order (CT_F_SYNACK_SEEN) */
};

struct frontend_key {
    union addr vip;
    __be16 port;
    __u8 proto;         /* IPPROTO_TCP / IPPROTO_UDP */
    __u8 family;
};

struct frontend {
    __u32 id;               /* FrontendSpec.id, for stats and for recovery after restart */
    __u16 slot;             /* index in frontend_traffic / frontend_active */
    __u16 backend;          /* backend slot */
    __u32 idle_timeout_s;
    __u32 conn_throttle;    /* new flows per second per source address, 0 = off */
};

struct backend {
    __u32 id;               /* BackendSpec.id */
    __u32 selector;         /* index in `selectors`: the one word flipped on a change */
    __u32 sticky_timeout_s; /* table stickiness, 0 = off */
    __u32 flags;            /* BACKEND_F_* */
    __u64 digest;           /* of the selector's inputs: lets a restarted daemon skip
                             * rebuilding an unchanged table */
};

/* A backend's server choice. Built whole in a spare slot, then published by flipping
 * backend.selector, so no packet sees half a table. */
struct selector {
    __u32 algorithm;        /* ALGO_* */
    __u32 len;              /* used entries of servers[] */
    __u16 servers[SELECTOR_SIZE];  /* server slots: a smooth weighted ring (roundrobin,
                                    * first), a Maglev table (source) or the usable
                                    * servers (leastconn) */
    __u16 weights[LEASTCONN_MAX_SCAN];  /* leastconn: weight of servers[i], >= 1 */
};

struct server {
    union addr addr;
    union addr snat[SNAT_PER_SERVER];   /* LB source addresses towards it (its family) */
    __be16 port;
    __u8 family;
    __u8 flags;             /* SERVER_F_* */
    __u16 weight;
    __u16 backend;          /* backend slot */
    __u32 id;               /* ServerSpec.id */
    __u8 snat_count;        /* used entries of snat[], at least 1 */
    __u8 pad[3];
    /* written by the program: the next hop its last new flow resolved, reused by the
     * next ones for up to CT_REFRESH_JIFFIES (zeroed whenever Python rewrites it) */
    struct next_hop nh;
    __u64 nh_seen;          /* jiffies */
};

struct sticky_key {
    union addr src;
    __u16 backend;
    __u8 family;
    __u8 pad;
};

struct sticky {
    __u64 last_seen;        /* jiffies */
    __u16 server;
    __u16 pad[3];
};

struct throttle_key {
    union addr src;
    __u16 frontend;
    __u8 family;
    __u8 pad;
};

struct throttle_bucket {
    __u64 tokens;           /* THROTTLE_TOKEN per connection */
    __u64 last;             /* jiffies */
};

/* A next hop the FIB has no neighbour entry for, for the dataplane to resolve. */
struct neigh_key {
    union addr addr;
    __u32 ifindex;
    __u8 family;
    __u8 pad[3];
};

/* Open connections, shared by all CPUs (leastconn compares them): one value, so the
 * leastconn scan needs one map lookup, not one per server. */
struct active_conns {
    __s64 frontends[MAX_FRONTENDS];
    __s64 servers[MAX_SERVERS];
};

/* SYNs to a frontend, per CPU, in whole seconds of jiffies: flood mode's measure. */
struct syn_window {
    __u64 second;       /* jiffies / JIFFIES_PER_S of `syns` */
    __u64 syns;         /* in that second */
    __u64 last_syns;    /* in the second before it (0 if none came) */
    __u64 flood_syns;   /* all SYNs counted while in flood mode */
};

/* Per-CPU traffic counters of a frontend or a server. "in" is client -> server. */
struct traffic {
    __u64 packets_in;
    __u64 bytes_in;
    __u64 packets_out;
    __u64 bytes_out;
    __u64 new_flows;
};

#endif
