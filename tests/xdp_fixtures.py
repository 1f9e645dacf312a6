"""Packet fixtures for the XDP program, Katran-style: each case is a description, the
configuration and earlier packets it needs, one input packet built with scapy, the
expected verdict, the expected output packet (compared byte for byte, checksums
included) and the reason counter it should bump. tests/test_xdp_fixtures.py runs them
through BPF_PROG_TEST_RUN in a testbed's LB namespace.

Every case starts from empty flow state (conntrack, sticky, throttle, cursors) and runs
on CPU 0, so server choice and SNAT ports are deterministic: the k-th new flow of a case
keeps its client port as the SNAT port when that is free; when it is not, the k-th such
flow gets SNAT port 10000 + k * (possible CPUs), see World.snat_port.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, ICMPv6PacketTooBig, IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw

from lbfast import hashing, maglev
from lbfast.enums import Algorithm, Protocol, ServerMode, Stickiness
from lbfast.hostports import HOST_PORT_MIN
from lbfast.spec import BackendSpec, FrontendSpec, ServerSpec
from lbfast.xdp import structs as st

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
VERDICTS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}
VPORT = 80
SPORT = 8080
CLIENT_PORT = 40000
FIRST_SNAT_PORT = 10000
SMALL_CONNTRACK = 1024     # the fixtures' build: small enough to fill in a case
SMALL_HALFOPEN = 512
SYN_FLOOD_PER_CPU = 8      # SYNs per second and CPU above which a frontend is flooded


@dataclass
class World:
    """What the cases are built from: a testbed's addresses and MACs, and the loaded
    (not attached) dataplane in its LB namespace."""
    tb: object
    dp: object

    @property
    def client_ip(self) -> str:
        return self.tb.client.ip

    def server_ip(self, i: int, v6: bool = False) -> str:
        return self.tb.backends[i].ip6 if v6 else self.tb.backends[i].ip

    def snat_ip(self, i: int, v6: bool = False) -> str:
        return self.tb.lb_backend_ip6s[i] if v6 else self.tb.lb_backend_ips[i]

    def to_lb(self) -> Ether:
        """Ethernet header of a packet from the client to the LB."""
        return Ether(src=self.tb.mac(self.tb.client), dst=self.tb.mac(self.tb.lb))

    def lb_to_server(self, i: int) -> Ether:
        return Ether(src=self.tb.mac(self.tb.lb, self.tb.lb_backend_ifs[i]),
                     dst=self.tb.mac(self.tb.backends[i]))

    def server_to_lb(self, i: int) -> Ether:
        return Ether(src=self.tb.mac(self.tb.backends[i]),
                     dst=self.tb.mac(self.tb.lb, self.tb.lb_backend_ifs[i]))

    def lb_to_client(self) -> Ether:
        return Ether(src=self.tb.mac(self.tb.lb), dst=self.tb.mac(self.tb.client))

    def snat_port(self, k: int) -> int:
        """The SNAT port of a case's k-th new flow whose client port was taken (CPU 0's
        share of the range)."""
        return FIRST_SNAT_PORT + k * int(self.dp.consts["NR_CPUS_POSSIBLE"])


@dataclass
class Send:
    """One packet into the program, arriving on `ingress` ("client" or "b0"/"b1")."""
    packet: Packet
    ingress: str = "client"


@dataclass
class Case:
    description: str
    frontends: Callable[[World], list[FrontendSpec]]
    packet: Callable[[World], Send]
    verdict: int
    expected: Callable[[World], Packet] | None = None   # None: output not compared
    reason: str | None = None                           # counter that goes up by one
    before: list[Callable[[World], Send]] = field(default_factory=list)
    setup: Callable[[World], None] | None = None        # after `before`, before `packet`
    check: Callable[[World], None] | None = None        # more assertions, after `packet`

    @property
    def id(self) -> str:
        return self.description.lower().replace(" ", "-").replace(",", "").replace(":", "")


# ---------------------------------------------------------------------- configuration
def servers(w: World, *specs: tuple, v6: bool = False) -> tuple[ServerSpec, ...]:
    """(index, weight, mode) per server: index i is the testbed's backend i."""
    out = []
    for n, (i, weight, mode) in enumerate(specs):
        out.append(ServerSpec(id=n + 1, address=w.server_ip(i, v6), port=SPORT, weight=weight,
                              mode=mode))
    return tuple(out)


def config(algorithm: Algorithm = Algorithm.ROUNDROBIN, weights=(1, 1),
           modes=(ServerMode.ACCEPT, ServerMode.ACCEPT), protocol: Protocol = Protocol.TCP,
           throttle: int = 0, stickiness: Stickiness = Stickiness.NONE, v6_servers=False,
           vip: str | None = None):
    def build(w: World) -> list[FrontendSpec]:
        srv = servers(w, *((i, weights[i], modes[i]) for i in range(len(weights))),
                      v6=v6_servers)
        be = BackendSpec(id=1, uuid="b-1", name="pool", protocol=Protocol.TCP,
                         algorithm=algorithm, stickiness=stickiness, servers=srv)
        fe = FrontendSpec(id=10, uuid="f-10", name="fe", lb_id=1, address=vip or w.tb.vip,
                          port=VPORT, protocol=protocol, backend=be,
                          client_conn_throttle=throttle)
        # an L7 frontend on the same VIP: the program must leave it to the kernel
        web = FrontendSpec(id=11, uuid="f-11", name="web", lb_id=1, address=w.tb.vip,
                           port=443, protocol=Protocol.HTTPS, backend=be)
        return [fe, web]
    return build


DEFAULT = config()


