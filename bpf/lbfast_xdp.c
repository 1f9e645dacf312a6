/* lbfast's L4 data plane: full-NAT load balancing of TCP and UDP frontends in XDP.
 *
 *   parse      Ethernet (+1 VLAN tag), IPv4/IPv6, TCP/UDP           parsing.h
 *   lookup     conntrack by 5-tuple: both directions of known flows conntrack.h
 *              (half-open TCP flows apart, until the handshake)     handshake.h
 *   choose     new flow to a frontend: SYN rate, throttle, sticky,  flood.h throttle.h
 *              algorithm                                            choose.h
 *   rewrite    addresses, ports, checksums; IPv4 <-> IPv6           nat.h
 *   send       next hop (FIB, cached per flow and per server),      next_hop.h
 *              redirect
 *   icmp       errors about NATed flows follow their flow           icmp.h
 *              packets over the next hop's MTU are answered "too big" too_big.h
 *
 * Everything else passes to the kernel. What is dropped or passed, and why, is listed
 * with the reason codes in consts.h; a purged flow is answered with a RST (reset.h).
 * Maps are in maps.h, their structs in structs.h; bench.h is the bench build's wrapper.
 */
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "parsing.h"
#include "hashing.h"
#include "checksum.h"
#include "counters.h"
#include "conntrack.h"
#include "throttle.h"
#include "choose.h"
#include "flood.h"
#include "handshake.h"
#include "nat.h"
#include "next_hop.h"
#include "reset.h"
#include "icmp.h"
#include "too_big.h"

/* The bench's split of a new flow's cost (bench/bench_xdp.py): a build with
 * -DLBFAST_BENCH_STOP=N returns after step N: 1 parse, 2 lookups (conntrack, half-open,
 * frontend), 3 choice (SYN rate, throttle, server). 0: the whole program. */
#ifndef LBFAST_BENCH_STOP
#define LBFAST_BENCH_STOP 0
#endif

static __always_inline int parse_verdict(int parsed)
{
    switch (parsed) {
    case PARSE_MALFORMED:
        return verdict(XDP_DROP, REASON_DROP_MALFORMED);
    case PARSE_FRAGMENT:
        return verdict(XDP_PASS, REASON_PASS_FRAGMENT);
    case PARSE_IP_OPTIONS:
        return verdict(XDP_PASS, REASON_PASS_IP_OPTIONS);
    default:
        return XDP_PASS;
    }
}

static __always_inline int forward_known_flow(struct xdp_md *ctx, struct packet *pkt,
                                              struct flow_nat *nat, __u64 now)
{
    if (nat->flags & CT_F_RESET)
        return reply_with_reset(ctx, pkt, nat);
    if (pkt->ttl <= 1)
        return verdict(XDP_PASS, REASON_PASS_TTL);
    if (pkt->key.proto == IPPROTO_TCP)
        ct_track_tcp(nat, pkt);
    ct_touch(nat, now);
    count_traffic(nat, pkt->frame_len, 0);

    int unsent = REASON_NONE;
    if (!nat->nh.ifindex)
        unsent = resolve_next_hop(ctx, pkt, nat, &nat->nh);
    if (!unsent && !fits_next_hop(pkt, nat, &nat->nh))
        return answer_too_big(ctx, pkt, sender_mtu(pkt, nat, &nat->nh));
    int reason = nat_rewrite(ctx, pkt, nat);
    if (reason)
        return verdict(XDP_DROP, reason);
    if (unsent)
        return unsent_verdict(unsent);
    return send_via(ctx, &nat->nh);
}

/* A packet of a half-open flow that did not complete the handshake: forwarded by its
 * half-open entry. Both entries live HALFOPEN_TIMEOUT_S, and the SNAT port is held
 * HALFOPEN_PORT_HOLD_JIFFIES, from the client's last SYN (a retransmission renews them).
 * No "too big" check: handshake segments are small. */
static __always_inline int forward_half_open(struct xdp_md *ctx, struct packet *pkt,
                                             struct flow_nat *half, __u64 now)
{
    if (pkt->ttl <= 1)
        return verdict(XDP_PASS, REASON_PASS_TTL);
    if ((pkt->tcp_flags & TCP_SYN) && !(half->flags & CT_F_REPLY))
        ct_renew_half_open(half, pkt, now);
    count_traffic(half, pkt->frame_len, 0);
    int unsent = REASON_NONE;
    if (!half->nh.ifindex)
        unsent = resolve_next_hop(ctx, pkt, half, &half->nh);
    int reason = nat_rewrite(ctx, pkt, half);
    if (reason)
        return verdict(XDP_DROP, reason);
    if (unsent)
        return unsent_verdict(unsent);
    return send_via(ctx, &half->nh);
}

