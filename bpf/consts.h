/* Every constant of the XDP program, each in #ifndef so the loader can override it with
 * -DNAME=value. Python reads the defaults from this file (lbfast/xdp/consts.py), so
 * numbers are written once. The exceptions belong to Python and always come from the
 * loader: the algorithm codes (lbfast/enums.py), the source-hash seed
 * (lbfast/hashing.py) and the kernel's tick rate, listed at the end.
 */
#ifndef LBFAST_CONSTS_H
#define LBFAST_CONSTS_H

/* ---- sizes of the maps ---- */
#ifndef MAX_FRONTENDS
#define MAX_FRONTENDS 256
#endif
#ifndef MAX_BACKENDS
#define MAX_BACKENDS 128
#endif
#ifndef MAX_SERVERS
#define MAX_SERVERS 2048
#endif
/* More selectors than backends: a backend's new table is written into a spare selector
 * before its index flips to it, and freed selectors are reused last. */
#ifndef MAX_SELECTORS
#define MAX_SELECTORS (MAX_BACKENDS + 8)
#endif
/* Slots of a selector: the Maglev table size, a prime (lbfast.maglev.DEFAULT_SIZE). */
#ifndef SELECTOR_SIZE
#define SELECTOR_SIZE 16381
#endif
/* IPv4 and IPv6 flows have a conntrack each (entries per direction of a flow) */
#ifndef CONNTRACK_SIZE
#define CONNTRACK_SIZE 262144
#endif
#ifndef CONNTRACK6_SIZE
#define CONNTRACK6_SIZE 65536
#endif
/* Half-open TCP flows (SYN seen, the client's handshake ACK not yet) have maps of their
 * own, so a SYN flood evicts only other half-open flows, never an established one (the
 * LRU maps evict per CPU: each CPU holds max_entries / possible CPUs). Entries per
 * direction, as for conntrack; the loader sizes both from dataplane.conntrack_entries. */
#ifndef HALFOPEN_SIZE
#define HALFOPEN_SIZE 262144
#endif
#ifndef HALFOPEN6_SIZE
#define HALFOPEN6_SIZE 65536
#endif
#ifndef STICKY_SIZE
#define STICKY_SIZE 65536
#endif
#ifndef THROTTLE_SIZE
#define THROTTLE_SIZE 65536
#endif
#ifndef NEIGH_WANTED_SIZE
#define NEIGH_WANTED_SIZE 256
#endif
/* leastconn compares at most this many servers of a backend per new flow */
#ifndef LEASTCONN_MAX_SCAN
#define LEASTCONN_MAX_SCAN 64
#endif

/* ---- where maps are pinned: a string literal (-DPIN_DIR='"/sys/fs/bpf/x"') ---- */
#ifndef PIN_DIR
#define PIN_DIR "/sys/fs/bpf/lbfast"
#endif

/* ---- SNAT ports: a new flow keeps its client's source port when that is free towards
 * the server (or held only by a closed flow of the same client, see snat_reusable in
 * conntrack.h). Otherwise each CPU walks its own interleaved sequence through this
 * range, so a port comes back into use as late as possible. The default range lies below the
 * host's ephemeral ports (32768-60999); the loader also reserves it
 * (ip_local_reserved_ports) against a wider ephemeral range. A client port in the
 * range the host's own health checks leave from (HOST_PORT_MIN/MAX) is never kept. A
 * port is per (SNAT address, server address and port). ---- */
#ifndef SNAT_PORT_MIN
#define SNAT_PORT_MIN 10000
#endif
#ifndef SNAT_PORT_MAX
#define SNAT_PORT_MAX 32767
#endif
#ifndef SNAT_PORT_TRIES
#define SNAT_PORT_TRIES 8
#endif
/* SNAT addresses a server's flows may leave from (snat_addresses of its family): each
 * brings its own port range, so more addresses carry more concurrent flows */
#ifndef SNAT_PER_SERVER
#define SNAT_PER_SERVER 4
#endif
#ifndef NR_CPUS_POSSIBLE
#define NR_CPUS_POSSIBLE 1
#endif
#define SNAT_PORT_COUNT (SNAT_PORT_MAX - SNAT_PORT_MIN + 1)