# ---------------------------------------------------------------------- packets
def syn(port: int = CLIENT_PORT, src: str | None = None, **ip):
    def build(w: World) -> Send:
        return Send(w.to_lb() / IP(src=src or w.client_ip, dst=w.tb.vip, ttl=64, id=7, **ip)
                    / TCP(sport=port, dport=VPORT, flags="S", seq=1000, window=64240))
    return build


def ack(port: int = CLIENT_PORT, flags: str = "A", payload: bytes = b"GET / HTTP/1.0\r\n\r\n",
        src: str | None = None, acked: int = 5001):
    """The client's ACK; `acked` 5001 acknowledges syn_ack_from's SYN-ACK."""
    def build(w: World) -> Send:
        return Send(w.to_lb() / IP(src=src or w.client_ip, dst=w.tb.vip, ttl=64, id=8)
                    / TCP(sport=port, dport=VPORT, flags=flags, seq=1001, ack=acked)
                    / Raw(payload))
    return build


def forwarded(server: int | Callable[[World], int],
              port: int | Callable[[World], int] = CLIENT_PORT):
    """What the server should receive for syn(): the client's port is kept as the SNAT
    port when it is free (else give the fallback port, World.snat_port)."""
    def build(w: World) -> Packet:
        i = server(w) if callable(server) else server
        sport = port(w) if callable(port) else port
        return (w.lb_to_server(i)
                / IP(src=w.snat_ip(i), dst=w.server_ip(i), ttl=63, id=7)
                / TCP(sport=sport, dport=SPORT, flags="S", seq=1000, window=64240))
    return build


def forwarded_ack(server: int, port: int = CLIENT_PORT, payload: bytes = b"GET / HTTP/1.0\r\n\r\n"):
    def build(w: World) -> Packet:
        return (w.lb_to_server(server)
                / IP(src=w.snat_ip(server), dst=w.server_ip(server), ttl=63, id=8)
                / TCP(sport=port, dport=SPORT, flags="A", seq=1001, ack=5001)
                / Raw(payload))
    return build


def syn_ack_from(server: int, port: int = CLIENT_PORT, v6: bool = False):
    def build(w: World) -> Send:
        ip = (IPv6(src=w.server_ip(server, v6=True), dst=w.snat_ip(server, v6=True), hlim=64)
              if v6 else IP(src=w.server_ip(server), dst=w.snat_ip(server), ttl=64, id=9))
        return Send(w.server_to_lb(server) / ip
                    / TCP(sport=SPORT, dport=port, flags="SA", seq=5000, ack=1001),
                    ingress=f"b{server}")
    return build


def handshake(port: int = CLIENT_PORT, server: int = 0, v6_servers: bool = False,
              src: str | None = None) -> list[Callable[[World], Send]]:
    """SYN, the server's SYN-ACK, the client's ACK: the flow is established (in
    conntrack, counted open)."""
    return [syn(port, src=src), syn_ack_from(server, port, v6=v6_servers),
            ack(port, payload=b"", src=src)]


def syn_ack_to_client(w: World) -> Packet:
    return (w.lb_to_client() / IP(src=w.tb.vip, dst=w.client_ip, ttl=63, id=9)
            / TCP(sport=VPORT, dport=CLIENT_PORT, flags="SA", seq=5000, ack=1001))


def rst_from_client(port: int):
    def build(w: World) -> Send:
        return Send(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip, ttl=64)
                    / TCP(sport=port, dport=VPORT, flags="R", seq=1001))
    return build


def raw_frame(make: Callable[[World], bytes]):
    """A frame given as bytes (malformed ones scapy would fix up)."""
    def build(w: World) -> Send:
        return Send(Raw(make(w)))
    return build


def truncated(keep: int):
    """A SYN to the VIP cut after `keep` bytes (no Ethernet padding)."""
    return raw_frame(lambda w: bytes(syn()(w).packet)[:keep])


def patched(offset: int, value: bytes):
    """A SYN to the VIP with bytes overwritten at `offset` (checksums left stale)."""
    def make(w: World) -> bytes:
        b = bytearray(bytes(syn()(w).packet))
        b[offset:offset + len(value)] = value
        return bytes(b)
    return raw_frame(make)


def maglev_choice(w: World) -> int:
    """The backend index the source algorithm must pick for the client: the same
    table and hash the program uses, computed in Python."""
    keys = [f"{w.server_ip(i)}:{SPORT}" for i in (0, 1)]
    table = maglev.build_table(keys, [1, 1])
    return table[hashing.source_slot(w.client_ip, len(table))]


def _filler_key(i: int) -> st.FlowKey4:
    return st.FlowKey4(src=st.Addr.of(f"10.99.{i // 250}.{i % 250 + 1}").v4,
                       dst=st.Addr.of("10.98.0.1").v4, sport=st.be16(1000 + i),
                       dport=st.be16(53), proto=17)


def fill_conntrack(w: World) -> None:
    """Fill the fixtures' small (IPv4) conntrack with unrelated flows."""
    m = w.dp.maps["conntrack"]
    for i in range(SMALL_CONNTRACK):
        m.set(_filler_key(i), st.FlowNat())


def conntrack_stayed_full(w: World) -> None:
    m = w.dp.maps["conntrack"]
    entries = sum(1 for _ in m.keys())
    assert entries <= SMALL_CONNTRACK, entries
    assert m.get(forward_key(w)) is not None, "the promoted flow has no conntrack entry"
    evicted = sum(1 for i in range(SMALL_CONNTRACK) if m.get(_filler_key(i)) is None)
    assert evicted >= 2, "the LRU should have evicted filler entries for both directions"


