/* Connection tracking: LRU maps (one per family) hold both directions of a flow. The
 * forward entry (client -> VIP) rewrites to SNAT address -> server, the reply entry
 * (server -> SNAT address) rewrites to VIP -> client. TCP entries follow FIN and RST to
 * a closed flow's timeout (TIME_WAIT when the server closed first); UDP and open TCP
 * entries expire after the frontend's idle timeout.
 *
 * With SYN_PROTECTION a new TCP flow's two entries go into the half-open maps instead
 * (CT_F_HALF_OPEN, HALFOPEN_TIMEOUT_S): the SYN is forwarded, the server's SYN-ACK
 * reverse-NATed and its sequence number noted; the client's ACK that acknowledges it
 * moves both entries to conntrack (ct_handshake). A spoofed source never sees the
 * SYN-ACK, so its flows stay half-open, where a flood evicts only each other. Lookups
 * try conntrack first: an established packet pays nothing for this. */
#ifndef LBFAST_CONNTRACK_H
#define LBFAST_CONNTRACK_H

#include "bounds.h"
#include "counters.h"
#include "parsing.h"

/* ---- the maps behind one interface: IPv4 keys are folded to flow_key4 ---- */
static __always_inline void ct_key4(const struct flow_key *k, struct flow_key4 *k4)
{
    k4->src = k->src.v4;
    k4->dst = k->dst.v4;
    k4->sport = k->sport;
    k4->dport = k->dport;
    k4->proto = k->proto;
    k4->pad[0] = k4->pad[1] = k4->pad[2] = 0;
}

/* conntrack, or the half-open maps: the key's entry in either */
static __always_inline struct flow_nat *ct_lookup_in(const struct flow_key *k, int half_open)
{
    if (k->family == FAMILY_V4) {
        struct flow_key4 k4;
        ct_key4(k, &k4);
        return half_open ? halfopen.lookup(&k4) : conntrack.lookup(&k4);
    }
    struct flow_key *k6 = (struct flow_key *)k;
    return half_open ? halfopen6.lookup(k6) : conntrack6.lookup(k6);
}

/* conntrack only: established flows, UDP flows, and the peers of both */
static __always_inline struct flow_nat *ct_lookup(const struct flow_key *k)
{
    return ct_lookup_in(k, 0);
}

/* Into conntrack, or the half-open maps (`half_open`, a constant at every call site so
 * the verifier sees one map per path); BPF_NOEXIST when `only_new`; returns 0 or the
 * map's error */
static __always_inline int ct_store(const struct flow_key *k, struct flow_nat *v,
                                    int only_new, int half_open)
{
    int err;
    if (k->family == FAMILY_V4) {
        struct flow_key4 k4;
        ct_key4(k, &k4);
        if (half_open)
            err = only_new ? halfopen.insert(&k4, v) : halfopen.update(&k4, v);
        else
            err = only_new ? conntrack.insert(&k4, v) : conntrack.update(&k4, v);
    } else {
        struct flow_key *k6 = (struct flow_key *)k;
        if (half_open)
            err = only_new ? halfopen6.insert(k6, v) : halfopen6.update(k6, v);
        else
            err = only_new ? conntrack6.insert(k6, v) : conntrack6.update(k6, v);
    }
    if (!err)
        count_event(half_open ? EVENT_HALFOPEN_INSERTED : EVENT_CT_INSERTED);
    return err;
}

static __always_inline void ct_delete_in(const struct flow_key *k, int half_open)
{
    int err;
    if (k->family == FAMILY_V4) {
        struct flow_key4 k4;
        ct_key4(k, &k4);
        err = half_open ? halfopen.delete(&k4) : conntrack.delete(&k4);
    } else {
        struct flow_key *k6 = (struct flow_key *)k;
        err = half_open ? halfopen6.delete(k6) : conntrack6.delete(k6);
    }
    if (!err)
        count_event(half_open ? EVENT_HALFOPEN_DELETED : EVENT_CT_DELETED);
}