/* ---- conntrack timing (the clock is jiffies: JIFFIES_PER_S comes from the loader) ---- */
/* A closed flow's entries (and its SNAT port) stay this long. If the server closed
 * first it holds TIME_WAIT on the NAT tuple, and a new SYN from another client would
 * meet it (PAWS drops it: that client's timestamps are not the old flow's): the port
 * waits out TIME_WAIT for other clients; the same client (same address, same VIP)
 * may take it at once, its timestamps towards the VIP being monotonic. Otherwise (client closed first, or a RST) only stray last
 * segments can follow, and the port is free again soon: one-connection-per-request
 * traffic would otherwise run out of ports at 22768 / 60 s per server. */
#ifndef CT_TIME_WAIT_S
#define CT_TIME_WAIT_S 60
#endif
#ifndef CT_CLOSED_S
#define CT_CLOSED_S 2
#endif
/* A half-open flow's entries live this long without the client's ACK (a client retries
 * its SYN after 1 and 3 s): the SYN_RECV timeout of IPVS, Cilium's SYN timeout. */
#ifndef HALFOPEN_TIMEOUT_S
#define HALFOPEN_TIMEOUT_S 10
#endif
/* ...but its SNAT port only this long (about the slowest handshake's round trip): then
 * a new flow may take the port over (conntrack.h snat_reusable) */
#ifndef HALFOPEN_PORT_HOLD_JIFFIES
#define HALFOPEN_PORT_HOLD_JIFFIES JIFFIES_PER_S
#endif
/* dataplane.syn_flood_protection. 1: a new TCP flow starts in the half-open maps and
 * moves to conntrack when the client acknowledges the server's SYN-ACK (ct_handshake in
 * conntrack.h); 0: it goes straight into conntrack, where a SYN flood evicts established
 * flows (kept to show what the protection is worth, and for hosts that want it off). */
#ifndef SYN_PROTECTION
#define SYN_PROTECTION 1
#endif
/* Flood mode: a CPU that sees more SYNs to a frontend than this in a second (or did in
 * the second before) counts them as flood_syns, and new flows of that frontend stop
 * creating table-stickiness and client_conn_throttle entries until their handshake
 * completes. The loader passes dataplane.syn_flood_threshold / online CPUs. */
#ifndef SYN_FLOOD_PER_CPU
#define SYN_FLOOD_PER_CPU 10000
#endif
/* An entry's last_seen and cached next hop are renewed at most this often (in
 * jiffies: about a second), so established packets rarely write to the entry that both
 * directions, often on two CPUs, read, and rarely pay for a FIB lookup. */
#ifndef CT_REFRESH_JIFFIES
#define CT_REFRESH_JIFFIES JIFFIES_PER_S
#endif
/* Out the device a packet came in on: 1 = XDP_TX, 0 = redirect to that device. veth
 * delivers XDP_TX only when its peer runs an XDP program itself, a redirect always; on
 * NICs XDP_TX is the faster path. */
#ifndef TX_ON_SAME_DEVICE
#define TX_ON_SAME_DEVICE 0
#endif
/* BPF_FIB_LOOKUP_* flags: 0 honours policy routing rules */
#ifndef FIB_LOOKUP_FLAGS
#define FIB_LOOKUP_FLAGS 0
#endif

/* ---- client_conn_throttle token bucket: tokens in thousandths of a connection ---- */
#ifndef THROTTLE_TOKEN
#define THROTTLE_TOKEN 1000
#endif

/* ---- address families in keys (not AF_*: one byte, and obvious in dumps) ---- */
#ifndef FAMILY_V4
#define FAMILY_V4 4
#endif
#ifndef FAMILY_V6
#define FAMILY_V6 6
#endif

/* ---- flags in map values ---- */
#ifndef CT_F_REPLY
#define CT_F_REPLY 1          /* entry translates server -> client packets */
#endif
#ifndef CT_F_HALF_OPEN
#define CT_F_HALF_OPEN 2      /* in the half-open maps: handshake not completed */
#endif
#ifndef CT_F_SYNACK_SEEN
#define CT_F_SYNACK_SEEN 4    /* half-open reply entry: the server's SYN-ACK went by; its
                               * `fins` holds the sequence number the client's ACK must
                               * acknowledge */