def fill_halfopen(w: World) -> None:
    """Fill the fixtures' small IPv4 half-open map with unrelated half-open flows."""
    m = w.dp.maps["halfopen"]
    for i in range(SMALL_HALFOPEN):
        m.set(_filler_key(i), st.FlowNat(flags=int(w.dp.consts["CT_F_HALF_OPEN"])))


def established_untouched_by_syn(w: World) -> None:
    """The established flow kept both entries; the new flow is half-open, and room for
    it came from other half-open flows."""
    assert w.dp.maps["conntrack"].get(forward_key(w)) is not None
    assert w.dp.maps["conntrack"].get(reply_key(w)) is not None
    half = w.dp.maps["halfopen"]
    assert half.get(forward_key(w, CLIENT_PORT + 1)) is not None
    assert sum(1 for _ in half.keys()) <= SMALL_HALFOPEN
    evicted = sum(1 for i in range(SMALL_HALFOPEN) if half.get(_filler_key(i)) is None)
    assert evicted >= 2, "the LRU should have evicted half-open fillers for both directions"


def event(w: World, name: str) -> int:
    return w.dp.stats()["flow_state"]["events"][name]


def promoted(w: World) -> None:
    assert forward_entry(w, table="conntrack") is not None
    assert reply_entry(w, table="conntrack") is not None
    assert forward_entry(w, table="halfopen") is None
    assert reply_entry(w, table="halfopen") is None
    flags = forward_entry(w, table="conntrack").flags
    assert not flags & int(w.dp.consts["CT_F_HALF_OPEN"]), flags
    assert open_flows(w) == 1, "counted open from the handshake"
    assert event(w, "promoted") == 1


def still_half_open(w: World) -> None:
    assert forward_entry(w, table="conntrack") is None
    assert forward_entry(w, table="halfopen") is not None
    assert open_flows(w) == 0
    assert event(w, "ack_unverified") == 1


def age_half_open(w: World) -> None:
    """Move the half-open flow's entries HALFOPEN_TIMEOUT_S + 1 into the past."""
    c = w.dp.consts
    back = (int(c["HALFOPEN_TIMEOUT_S"]) + 1) * int(c["JIFFIES_PER_S"])
    m = w.dp.maps["halfopen"]
    for key in (forward_key(w), reply_key(w)):
        nat = m.get(key)
        nat.last_seen -= back
        m.set(key, nat)


def half_open_expired(w: World) -> None:
    assert event(w, "halfopen_expired") == 1


FLOOD_SOURCE = "10.200.0.3"
# SYN_FLOOD_PER_CPU SYNs in the second: the next one is over the rate
UP_TO_THE_RATE = [syn(CLIENT_PORT + 1 + i) for i in range(SYN_FLOOD_PER_CPU)]
FLOOD_CONFIG = config(Algorithm.FIRST, stickiness=Stickiness.TABLE, throttle=1000)


def _has_key(w: World, table: str, src: str) -> bool:
    want = st.Addr.of(src).v4
    return any(k.src.v4 == want for k in w.dp.maps[table].keys())


def no_source_state(w: World) -> None:
    """In flood mode the unverified source got no sticky or throttle entry."""
    assert not _has_key(w, "sticky", FLOOD_SOURCE)
    assert not _has_key(w, "throttle", FLOOD_SOURCE)
    assert _has_key(w, "sticky", w.client_ip), "before the flood sources were remembered"
    assert event(w, "flood_syns") >= 1
    assert w.dp.stats()["frontends"][10]["syn_flood"] == 1


def source_state_after_handshake(w: World) -> None:
    assert _has_key(w, "sticky", FLOOD_SOURCE)
    assert _has_key(w, "throttle", FLOOD_SOURCE)


def set_health(server: int, up: bool):
    def run(w: World) -> None:
        w.dp.set_server_health(1, f"{w.server_ip(server)}:{SPORT}", up)
    return run


def reapply(frontends):
    def run(w: World) -> None:
        w.dp.apply(frontends(w))
    return run


def purge(server: int):
    def run(w: World) -> None:
        w.dp.purge_server(1, f"{w.server_ip(server)}:{SPORT}")
    return run


def rst_to_client(seq: int):
    def build(w: World) -> Packet:
        return (Ether(src=w.tb.mac(w.tb.lb), dst=w.tb.mac(w.tb.client))
                / IP(src=w.tb.vip, dst=w.client_ip, ttl=64, id=0, flags="DF")
                / TCP(sport=VPORT, dport=CLIENT_PORT, flags="R", seq=seq, ack=0, window=0))
    return build


def fin_from(side: str):
    """A FIN from the client, or from server b0 to its flow's SNAT port."""
    def build(w: World) -> Send:
        if side == "client":
            return Send(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip, ttl=64, id=8)
                        / TCP(sport=CLIENT_PORT, dport=VPORT, flags="FA", seq=1001, ack=5001))
        return Send(w.server_to_lb(0) / IP(src=w.server_ip(0), dst=w.snat_ip(0), ttl=64, id=9)
                    / TCP(sport=SPORT, dport=CLIENT_PORT, flags="FA", seq=5001, ack=1002),
                    ingress="b0")
    return build


def entry(w: World, key: st.FlowKey4, table: str | None = None) -> st.FlowNat | None:
    """The key's entry in `table`, or in conntrack, else the half-open map."""
    for name in (table,) if table else ("conntrack", "halfopen"):
        found = w.dp.maps[name].get(key)
        if found is not None:
            return found
    return None