static __always_inline void ct_delete(const struct flow_key *k)
{
    ct_delete_in(k, 0);
}

static __always_inline int ct_expired(const struct flow_nat *nat, __u64 now)
{
    __u64 timeout_s = nat->idle_timeout_s;
    if (nat->flags & CT_F_HALF_OPEN)
        timeout_s = HALFOPEN_TIMEOUT_S;
    if (nat->flags & CT_F_CLOSED)
        timeout_s = (nat->flags & CT_F_SERVER_TW) ? CT_TIME_WAIT_S : CT_CLOSED_S;
    return (__s64)(now - nat->last_seen) > (__s64)(timeout_s * JIFFIES_PER_S);
}

/* Renew last_seen, and with it the cached next hop, about once a second. */
static __always_inline void ct_touch(struct flow_nat *nat, __u64 now)
{
    if (now - nat->last_seen > CT_REFRESH_JIFFIES) {
        nat->last_seen = now;
        nat->nh.ifindex = 0;
    }
}

/* The other direction's key: this entry's rewrite, reversed. */
static __always_inline void ct_peer_key(const struct flow_nat *nat, __u8 proto,
                                        struct flow_key *peer)
{
    peer->src = nat->dst;
    peer->dst = nat->src;
    peer->sport = nat->dport;
    peer->dport = nat->sport;
    peer->proto = proto;
    peer->family = nat->family;
    peer->pad = 0;
}

static __always_inline int addr_eq(const union addr *a, const union addr *b, __u8 family)
{
    if (family == FAMILY_V4)
        return a->v4 == b->v4;
    return a->v6[0] == b->v6[0] && a->v6[1] == b->v6[1] && a->v6[2] == b->v6[2] &&
           a->v6[3] == b->v6[3];
}

/* Does `nat` rewrite to the reverse of `key`, i.e. is it the peer of key's entry? An
 * entry whose peer key was taken over by a new flow (see snat_take_over) is no longer. */
static __always_inline int ct_points_to(const struct flow_nat *nat, const struct flow_key *key)
{
    return nat->family == key->family && nat->sport == key->dport &&
           nat->dport == key->sport && addr_eq(&nat->src, &key->dst, key->family) &&
           addr_eq(&nat->dst, &key->src, key->family);
}

/* Open connections are counted in halves (ACTIVE_PER_FLOW per flow): each side's first
 * FIN lowers its own half, so the two FINs of a simultaneous close, often handled on two
 * CPUs at once, can neither both miss nor both take the last half. The halves gone are
 * bits of the forward entry's `fins`, set by atomic adds. `sides` is CT_FIN_* bits. */
static __always_inline void ct_half_close(struct flow_nat *fwd, __u32 sides)
{
    if ((sides & CT_FIN_CLIENT) && !(fwd->fins & CT_FIN_CLIENT)) {
        __sync_fetch_and_add(&fwd->fins, CT_FIN_CLIENT);
        add_active(fwd->server, fwd->frontend, -1);
    }
    if ((sides & CT_FIN_SERVER) && !(fwd->fins & CT_FIN_SERVER)) {
        __sync_fetch_and_add(&fwd->fins, CT_FIN_SERVER);
        add_active(fwd->server, fwd->frontend, -1);
    }
}

/* Both sides gone: both entries move to the short closing timeout. */
static __always_inline void ct_mark_closed(struct flow_nat *nat, struct flow_nat *peer)
{
    nat->flags |= CT_F_CLOSED;
    if (peer)
        peer->flags |= CT_F_CLOSED;
}

/* Close whatever is still open of a flow (RST, purge, expiry), from either entry. */
static __always_inline void ct_close(struct flow_nat *nat, struct flow_nat *peer)
{
    struct flow_nat *fwd = (nat->flags & CT_F_REPLY) ? peer : nat;
    if (fwd)
        ct_half_close(fwd, CT_FIN_CLIENT | CT_FIN_SERVER);
    ct_mark_closed(nat, peer);
}

