/* A half-open flow's handshake (SYN_PROTECTION, conntrack.h): the server's SYN-ACK, on
 * its way back through the reply entry, leaves its sequence number there; the client's
 * ACK that acknowledges it proves the source real and moves both entries to conntrack,
 * where they count as an open connection. Any other packet of a half-open flow is
 * forwarded by its half-open entries as usual, and they expire after HALFOPEN_TIMEOUT_S.
 * A client's ACK that acknowledges something else (a blind spoofer's guess) is
 * forwarded (the server answers it with a RST) and counted, but does not promote. */
#ifndef LBFAST_HANDSHAKE_H
#define LBFAST_HANDSHAKE_H

#include "choose.h"
#include "conntrack.h"
#include "flood.h"
#include "throttle.h"

/* What a flood-mode SYN left out (flood.h), now that the source is verified. */
static __always_inline void remember_verified_source(const struct packet *pkt,
                                                     __u16 server, __u64 now)
{
    struct frontend_key fk = {
        .vip = pkt->key.dst,
        .port = pkt->key.dport,
        .proto = pkt->key.proto,
        .family = pkt->key.family,
    };
    struct frontend *fe = frontends.lookup(&fk);
    if (!fe)
        return;
    throttle_remember(fe, pkt, now);
    sticky_remember(fe, pkt, server, now);
}

static __always_inline int acknowledges_syn_ack(const struct flow_nat *reply,
                                                const struct packet *pkt)
{
    return (reply->flags & CT_F_SYNACK_SEEN) && reply->fins == bpf_ntohl(pkt->ack_seq);
}

/* Both entries into conntrack, then out of the half-open maps. The entries are stored
 * from where they are (no copies: the program's stack is nearly full). Returns 1, or 0
 * when conntrack refused (the flow stays half-open). */
static __always_inline int ct_promote(struct flow_nat *nat, struct flow_nat *reply,
                                      struct flow_key *reply_key, const struct packet *pkt,
                                      __u64 now)
{
    __u32 isn = reply->fins;
    nat->flags &= ~(CT_F_HALF_OPEN | CT_F_SYNACK_SEEN);
    reply->flags &= ~(CT_F_HALF_OPEN | CT_F_SYNACK_SEEN);
    nat->fins = reply->fins = 0;
    nat->last_seen = reply->last_seen = now;
    if (ct_store(reply_key, reply, 0, 0) || ct_store(&pkt->key, nat, 0, 0)) {
        ct_delete_in(reply_key, 0);
        nat->flags |= CT_F_HALF_OPEN;
        reply->flags |= CT_F_HALF_OPEN | CT_F_SYNACK_SEEN;
        nat->fins = CT_FIN_CLIENT | CT_FIN_SERVER;
        reply->fins = isn;
        return 0;
    }
    __u16 server = nat->server, frontend = nat->frontend;
    ct_delete_in(&pkt->key, 1);
    ct_delete_in(reply_key, 1);
    add_active(server, frontend, ACTIVE_PER_FLOW);
    count_event(EVENT_PROMOTED);
    if (syn_flood_on(frontend, now))
        remember_verified_source(pkt, server, now);
    return 1;
}

/* A client's retransmitted SYN: its flow's entries start their timeouts again. */
static __always_inline void ct_renew_half_open(struct flow_nat *fwd, const struct packet *pkt,
                                               __u64 now)
{
    fwd->last_seen = now;
    struct flow_key reply_key;
    ct_peer_key(fwd, pkt->key.proto, &reply_key);
    struct flow_nat *reply = ct_lookup_in(&reply_key, 1);
    if (reply && ct_points_to(reply, &pkt->key))
        reply->last_seen = now;
}

/* A packet of a half-open flow: 1 when it completed the handshake (the flow is in
 * conntrack now), else 0 (forward it with its half-open entry). */
static __always_inline int ct_handshake(struct flow_nat *nat, const struct packet *pkt,
                                        __u64 now)
{
    __u8 flags = pkt->tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST);
    if (nat->flags & CT_F_REPLY) {
        if (flags == (TCP_SYN | TCP_ACK)) {
            nat->fins = bpf_ntohl(pkt->seq) + 1;
            nat->flags |= CT_F_SYNACK_SEEN;
        }
        return 0;
    }
    if (flags != TCP_ACK)
        return 0;
    struct flow_key reply_key;
    ct_peer_key(nat, pkt->key.proto, &reply_key);
    struct flow_nat *reply = ct_lookup_in(&reply_key, 1);
    if (!reply || !ct_points_to(reply, &pkt->key) || !acknowledges_syn_ack(reply, pkt)) {
        count_event(EVENT_ACK_UNVERIFIED);
        return 0;
    }
    return ct_promote(nat, reply, &reply_key, pkt, now);
}

#endif