def forward_key(w: World, port: int = CLIENT_PORT, src: str | None = None) -> st.FlowKey4:
    return st.FlowKey4(src=st.Addr.of(src or w.client_ip).v4, dst=st.Addr.of(w.tb.vip).v4,
                       sport=st.be16(port), dport=st.be16(VPORT), proto=6)


def forward_entry(w: World, table: str | None = None) -> st.FlowNat:
    return entry(w, forward_key(w), table)


def closed(server_time_wait: bool):
    def check(w: World) -> None:
        flags = forward_entry(w).flags
        c = w.dp.consts
        assert flags & int(c["CT_F_CLOSED"]), "both FINs seen: the flow is closed"
        assert bool(flags & int(c["CT_F_SERVER_TW"])) == server_time_wait, flags
    return check


def _port_seq(n: int) -> list[Callable[[World], Send]]:
    return [syn(CLIENT_PORT + 1 + i) for i in range(n)]


def reply_key(w: World, port: int = CLIENT_PORT, server: int = 0) -> st.FlowKey4:
    return st.FlowKey4(src=st.Addr.of(w.server_ip(server)).v4,
                       dst=st.Addr.of(w.snat_ip(server)).v4, sport=st.be16(SPORT),
                       dport=st.be16(port), proto=6)


def reply_entry(w: World, port: int = CLIENT_PORT, server: int = 0,
                table: str | None = None) -> st.FlowNat | None:
    return entry(w, reply_key(w, port, server), table)


def open_flows(w: World, server: int = 0) -> int:
    per_server = w.dp.stats()["servers"][1]
    return next(v["active_connections"] for k, v in per_server.items()
                if k.startswith(w.server_ip(server) + ":"))


def taken_over(w: World) -> None:
    """The closed flow's entries are gone from conntrack (they would shadow the new
    ones); the new flow holds the port, half-open: not counted until its handshake."""
    c = w.dp.consts
    assert reply_entry(w, table="conntrack") is None
    assert forward_entry(w, table="conntrack") is None
    reply = reply_entry(w, table="halfopen")
    assert reply is not None
    assert not reply.flags & int(c["CT_F_CLOSED"]), reply.flags
    assert forward_entry(w, table="halfopen").sport == st.be16(CLIENT_PORT)
    assert open_flows(w) == 0, "the closed flow is not counted, the half-open one not yet"


def held_for_first_client(w: World) -> None:
    """The other client's flow left the first one's closed reply entry alone."""
    reply = reply_entry(w)
    assert reply is not None and reply.flags & int(w.dp.consts["CT_F_CLOSED"])
    assert reply.dst.v4 == st.Addr.of(w.client_ip).v4
    other = reply_entry(w, port=w.snat_port(0))
    assert other is not None and other.dst.v4 == st.Addr.of("10.200.0.3").v4


CLOSED_BY_SERVER = [*handshake(), fin_from("server"), fin_from("client")]


# ---------------------------------------------------------------------- ICMP errors
UDP_CONFIG = config(protocol=Protocol.UDP)


def udp_from_client(w: World) -> Send:
    return Send(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip, ttl=64, id=3)
                / UDP(sport=CLIENT_PORT, dport=VPORT) / Raw(b"ping"))


def udp_to_server(w: World) -> Packet:
    return (IP(src=w.snat_ip(0), dst=w.server_ip(0), ttl=63, id=3)
            / UDP(sport=CLIENT_PORT, dport=SPORT) / Raw(b"ping"))


def icmp_from_server(code: int, quote: Callable[[World], Packet], type_: int = 3,
                     src: Callable[[World], str] | None = None, **icmp):
    """An ICMP error to the SNAT address quoting the LB's packet to server 0."""
    def build(w: World) -> Send:
        return Send(w.server_to_lb(0)
                    / IP(src=src(w) if src else w.server_ip(0), dst=w.snat_ip(0), ttl=64, id=21)
                    / ICMP(type=type_, code=code, **icmp) / quote(w), ingress="b0")
    return build


def icmp_to_client(code: int, quote: Callable[[World], Packet], type_: int = 3, **icmp):
    def build(w: World) -> Packet:
        return (w.lb_to_client() / IP(src=w.tb.vip, dst=w.client_ip, ttl=63, id=21)
                / ICMP(type=type_, code=code, **icmp) / quote(w))
    return build


def syn_as_sent(w: World) -> Packet:
    """The client's SYN as the server received it (the LB took one off the TTL)."""
    return bytes(forwarded(0)(w))[14:]


def syn_as_client_sent(w: World) -> Packet:
    return (IP(src=w.client_ip, dst=w.tb.vip, ttl=63, id=7)
            / TCP(sport=CLIENT_PORT, dport=VPORT, flags="S", seq=1000, window=64240))


def syn_ack_as_client_got(w: World) -> Packet:
    return IP(bytes(syn_ack_to_client(w))[14:])


def v6_flow(w: World) -> Send:
    return Send(w.to_lb() / IPv6(src=w.tb.client.ip6, dst=w.tb.vip6, hlim=64)
                / TCP(sport=CLIENT_PORT, dport=VPORT, flags="S", seq=1000))


def v6_ack(w: World) -> Send:
    return Send(w.to_lb() / IPv6(src=w.tb.client.ip6, dst=w.tb.vip6, hlim=64)
                / TCP(sport=CLIENT_PORT, dport=VPORT, flags="A", seq=1001, ack=5001))


V6_HANDSHAKE = [v6_flow, syn_ack_from(0, v6=True), v6_ack]


def v6_syn_at_server(w: World) -> Packet:
    return (IPv6(src=w.snat_ip(0, v6=True), dst=w.server_ip(0, v6=True), hlim=63)
            / TCP(sport=CLIENT_PORT, dport=SPORT, flags="S", seq=1000))