#endif
#ifndef CT_F_CLOSED
#define CT_F_CLOSED 8         /* RST or FINs both ways seen: a closed flow's timeout */
#endif
#ifndef CT_F_RESET
#define CT_F_RESET 16         /* purged by the control plane: answer with RST */
#endif
#ifndef CT_F_SERVER_TW
#define CT_F_SERVER_TW 32     /* the server closed first: it holds TIME_WAIT */
#endif
/* flow_nat.fins: sides closed (their half of the open count already lowered) */
#ifndef CT_FIN_CLIENT
#define CT_FIN_CLIENT 1
#endif
#ifndef CT_FIN_SERVER
#define CT_FIN_SERVER 2
#endif
/* open connections are counted in halves: each side's close lowers its own */
#ifndef ACTIVE_PER_FLOW
#define ACTIVE_PER_FLOW 2
#endif
#ifndef SERVER_F_IN_USE
#define SERVER_F_IN_USE 1
#endif
#ifndef SERVER_F_USABLE
#define SERVER_F_USABLE 2     /* in its backend's current selector: takes new flows */
#endif
#ifndef SERVER_F_DOWN
#define SERVER_F_DOWN 4       /* health as the control plane last wrote it (kept in the
                               * map so a restarted daemon knows it) */
#endif
#ifndef BACKEND_F_IN_USE
#define BACKEND_F_IN_USE 1
#endif

/* ---- verdict reasons: index of the counter in `reasons`, and the verdict ----
 * Anything neither to a frontend nor a reply to an SNAT port passes, uncounted. */
#ifndef REASON_NONE
#define REASON_NONE 0               /* not a verdict: what a step returns when all went well */
#endif
#ifndef REASON_DROP_MALFORMED
#define REASON_DROP_MALFORMED 1     /* truncated/inconsistent Ethernet, IP, TCP or UDP header */
#endif
#ifndef REASON_PASS_FRAGMENT
#define REASON_PASS_FRAGMENT 2      /* IP fragment: no ports to match; the kernel's job */
#endif
#ifndef REASON_PASS_IP_OPTIONS
#define REASON_PASS_IP_OPTIONS 3    /* IPv4 options or IPv6 extension headers */
#endif
#ifndef REASON_PASS_TTL
#define REASON_PASS_TTL 4           /* TTL/hop limit would hit 0: the kernel sends ICMP */
#endif
/* TCP non-SYN to a frontend, no conntrack entry: with the VIP local the kernel answers
 * RST, so a client whose flow was lost fails fast instead of hanging. */
#ifndef REASON_PASS_NO_STATE
#define REASON_PASS_NO_STATE 5
#endif
#ifndef REASON_DROP_THROTTLED
#define REASON_DROP_THROTTLED 6     /* new flow over client_conn_throttle */
#endif
/* No usable server: dropped, not refused, so a retransmitted SYN gets through if a
 * server comes back within the client's connect timeout. */
#ifndef REASON_DROP_NO_SERVER
#define REASON_DROP_NO_SERVER 7
#endif
#ifndef REASON_DROP_NO_SNAT_PORT
#define REASON_DROP_NO_SNAT_PORT 8  /* every SNAT port tried is taken for that server */
#endif
#ifndef REASON_DROP_CONNTRACK_FULL
#define REASON_DROP_CONNTRACK_FULL 9 /* insert failed: the LRU found nothing to evict */
#endif
/* IPv4 UDP without checksum towards IPv6, which requires one: it cannot be computed
 * incrementally. */
#ifndef REASON_DROP_UDP_ZERO_CSUM
#define REASON_DROP_UDP_ZERO_CSUM 10
#endif
#ifndef REASON_DROP_FIB
#define REASON_DROP_FIB 11          /* no route, or forwarding off on the ingress device */
#endif
#ifndef REASON_DROP_FRAG_NEEDED
#define REASON_DROP_FRAG_NEEDED 12  /* rewritten packet exceeds the egress MTU and may be
                                     * fragmented (IPv4 without DF): XDP cannot fragment */
