"""Resetting purged flows (on_marked_down shutdown_sessions). The program answers any
packet of a flow marked CT_F_RESET with a RST carrying the sequence number its sender
expects. An idle side sends nothing, so this module makes it speak: a SYN for its
established connection, sent from the LB with a raw socket, draws an RFC 5961 challenge
ACK from the peer's kernel, which the program turns into the RST."""
import ipaddress
import random
import socket
import struct

from lbfast.xdp import conntrack
from lbfast.xdp import structs as st
from lbfast.xdp.consts import Constants
from lbfast.xdp.structs import FAMILY_V4, port_of
from lbfast.xdp.syscall import BPF_EXIST

IPPROTO_TCP = 6
TCP_SYN = 0x02


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _csum(data: bytes) -> int:
    return ~_sum16(data) & 0xFFFF


def syn_segment(src: str, dst: str, sport: int, dport: int) -> bytes:
    """An IP packet (header included) carrying a bare SYN from src:sport to dst:dport."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    seq = random.getrandbits(32)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, TCP_SYN, 65535, 0, 0)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, IPPROTO_TCP, len(tcp))
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", len(tcp), IPPROTO_TCP)
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    if s.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64,
                         IPPROTO_TCP, 0, s.packed, d.packed)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp), IPPROTO_TCP, 64, s.packed,
                         d.packed)
    return ip + tcp


class Challenger:
    """Raw sockets of the namespace the dataplane was created in (sockets keep their
    namespace, so any thread may use them later)."""

    def __init__(self) -> None:
        self._v4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self._v6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def challenge(self, key) -> None:
        """Make the source of conntrack key `key` send a packet of that flow: a SYN to it
        from the key's destination."""
        src = key.dst.ip(key.family)
        dst = key.src.ip(key.family)
        packet = syn_segment(src, dst, port_of(key.dport), port_of(key.sport))
        sock = self._v4 if key.family == FAMILY_V4 else self._v6
        try:
            sock.sendto(packet, (dst, 0))
        except OSError:
            pass    # unreachable peer: its flow expires instead

    def close(self) -> None:
        self._v4.close()
        self._v6.close()



def purge_server_flows(maps: dict, consts: Constants, slot: int,
                       challenger: Challenger) -> int:
    """Cut the open flows of server `slot`: UDP entries go, TCP ones are marked for a
    RST and both their ends challenged. Returns how many flows were cut."""
    reset, reply = int(consts["CT_F_RESET"]), int(consts["CT_F_REPLY"])
    closed = int(consts["CT_F_CLOSED"])
    marked, flows = [], 0
    for m, key, flow, nat in list(conntrack.entries(maps)):
        if nat.server != slot or nat.flags & closed:
            continue
        if not nat.flags & reply:
            flows += 1
        if flow.proto != st.PROTO_NUMBERS["tcp"]:
            m.delete(key)
            continue
        nat.flags |= reset
        try:
            m.set(key, nat, BPF_EXIST)
        except OSError:
            continue        # evicted meanwhile
        marked.append(flow)
    for flow in marked:
        challenger.challenge(flow)
    return flows