V6_CONFIG = config(v6_servers=True, vip="fd00:200:ffff::1")


def full_size_ack(df: bool, size: int = 1500):
    """An established flow's data packet of `size` IP bytes (a full 1500-byte frame)."""
    def build(w: World) -> Send:
        return Send(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip, ttl=64, id=8,
                                   flags="DF" if df else 0)
                    / TCP(sport=CLIENT_PORT, dport=VPORT, flags="A", seq=1001, ack=5001)
                    / Raw(b"x" * (size - 40)))
    return build


def frag_needed_to_client(mtu: int):
    """The LB's answer: from the VIP, out the client's side, quoting the packet's IP
    header and first 8 bytes of TCP."""
    def build(w: World) -> Packet:
        quote = bytes(full_size_ack(df=True)(w).packet)[14:14 + 28]
        return (w.lb_to_client()
                / IP(src=w.tb.vip, dst=w.client_ip, ttl=64, id=0, tos=0xc0)
                / ICMP(type=3, code=4, nexthopmtu=mtu) / Raw(quote))
    return build
V4_VIP_V6_SERVERS = config(v6_servers=True)


def too_big_from_v6_path(w: World) -> Send:
    return Send(w.server_to_lb(0)
                / IPv6(src=w.server_ip(0, v6=True), dst=w.snat_ip(0, v6=True), hlim=64)
                / ICMPv6PacketTooBig(mtu=1280) / v6_syn_at_server(w), ingress="b0")


def too_big_to_v6_client(w: World) -> Packet:
    return (w.lb_to_client()
            / IPv6(src=w.tb.vip6, dst=w.tb.client.ip6, hlim=63)
            / ICMPv6PacketTooBig(mtu=1280)
            / IPv6(src=w.tb.client.ip6, dst=w.tb.vip6, hlim=63)
            / TCP(sport=CLIENT_PORT, dport=VPORT, flags="S", seq=1000))


def time_exceeded_about_reply(w: World) -> Send:
    """A router on the client's side: the server's SYN-ACK (as the LB sent it) expired."""
    return Send(w.to_lb() / IP(src="10.200.0.3", dst=w.tb.vip, ttl=64, id=22)
                / ICMP(type=11, code=0) / syn_ack_as_client_got(w))


def time_exceeded_to_server(w: World) -> Packet:
    """...reaches server 0 from the SNAT address, quoting the SYN-ACK the server sent."""
    quote = (IP(src=w.server_ip(0), dst=w.snat_ip(0), ttl=63, id=9)
             / TCP(sport=SPORT, dport=CLIENT_PORT, flags="SA", seq=5000, ack=1001))
    return (w.lb_to_server(0) / IP(src=w.snat_ip(0), dst=w.server_ip(0), ttl=63, id=22)
            / ICMP(type=11, code=0) / quote)