/* An entry is no longer this packet's flow: timed out, or a SYN reusing the tuple of a
 * closed flow (which then gets a new server and a new SNAT port). */
static __always_inline int ct_is_over(struct flow_nat *nat, const struct packet *pkt,
                                      __u64 now)
{
    if (ct_expired(nat, now)) {
        if (!(nat->flags & (CT_F_CLOSED | CT_F_REPLY)))
            ct_close(nat, NULL);
        if ((nat->flags & (CT_F_HALF_OPEN | CT_F_REPLY)) == CT_F_HALF_OPEN)
            count_event(EVENT_HALFOPEN_EXPIRED);
        return 1;
    }
    return (nat->flags & CT_F_CLOSED) && !(nat->flags & CT_F_REPLY) &&
           (pkt->tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST)) == TCP_SYN;
}

/* FIN closes the sender's side, RST both; the forward entry keeps the count. */
static __always_inline void ct_track_tcp(struct flow_nat *nat, const struct packet *pkt)
{
    __u8 flags = pkt->tcp_flags;
    if (!(flags & (TCP_FIN | TCP_RST)))
        return;
    struct flow_key peer_key;
    ct_peer_key(nat, pkt->key.proto, &peer_key);
    struct flow_nat *peer = ct_lookup(&peer_key);
    if (peer && !ct_points_to(peer, &pkt->key))
        peer = NULL;    /* a stale entry: its peer key was since taken by a new flow */
    if (flags & TCP_RST) {
        ct_close(nat, peer);
        return;
    }
    struct flow_nat *fwd = (nat->flags & CT_F_REPLY) ? peer : nat;
    if (!fwd)
        return;
    __u32 side = (nat->flags & CT_F_REPLY) ? CT_FIN_SERVER : CT_FIN_CLIENT;
    if (side == CT_FIN_SERVER && !(fwd->fins & CT_FIN_CLIENT)) {
        /* the server closes first: its TIME_WAIT will hold this tuple */
        nat->flags |= CT_F_SERVER_TW;
        fwd->flags |= CT_F_SERVER_TW;
    }
    ct_half_close(fwd, side);
    if ((fwd->fins & (CT_FIN_CLIENT | CT_FIN_SERVER)) == (CT_FIN_CLIENT | CT_FIN_SERVER))
        ct_mark_closed(nat, peer);
}

/* May a new flow (pkt) take over the reply entry `held` of an earlier flow? When it has
 * expired; or at once when that flow is closed and came from the same client address to
 * the same VIP: the client's TCP timestamps towards the VIP are monotonic (Linux derives
 * their offset from the address pair), so a server still in TIME_WAIT on the NAT tuple
 * accepts the new SYN, as it does behind nf_nat. Another client must wait out the hold
 * (CT_TIME_WAIT_S when the server closed first), or PAWS would drop its SYN. A
 * half-open flow holds its port only HALFOPEN_PORT_HOLD_JIFFIES: under a SYN flood the
 * spoofed flows would otherwise take every port towards a server for their whole
 * timeout, and new clients would find none. */
static __always_inline int snat_reusable(const struct flow_nat *held,
                                         const struct packet *pkt, __u64 now)
{
    if (ct_expired(held, now))
        return 1;
    if ((held->flags & CT_F_HALF_OPEN) && now - held->last_seen > HALFOPEN_PORT_HOLD_JIFFIES)
        return 1;
    return (held->flags & CT_F_CLOSED) && held->family == pkt->key.family &&
           addr_eq(&held->dst, &pkt->key.src, held->family) &&
           addr_eq(&held->src, &pkt->key.dst, held->family);
}

/* The claim when the reply entry exists: take it over if snat_reusable (one CPU only),
 * after closing what the earlier flow still had open (an expired open flow's halves of the count) and
 * deleting its forward entry unless the new flow's own key replaces it. Returns 0 when
 * the reply entry is the new flow's. */
