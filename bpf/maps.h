/* Every map of the program, in one place. All are pinned under PIN_DIR: a restarted
 * daemon (or a new program version) picks up the same conntrack, tables and counters,
 * so established flows survive. The loader drops a pin whose layout no longer matches.
 */
#ifndef LBFAST_MAPS_H
#define LBFAST_MAPS_H

#include "structs.h"

#define PINNED(name) PIN_DIR "/" #name

/* ---- configuration, written by the control plane ---- */
BPF_TABLE_PINNED("hash", struct frontend_key, struct frontend, frontends, MAX_FRONTENDS,
                 PINNED(frontends));
BPF_TABLE_PINNED("array", u32, struct backend, backends, MAX_BACKENDS, PINNED(backends));
BPF_TABLE_PINNED("array", u32, struct selector, selectors, MAX_SELECTORS, PINNED(selectors));
BPF_TABLE_PINNED("array", u32, struct server, servers, MAX_SERVERS, PINNED(servers));

/* ---- flow state, written by the program ---- */
/* Both directions of every flow: LRU, so a flood of new flows evicts the idlest. Keyed
 * by the packet's family (conntrack.h picks the map); the values are the same. The LRU
 * lists are per CPU (BPF_F_NO_COMMON_LRU): a new flow's two inserts take no shared
 * lock, which saves about 50 ns here, and each CPU holds its share of the entries,
 * evicting its own idlest when that is full. */
BPF_TABLE_PINNED("lru_hash", struct flow_key4, struct flow_nat, conntrack, CONNTRACK_SIZE,
                 PINNED(conntrack), BPF_F_NO_COMMON_LRU);
BPF_TABLE_PINNED("lru_hash", struct flow_key, struct flow_nat, conntrack6, CONNTRACK6_SIZE,
                 PINNED(conntrack6), BPF_F_NO_COMMON_LRU);
/* Half-open TCP flows, both directions, until the handshake completes (conntrack.h):
 * their own LRU, so a SYN flood evicts only these. */
BPF_TABLE_PINNED("lru_hash", struct flow_key4, struct flow_nat, halfopen, HALFOPEN_SIZE,
                 PINNED(halfopen), BPF_F_NO_COMMON_LRU);
BPF_TABLE_PINNED("lru_hash", struct flow_key, struct flow_nat, halfopen6, HALFOPEN6_SIZE,
                 PINNED(halfopen6), BPF_F_NO_COMMON_LRU);
BPF_TABLE_PINNED("lru_hash", struct sticky_key, struct sticky, sticky, STICKY_SIZE,
                 PINNED(sticky));
BPF_TABLE_PINNED("lru_hash", struct throttle_key, struct throttle_bucket, throttle,
                 THROTTLE_SIZE, PINNED(throttle));
/* Next hops to resolve (value: jiffies when asked); emptied by the dataplane. */
BPF_TABLE_PINNED("lru_hash", struct neigh_key, u64, neigh_wanted, NEIGH_WANTED_SIZE,
                 PINNED(neigh_wanted));
/* Round-robin position per backend: shared by the CPUs, so the rotation is one (a new
 * flow's only write to a shared line; two CPUs at the same instant may take the same
 * step). The SNAT sequence is per CPU: the CPUs must not claim the same ports. */
BPF_TABLE_PINNED("array", u32, u32, rr_cursor, MAX_BACKENDS, PINNED(rr_cursor));
BPF_TABLE_PINNED("percpu_array", u32, u32, snat_cursor, 1, PINNED(snat_cursor));

/* ---- counters ---- */
BPF_TABLE_PINNED("percpu_array", u32, struct traffic, frontend_traffic, MAX_FRONTENDS,
                 PINNED(frontend_traffic));
BPF_TABLE_PINNED("percpu_array", u32, struct traffic, server_traffic, MAX_SERVERS,
                 PINNED(server_traffic));
/* Open connections: shared (leastconn compares them across CPUs), changed with atomic
 * adds on a new flow and on its close. One entry. */
BPF_TABLE_PINNED("array", u32, struct active_conns, active_conns, 1, PINNED(active_conns));
BPF_TABLE_PINNED("percpu_array", u32, u64, reasons, REASON_COUNT, PINNED(reasons));
BPF_TABLE_PINNED("percpu_array", u32, u64, ct_events, EVENT_COUNT, PINNED(ct_events));
BPF_TABLE_PINNED("percpu_array", u32, struct syn_window, syn_rate, MAX_FRONTENDS,
                 PINNED(syn_rate));

/* ---- for the loader only: the key/value layout each pinned map was made with ---- */
BPF_TABLE_PINNED("hash", u64, u64, layouts, 64, PINNED(layouts));

#endif