# ---------------------------------------------------------------------- the cases
CASES: list[Case] = [
    # ---- forward, established, reply
    Case("forward: SYN of a new flow goes to the first server with an SNAT source",
         DEFAULT, syn(), XDP_REDIRECT, forwarded(0)),
    Case("established: a data packet follows its flow's server and SNAT port",
         DEFAULT, ack(), XDP_REDIRECT, forwarded_ack(0), before=[syn()]),
    Case("reply: the server's SYN-ACK is translated back to VIP -> client",
         DEFAULT, syn_ack_from(0), XDP_REDIRECT, syn_ack_to_client, before=[syn()]),
    Case("forward: a retransmitted SYN stays on its flow",
         DEFAULT, syn(), XDP_REDIRECT, forwarded(0), before=[syn()]),
    Case("forward: UDP starts a flow on any packet",
         config(protocol=Protocol.UDP),
         lambda w: Send(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip, ttl=64, id=3)
                        / UDP(sport=CLIENT_PORT, dport=VPORT) / Raw(b"ping")),
         XDP_REDIRECT,
         lambda w: (w.lb_to_server(0) / IP(src=w.snat_ip(0), dst=w.server_ip(0), ttl=63, id=3)
                    / UDP(sport=CLIENT_PORT, dport=SPORT) / Raw(b"ping"))),
    Case("forward: IPv4 UDP without checksum stays without",
         config(protocol=Protocol.UDP),
         raw_frame(lambda w: bytes(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip, ttl=64, id=3)
                                   / UDP(sport=CLIENT_PORT, dport=VPORT, chksum=0)
                                   / Raw(b"ping"))),
         XDP_REDIRECT,
         lambda w: (w.lb_to_server(0) / IP(src=w.snat_ip(0), dst=w.server_ip(0), ttl=63, id=3)
                    / UDP(sport=CLIENT_PORT, dport=SPORT, chksum=0) / Raw(b"ping"))),
    # ---- algorithms
    Case("roundrobin 3:1: the third new flow goes to the weight-1 server (order 0,0,1,0)",
         config(weights=(3, 1)), syn(), XDP_REDIRECT, forwarded(1),
         before=_port_seq(2)),
    Case("roundrobin 3:1: the fourth new flow is back on the weight-3 server",
         config(weights=(3, 1)), syn(), XDP_REDIRECT, forwarded(0),
         before=_port_seq(3)),
    Case("leastconn: the server with fewer open flows wins though the scan starts elsewhere",
         config(Algorithm.LEASTCONN), syn(), XDP_REDIRECT, forwarded(1),
         # flow A -> b0, flow B -> b1, B reset: b0 has 1 open, b1 0; C's scan starts at b0
         before=[*handshake(CLIENT_PORT + 1, 0), *handshake(CLIENT_PORT + 2, 1),
                 rst_from_client(CLIENT_PORT + 2)]),
    Case("source: the Maglev slot of the client's address, as Python computes it",
         config(Algorithm.SOURCE), syn(), XDP_REDIRECT, forwarded(maglev_choice)),
    Case("source: every flow of a client lands on the same server",
         config(Algorithm.SOURCE), syn(), XDP_REDIRECT, forwarded(maglev_choice),
         before=_port_seq(3)),
    Case("first: always the first usable server",
         config(Algorithm.FIRST), syn(), XDP_REDIRECT, forwarded(0), before=_port_seq(2)),
    Case("table stickiness: a client returns to its server after the rotation moved on",
         config(stickiness=Stickiness.TABLE), syn(), XDP_REDIRECT, forwarded(0),
         before=_port_seq(2)),
    # ---- node modes and health
    Case("reject: a rejecting server gets no new flow",
         config(modes=(ServerMode.REJECT, ServerMode.ACCEPT)), syn(), XDP_REDIRECT,
         forwarded(1), before=_port_seq(2)),
    Case("drain: no new flows for a draining server",
         config(modes=(ServerMode.DRAIN, ServerMode.ACCEPT)), syn(), XDP_REDIRECT,
         forwarded(1), before=_port_seq(2)),
    Case("drain: an established flow keeps its server after it starts draining",
         DEFAULT, ack(), XDP_REDIRECT, forwarded_ack(0), before=[syn()],
         setup=reapply(config(modes=(ServerMode.DRAIN, ServerMode.ACCEPT)))),
    Case("backup: unused while an accept server is usable",
         config(modes=(ServerMode.ACCEPT, ServerMode.BACKUP)), syn(), XDP_REDIRECT,
         forwarded(0), before=_port_seq(2)),
    Case("backup: takes new flows when no accept server is up",
         config(modes=(ServerMode.ACCEPT, ServerMode.BACKUP)), syn(), XDP_REDIRECT,
         forwarded(1), setup=set_health(0, False)),
    Case("health: a down server gets no new flow",
         DEFAULT, syn(), XDP_REDIRECT, forwarded(1), before=_port_seq(1),
         setup=set_health(0, False)),
    Case("health: a down server keeps its established flows",
         DEFAULT, ack(), XDP_REDIRECT, forwarded_ack(0), before=[syn()],
         setup=set_health(0, False)),
    Case("health: no usable server drops the SYN (the client retries)",
         DEFAULT, syn(), XDP_DROP, reason="drop_no_server",
         setup=lambda w: (set_health(0, False)(w), set_health(1, False)(w))),
    Case("shutdown_sessions: a purged flow's next packet is answered with a RST",
         DEFAULT, ack(), XDP_REDIRECT, rst_to_client(5001), reason="tx_reset",
         before=handshake(), setup=purge(0)),
    # ---- SNAT port choice
    Case("snat: the client's own source port is kept when it is free",
         DEFAULT, syn(51234), XDP_REDIRECT, forwarded(0, port=51234)),
    Case("snat: a client port of the LB host's own range (health checks) is not kept",
         DEFAULT, syn(port=HOST_PORT_MIN), XDP_REDIRECT,
         forwarded(0, port=lambda w: w.snat_port(0))),
    Case("snat: the same client reuses a closed flow's port at once (server in TIME_WAIT)",
         config(Algorithm.FIRST), syn(), XDP_REDIRECT, forwarded(0),
         before=CLOSED_BY_SERVER, check=taken_over),
    Case("snat: another client with the same port gets another port while the hold runs",
         config(Algorithm.FIRST), syn(src="10.200.0.3"), XDP_REDIRECT,
         forwarded(0, port=lambda w: w.snat_port(0)), before=CLOSED_BY_SERVER,
         check=held_for_first_client),
    # ---- closing
    Case("closing: the server's FIN first keeps the SNAT port for its TIME_WAIT",
         DEFAULT, fin_from("client"), XDP_REDIRECT, before=[*handshake(), fin_from("server")],
         check=closed(server_time_wait=True)),
    Case("closing: the client's FIN first frees the SNAT port soon after",
         DEFAULT, fin_from("server"), XDP_REDIRECT, before=[*handshake(), fin_from("client")],
         check=closed(server_time_wait=False)),
    # ---- throttle
    Case("client_conn_throttle 2/s: the third SYN within the second is dropped",
         config(throttle=2), syn(), XDP_DROP, reason="drop_throttled", before=_port_seq(2)),
    Case("client_conn_throttle 2/s: another source is not limited by the first",
         config(throttle=2), syn(src="10.200.0.3"), XDP_REDIRECT, before=_port_seq(2)),
    # ---- address families
    Case("IPv6 server behind an IPv4 VIP: the SYN is translated to IPv6",
         config(v6_servers=True), syn(), XDP_REDIRECT,
         lambda w: (w.lb_to_server(0)
                    / IPv6(src=w.snat_ip(0, v6=True), dst=w.server_ip(0, v6=True), hlim=63)
                    / TCP(sport=CLIENT_PORT, dport=SPORT, flags="S", seq=1000,
                          window=64240))),
    Case("IPv6 server behind an IPv4 VIP: its reply is translated back to IPv4",
         config(v6_servers=True),
         lambda w: Send(w.server_to_lb(0)
                        / IPv6(src=w.server_ip(0, v6=True), dst=w.snat_ip(0, v6=True),
                               hlim=64)
                        / TCP(sport=SPORT, dport=CLIENT_PORT, flags="SA", seq=5000,
                              ack=1001), ingress="b0"),
         XDP_REDIRECT,
         lambda w: (w.lb_to_client() / IP(src=w.tb.vip, dst=w.client_ip, ttl=63, id=0,
                                          flags="DF")
                    / TCP(sport=VPORT, dport=CLIENT_PORT, flags="SA", seq=5000, ack=1001)),
         before=[syn()]),
    Case("IPv6 VIP to IPv6 servers",
         config(v6_servers=True, vip="fd00:200:ffff::1"),
         lambda w: Send(w.to_lb() / IPv6(src=w.tb.client.ip6, dst=w.tb.vip6, hlim=64)
                        / TCP(sport=CLIENT_PORT, dport=VPORT, flags="S", seq=1000)),
         XDP_REDIRECT,
         lambda w: (w.lb_to_server(0)
                    / IPv6(src=w.snat_ip(0, v6=True), dst=w.server_ip(0, v6=True), hlim=63)
                    / TCP(sport=CLIENT_PORT, dport=SPORT, flags="S", seq=1000))),
    # ---- encapsulation
    Case("VLAN: a tagged SYN is balanced and keeps its tag",
         DEFAULT,
         lambda w: Send(w.to_lb() / Dot1Q(vlan=100) / IP(src=w.client_ip, dst=w.tb.vip,
                                                         ttl=64, id=7)
                        / TCP(sport=CLIENT_PORT, dport=VPORT, flags="S", seq=1000,
                              window=64240)),
         XDP_REDIRECT,
         lambda w: (w.lb_to_server(0) / Dot1Q(vlan=100)
                    / IP(src=w.snat_ip(0), dst=w.server_ip(0), ttl=63, id=7)
                    / TCP(sport=CLIENT_PORT, dport=SPORT, flags="S", seq=1000,
                          window=64240))),
    # ---- what the program leaves alone or refuses
    Case("pass: a non-SYN TCP packet without state goes to the kernel (it answers RST)",
         DEFAULT, ack(), XDP_PASS, reason="pass_no_state"),
    Case("pass: an L7 (https) frontend on the same VIP is the kernel's",
         DEFAULT, lambda w: Send(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip)
                                 / TCP(sport=CLIENT_PORT, dport=443, flags="S")), XDP_PASS),
    Case("pass: traffic to other addresses is untouched",
         DEFAULT, lambda w: Send(w.to_lb() / IP(src=w.client_ip, dst="10.200.1.2")
                                 / TCP(sport=CLIENT_PORT, dport=8080, flags="S")), XDP_PASS,
         lambda w: w.to_lb() / IP(src=w.client_ip, dst="10.200.1.2")
         / TCP(sport=CLIENT_PORT, dport=8080, flags="S")),
    Case("pass: ARP", DEFAULT,
         lambda w: Send(Ether(src=w.tb.mac(w.tb.client), dst="ff:ff:ff:ff:ff:ff")
                        / ARP(psrc=w.client_ip, pdst=w.tb.lb_client_ip)), XDP_PASS),
    Case("pass: TTL 1 is the kernel's to answer with ICMP",
         DEFAULT, lambda w: Send(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip, ttl=1)
                                 / TCP(sport=CLIENT_PORT, dport=VPORT, flags="S")),
         XDP_PASS, reason="pass_ttl"),
    Case("pass: an IPv4 fragment (MF set)",
         DEFAULT, lambda w: Send(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip, flags="MF")
                                 / TCP(sport=CLIENT_PORT, dport=VPORT, flags="S")),
         XDP_PASS, reason="pass_fragment"),
    Case("pass: a later IPv4 fragment (offset set)",
         DEFAULT, lambda w: Send(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip, frag=100,
                                                proto=6) / Raw(b"x" * 24)),
         XDP_PASS, reason="pass_fragment"),
    Case("pass: an IPv6 fragment",
         config(v6_servers=True, vip="fd00:200:ffff::1"),
         lambda w: Send(w.to_lb() / IPv6(src=w.tb.client.ip6, dst=w.tb.vip6)
                        / IPv6ExtHdrFragment(m=1) / TCP(sport=CLIENT_PORT, dport=VPORT)),
         XDP_PASS, reason="pass_fragment"),
    Case("pass: IPv4 options",
         DEFAULT, lambda w: Send(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip,
                                                options=[b"\x01\x01\x01\x00"])
                                 / TCP(sport=CLIENT_PORT, dport=VPORT, flags="S")),
         XDP_PASS, reason="pass_ip_options"),
    Case("drop: truncated IPv4 header", DEFAULT, truncated(14 + 12), XDP_DROP,
         reason="drop_malformed"),
    Case("drop: truncated TCP header", DEFAULT, truncated(14 + 20 + 10), XDP_DROP,
         reason="drop_malformed"),
    Case("drop: IPv4 total length beyond the frame", DEFAULT, patched(16, b"\x05\xdc"),
         XDP_DROP, reason="drop_malformed"),
    Case("drop: IPv4 header length below 5 words", DEFAULT, patched(14, b"\x44"), XDP_DROP,
         reason="drop_malformed"),
    Case("drop: TCP data offset below 5 words", DEFAULT, patched(14 + 20 + 12, b"\x40"),
         XDP_DROP, reason="drop_malformed"),
    Case("drop: a VLAN tag with nothing after it", DEFAULT,
         raw_frame(lambda w: bytes(w.to_lb() / Dot1Q(vlan=5))[:16]), XDP_DROP,
         reason="drop_malformed"),
    # ---- capacity
    Case("conntrack full: a completed handshake still gets in, the LRU evicts idle entries",
         DEFAULT, ack(), XDP_REDIRECT, forwarded_ack(0), before=[syn(), syn_ack_from(0)],
         setup=fill_conntrack, check=conntrack_stayed_full),
    Case("half-open full: a SYN evicts other half-open flows, never an established one",
         DEFAULT, syn(CLIENT_PORT + 1), XDP_REDIRECT, forwarded(1, port=CLIENT_PORT + 1),
         before=handshake(), setup=fill_halfopen, check=established_untouched_by_syn),
    # ---- the handshake: half-open until the client acknowledges the server's SYN-ACK
    Case("handshake: the client's ACK of the SYN-ACK moves the flow to conntrack",
         DEFAULT, ack(), XDP_REDIRECT, forwarded_ack(0), before=[syn(), syn_ack_from(0)],
         check=promoted),
    Case("handshake: an ACK of anything else is forwarded, the flow stays half-open",
         DEFAULT, ack(acked=777), XDP_REDIRECT, before=[syn(), syn_ack_from(0)],
         check=still_half_open),
    Case("half-open expiry: no handshake within HALFOPEN_TIMEOUT_S, the ACK is the kernel's",
         DEFAULT, ack(), XDP_PASS, reason="pass_no_state", before=[syn(), syn_ack_from(0)],
         setup=age_half_open, check=half_open_expired),
    # ---- flood mode: SYNs over the rate create no sticky or throttle state
    Case("flood: over the SYN rate a new source gets no sticky or throttle entry",
         FLOOD_CONFIG, syn(src=FLOOD_SOURCE), XDP_REDIRECT, before=UP_TO_THE_RATE,
         check=no_source_state),
    Case("flood: a source that completes the handshake gets them then",
         FLOOD_CONFIG, ack(src=FLOOD_SOURCE), XDP_REDIRECT,
         before=[*UP_TO_THE_RATE, syn(src=FLOOD_SOURCE), syn_ack_from(0)],
         check=source_state_after_handshake),
    # ---- ICMP errors about NATed flows
    Case("icmp: a server's port unreachable for a UDP flow reaches the client, about its "
         "own datagram", UDP_CONFIG, icmp_from_server(3, udp_to_server), XDP_REDIRECT,
         icmp_to_client(3, lambda w: (IP(src=w.client_ip, dst=w.tb.vip, ttl=63, id=3)
                                      / UDP(sport=CLIENT_PORT, dport=VPORT) / Raw(b"ping"))),
         reason="tx_icmp", before=[udp_from_client]),
    Case("icmp: fragmentation needed on the server's path reaches the client with the MTU",
         DEFAULT, icmp_from_server(4, lambda w: IP(syn_as_sent(w)), nexthopmtu=1400,
                                   src=lambda w: "10.200.1.3"),
         XDP_REDIRECT, icmp_to_client(4, syn_as_client_sent, nexthopmtu=1400),
         reason="tx_icmp", before=handshake()),
    Case("icmp: time exceeded on the client's side, about a reply, reaches the server",
         DEFAULT, time_exceeded_about_reply, XDP_REDIRECT, time_exceeded_to_server,
         reason="tx_icmp", before=handshake()),
    Case("icmpv6: packet too big on an IPv6 server's path reaches the IPv6 client",
         V6_CONFIG, too_big_from_v6_path, XDP_REDIRECT, too_big_to_v6_client,
         reason="tx_icmp", before=V6_HANDSHAKE),
    Case("icmpv6: an error of a flow translated from IPv4 is the kernel's",
         V4_VIP_V6_SERVERS, too_big_from_v6_path, XDP_PASS, reason="pass_icmp_family",
         before=handshake(v6_servers=True)),
    Case("icmp: an error quoting no flow of ours is the kernel's", DEFAULT,
         icmp_from_server(3, lambda w: IP(syn_as_sent(w))), XDP_PASS),
    Case("icmp: an echo request to the VIP is the kernel's", DEFAULT,
         lambda w: Send(w.to_lb() / IP(src=w.client_ip, dst=w.tb.vip) / ICMP(type=8)
                        / Raw(b"x" * 32)), XDP_PASS),
    Case("icmpv6: an echo request to the VIP is the kernel's", V6_CONFIG,
         lambda w: Send(w.to_lb() / IPv6(src=w.tb.client.ip6, dst=w.tb.vip6)
                        / ICMPv6EchoRequest()), XDP_PASS),
    # ---- packets over the next hop's MTU (IPv4 -> IPv6 adds 20 bytes to a full frame)
    Case("too big: a full-size IPv4 packet with DF for an IPv6 server gets fragmentation "
         "needed with MTU 1480", V4_VIP_V6_SERVERS, full_size_ack(df=True), XDP_REDIRECT,
         frag_needed_to_client(1480), reason="tx_too_big", before=handshake(v6_servers=True)),
    Case("too big: without DF it is dropped (XDP cannot fragment)", V4_VIP_V6_SERVERS,
         full_size_ack(df=False), XDP_DROP, reason="drop_frag_needed",
         before=handshake(v6_servers=True)),
    Case("too big: a packet that fits after the translation goes on", V4_VIP_V6_SERVERS,
         full_size_ack(df=True, size=1480), XDP_REDIRECT, before=handshake(v6_servers=True)),
    Case("icmp: an error quoting less than 8 bytes of L4 header is the kernel's", UDP_CONFIG,
         icmp_from_server(3, lambda w: Raw(bytes(udp_to_server(w))[:20 + 4])), XDP_PASS,
         before=[udp_from_client]),
]