static __always_inline int snat_take_over(struct flow_key *reply_key, struct flow_nat *reply,
                                          struct flow_nat *held, const struct packet *pkt,
                                          __u64 now, int half_open)
{
    if (!held)
        return -1;
    __u64 seen = held->last_seen;
    if (!snat_reusable(held, pkt, now))
        return -1;
    /* two CPUs may find the same held entry reusable at once: the one whose swap of
     * last_seen lands takes it, the other walks on to its next port */
    if (__sync_val_compare_and_swap(&held->last_seen, seen, now) != seen)
        return -1;
    struct flow_key old_key;
    ct_peer_key(held, reply_key->proto, &old_key);
    /* same key: lbfast() already found that forward entry over (ct_is_over closed it),
     * and ct_insert_forward overwrites it */
    if (!(old_key.sport == pkt->key.sport && old_key.dport == pkt->key.dport &&
          addr_eq(&old_key.src, &pkt->key.src, old_key.family) &&
          addr_eq(&old_key.dst, &pkt->key.dst, old_key.family) &&
          old_key.family == pkt->key.family)) {
        int held_half_open = held->flags & CT_F_HALF_OPEN;
        struct flow_nat *old = ct_lookup_in(&old_key, held_half_open);
        if (old && ct_points_to(old, reply_key)) {
            if (!(held->flags & CT_F_CLOSED))
                ct_close(old, held);
            ct_delete_in(&old_key, held_half_open);
        }
    }
    /* a half-open claim of a port conntrack held: the held entry must go, or it would
     * still answer for the port (conntrack is looked up first) */
    if (half_open && !(held->flags & CT_F_HALF_OPEN))
        ct_delete_in(reply_key, 0);
    return ct_store(reply_key, reply, 0, half_open);
}

/* The client's own port is usually free: insert first (a lookup would cost as much). */
static __always_inline int snat_try_own(struct flow_key *reply_key, struct flow_nat *reply,
                                        const struct packet *pkt, __u64 now, int half_open)
{
    if (ct_store(reply_key, reply, 1, half_open) == 0) {
        if (!half_open)
            return 0;
        /* claimed among the half-open flows: an established one may hold it too */
        struct flow_nat *held = ct_lookup_in(reply_key, 0);
        if (!held)
            return 0;
        ct_delete_in(reply_key, 1);
        return snat_take_over(reply_key, reply, held, pkt, now, half_open);
    }
    return snat_take_over(reply_key, reply, ct_lookup_in(reply_key, half_open), pkt, now,
                          half_open);
}

/* A port of the walk: look first, since a failed insert costs two lookups' worth (the map
 * takes a free entry before it finds the key, then gives it back); under port pressure
 * most tries find their port taken. The insert stays the claim. */
static __always_inline int snat_try_next(struct flow_key *reply_key, struct flow_nat *reply,
                                         const struct packet *pkt, __u64 now, int half_open)
{
    struct flow_nat *held = ct_lookup_in(reply_key, 0);
    if (!held && half_open)
        held = ct_lookup_in(reply_key, 1);
    if (!held)
        return ct_store(reply_key, reply, 1, half_open);
    return snat_take_over(reply_key, reply, held, pkt, now, half_open);
}

/* Claim an SNAT address and port towards the server by inserting the reply entry:
 * BPF_NOEXIST makes the insert the claim, so two CPUs never share one. First the
 * client's own port (as nf_nat keeps the original tuple when it can) unless the LB
 * host's own connections use it (lbfast/hostports.py), on an address
 * picked by a hash of the client's address and port; then each CPU walks its own interleaved sequence through the
 * addresses and the SNAT port range. Fills reply_key->dst and ->dport; returns the port
 * in host order, or 0. */
_Static_assert(SNAT_PORT_MAX < HOST_PORT_MIN || SNAT_PORT_MIN > HOST_PORT_MAX,
               "the SNAT port range must leave the LB host's own ports alone");