#endif
/* Next hop not resolved (XDP cannot ask for ARP/ND): the rewritten packet goes to the
 * kernel, which forwards it and resolves the hop on the way (its source is an LB
 * address: the dataplane sets accept_local on its interfaces so that it is not a
 * martian). The hop also goes into neigh_wanted for the dataplane to resolve. */
#ifndef REASON_PASS_NO_NEIGH
#define REASON_PASS_NO_NEIGH 13
#endif
#ifndef REASON_TX_RESET
#define REASON_TX_RESET 14          /* flow purged by the control plane: answered with RST
                                     * out the device it came in on */
#endif
/* An ICMP error about a NATed flow (port unreachable, fragmentation needed, time
 * exceeded), translated and sent on to the flow's other end (icmp.h) */
#ifndef REASON_TX_ICMP
#define REASON_TX_ICMP 15
#endif
/* ICMP error about a flow translated between IPv4 and IPv6: not translated (the kernel
 * drops it) */
#ifndef REASON_PASS_ICMP_FAMILY
#define REASON_PASS_ICMP_FAMILY 16
#endif
/* rewritten packet exceeds the egress MTU (IPv4 with DF, or IPv6): answered with ICMP
 * fragmentation needed / packet too big carrying the size the sender must keep to
 * (too_big.h), so its path-MTU discovery works through the LB */
#ifndef REASON_TX_TOO_BIG
#define REASON_TX_TOO_BIG 17
#endif
#ifndef REASON_COUNT
#define REASON_COUNT 18
#endif

/* ---- flow-state events: index of the per-CPU counter in `ct_events` ---- */
#ifndef EVENT_HALFOPEN_CREATED
#define EVENT_HALFOPEN_CREATED 0    /* new TCP flows entered the half-open maps (a SYN) */
#endif
#ifndef EVENT_PROMOTED
#define EVENT_PROMOTED 1            /* half-open flows moved to conntrack: the client's ACK
                                     * acknowledged the server's SYN-ACK */
#endif
#ifndef EVENT_HALFOPEN_EXPIRED
#define EVENT_HALFOPEN_EXPIRED 2    /* a packet found its half-open flow timed out */
#endif
#ifndef EVENT_ACK_UNVERIFIED
#define EVENT_ACK_UNVERIFIED 3      /* a client ACK of a half-open flow that did not
                                     * acknowledge a SYN-ACK: forwarded, not promoted */
#endif
#ifndef EVENT_CT_INSERTED
#define EVENT_CT_INSERTED 4         /* conntrack entries created (both directions count) */
#endif
#ifndef EVENT_CT_DELETED
#define EVENT_CT_DELETED 5          /* conntrack entries the program deleted */
#endif
#ifndef EVENT_HALFOPEN_INSERTED
#define EVENT_HALFOPEN_INSERTED 6   /* half-open entries created */
#endif
#ifndef EVENT_HALFOPEN_DELETED
#define EVENT_HALFOPEN_DELETED 7    /* half-open entries deleted (promoted or replaced) */
#endif
#ifndef EVENT_FLOOD_SYNS
#define EVENT_FLOOD_SYNS 8          /* SYNs to a frontend in flood mode on their CPU */
#endif
#ifndef EVENT_COUNT
#define EVENT_COUNT 9
#endif

/* ---- owned by Python, always passed by the loader ---- */
#if !defined(ALGO_ROUNDROBIN) || !defined(ALGO_LEASTCONN) || !defined(ALGO_SOURCE) || \
    !defined(ALGO_FIRST)
#error "algorithm codes come from lbfast.enums.AlgorithmCode through the loader's -D flags"
#endif
#ifndef SOURCE_HASH_SEED
#error "SOURCE_HASH_SEED comes from lbfast.hashing.SOURCE_SEED through the loader's -D flags"
#endif
/* the LB host's own connections (health checks) leave from these ports: never a client's */
#if !defined(HOST_PORT_MIN) || !defined(HOST_PORT_MAX)
#error "HOST_PORT_MIN/MAX come from lbfast.hostports through the loader's -D flags"
#endif
#ifndef JIFFIES_PER_S
#error "JIFFIES_PER_S (the running kernel's HZ) comes from lbfast.xdp.clock via -D flags"
#endif

#endif