/* `over`: the packet had a conntrack entry, found over (expired, or a closed flow's
 * SYN). `half_open`: CT_F_HALF_OPEN for a TCP flow under SYN_PROTECTION, else 0 (a
 * constant per call site). */
static __always_inline int forward_new_flow(struct xdp_md *ctx, struct packet *pkt,
                                            const struct frontend *fe, int over, __u64 now,
                                            const __u8 half_open)
{
    int flood = 0;
    if (pkt->key.proto == IPPROTO_TCP) {
        if ((pkt->tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN)) != TCP_SYN)
            return verdict(XDP_PASS, REASON_PASS_NO_STATE);
        flood = syn_flood_note(fe->slot, now);
    }
    if (pkt->ttl <= 1)
        return verdict(XDP_PASS, REASON_PASS_TTL);
    if (!throttle_admits(fe, pkt, now, !flood))
        return verdict(XDP_DROP, REASON_DROP_THROTTLED);

    int slot = choose_server(fe, pkt, now, !flood);
    if (slot < 0)
        return verdict(XDP_DROP, REASON_DROP_NO_SERVER);
    __u32 server_slot = slot;
    struct server *srv = servers.lookup(&server_slot);
    if (!srv || !(srv->flags & SERVER_F_IN_USE))
        return verdict(XDP_DROP, REASON_DROP_NO_SERVER);
    if (LBFAST_BENCH_STOP == 3)
        return XDP_PASS;

    struct flow_nat fwd;
    struct flow_key reply_key;
    int reason = ct_create(pkt, fe, server_slot, srv, now, half_open, &fwd, &reply_key);
    if (reason)
        return verdict(XDP_DROP, reason);
    /* a closed established flow's entry would shadow the half-open one (conntrack is
     * looked up first) */
    if (half_open && over)
        ct_delete_in(&pkt->key, 0);
    int unsent = server_next_hop(ctx, pkt, srv, &fwd, now);
    reason = ct_insert_forward(pkt, &fwd, &reply_key, half_open);
    if (reason)
        return verdict(XDP_DROP, reason);
    if (!half_open)     /* a half-open flow counts from its handshake (handshake.h) */
        add_active(fwd.server, fwd.frontend, ACTIVE_PER_FLOW);
    count_traffic(&fwd, pkt->frame_len, 1);

    if (!unsent && !fits_next_hop(pkt, &fwd, &fwd.nh))
        return answer_too_big(ctx, pkt, sender_mtu(pkt, &fwd, &fwd.nh));
    reason = nat_rewrite(ctx, pkt, &fwd);
    if (reason)
        return verdict(XDP_DROP, reason);
    if (unsent)
        return unsent_verdict(unsent);
    return send_via(ctx, &fwd.nh);
}

static __always_inline int lbfast(struct xdp_md *ctx)
{
    struct packet pkt = {};
    int parsed = parse_packet(ctx, &pkt);
    if (parsed == PARSE_ICMP)
        return forward_icmp_error(ctx, &pkt);
    if (parsed != PARSE_OK)
        return parse_verdict(parsed);
    if (LBFAST_BENCH_STOP == 1)
        return XDP_PASS;

    __u64 now = bpf_jiffies64();
    struct flow_nat *nat = ct_lookup(&pkt.key);
    int over = nat && ct_is_over(nat, &pkt, now);
#if SYN_PROTECTION
    if (!nat && pkt.key.proto == IPPROTO_TCP) {
        struct flow_nat *half = ct_lookup_in(&pkt.key, 1);
        if (half && !ct_is_over(half, &pkt, now)) {
            if (!ct_handshake(half, &pkt, now))
                return forward_half_open(ctx, &pkt, half, now);
            nat = ct_lookup(&pkt.key);      /* promoted */
        }
    }
#endif
    if (nat && !over)
        return forward_known_flow(ctx, &pkt, nat, now);

    struct frontend_key fk = {
        .vip = pkt.key.dst,
        .port = pkt.key.dport,
        .proto = pkt.key.proto,
        .family = pkt.key.family,
    };
    struct frontend *fe = frontends.lookup(&fk);
    if (!fe || LBFAST_BENCH_STOP == 2)
        return XDP_PASS;
    if (SYN_PROTECTION && pkt.key.proto == IPPROTO_TCP)
        return forward_new_flow(ctx, &pkt, fe, over, now, CT_F_HALF_OPEN);
    return forward_new_flow(ctx, &pkt, fe, over, now, 0);
}

#ifndef LBFAST_BENCH
int lbfast_xdp(struct xdp_md *ctx)
{
    return lbfast(ctx);
}
#else
#include "bench.h"
#endif