static __always_inline __u16 snat_claim(const struct server *srv, struct flow_key *reply_key,
                                        struct flow_nat *reply, const struct packet *pkt,
                                        __u64 now, int half_open)
{
    __u32 count = srv->snat_count ? srv->snat_count : 1;
    __u16 own = bpf_ntohs(pkt->key.sport);
    if (own && !(own >= HOST_PORT_MIN && own <= HOST_PORT_MAX)) {
        /* Linux clients connect() from even ports: mix in the address, take high bits */
        __u32 mix = (own ^ pkt->key.src.v6[0] ^ pkt->key.src.v6[3]) * 2654435761u;
        __u64 which = opaque((mix >> 16) % count);
        if (which >= SNAT_PER_SERVER)
            which = 0;
        reply_key->dst = srv->snat[which];
        reply_key->dport = pkt->key.sport;
        if (snat_try_own(reply_key, reply, pkt, now, half_open) == 0)
            return own;
    }

    __u32 zero = 0;
    __u32 *cursor = snat_cursor.lookup(&zero);
    if (!cursor)
        return 0;
    __u32 cpu = bpf_get_smp_processor_id();
    for (int i = 0; i < SNAT_PORT_TRIES; i++) {
        __u32 n = *cursor;
        *cursor = n + 1;
        __u64 which = opaque(n % count);
        if (which >= SNAT_PER_SERVER)
            which = 0;
        __u16 port = SNAT_PORT_MIN + ((n / count) * NR_CPUS_POSSIBLE + cpu) % SNAT_PORT_COUNT;
        reply_key->dst = srv->snat[which];
        reply_key->dport = bpf_htons(port);
        if (snat_try_next(reply_key, reply, pkt, now, half_open) == 0)
            return port;
    }
    return 0;
}

/* A new flow to `srv`: claims the SNAT address and port with the reply entry and fills
 * fwd, the forward entry, which ct_insert_forward stores once its next hop is known.
 * `half_open` (CT_F_HALF_OPEN or 0): both entries go into the half-open maps, with
 * nothing counted open yet. Returns REASON_NONE or why the flow cannot be created. */
static __always_inline int ct_create(const struct packet *pkt, const struct frontend *fe,
                                     __u16 server_slot, const struct server *srv, __u64 now,
                                     __u8 half_open, struct flow_nat *fwd,
                                     struct flow_key *reply_key)
{
    reply_key->src = srv->addr;
    reply_key->sport = srv->port;
    reply_key->proto = pkt->key.proto;
    reply_key->family = srv->family;
    reply_key->pad = 0;
    struct flow_nat reply = {
        .src = pkt->key.dst,
        .dst = pkt->key.src,
        .sport = pkt->key.dport,
        .dport = pkt->key.sport,
        .family = pkt->key.family,
        .flags = CT_F_REPLY | half_open,
        .server = server_slot,
        .frontend = fe->slot,
        .idle_timeout_s = fe->idle_timeout_s,
        .last_seen = now,
    };
    __u16 port = snat_claim(srv, reply_key, &reply, pkt, now, half_open);
    if (!port)
        return REASON_DROP_NO_SNAT_PORT;

    fwd->src = reply_key->dst;
    fwd->dst = srv->addr;
    fwd->sport = bpf_htons(port);
    fwd->dport = srv->port;
    fwd->family = srv->family;
    fwd->flags = half_open;
    fwd->server = server_slot;
    fwd->frontend = fe->slot;
    fwd->pad = 0;
    fwd->idle_timeout_s = fe->idle_timeout_s;
    fwd->last_seen = now;
    __builtin_memset(&fwd->nh, 0, sizeof(fwd->nh));
    fwd->fins = half_open ? CT_FIN_CLIENT | CT_FIN_SERVER : 0;
    return REASON_NONE;
}

static __always_inline int ct_insert_forward(struct packet *pkt, struct flow_nat *fwd,
                                             struct flow_key *reply_key, int half_open)
{
    if (ct_store(&pkt->key, fwd, 0, half_open)) {
        ct_delete_in(reply_key, half_open);
        return REASON_DROP_CONNTRACK_FULL;
    }
    if (half_open)
        count_event(EVENT_HALFOPEN_CREATED);
    return REASON_NONE;
}

#endif
