"""A small rtnetlink client for the few questions the XDP dataplane asks the kernel: a
link's index, kind and XDP programs, attaching a program, the route to an address, and
having a neighbour resolved. One plain socket, no helper process or thread (pyroute2's
NetNS forks one, which inherited the daemon's signal handling): the socket belongs to
the network namespace of the thread that opened it, and any thread may use it, one
request at a time."""
import errno
import os
import socket
import struct
import threading
from dataclasses import dataclass

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF

RTM_NEWLINK, RTM_GETLINK, RTM_SETLINK = 16, 18, 19
RTM_GETROUTE = 26
RTM_NEWNEIGH = 28

IFLA_IFNAME, IFLA_LINKINFO, IFLA_XDP = 3, 18, 43
IFLA_INFO_KIND = 1
IFLA_XDP_FD, IFLA_XDP_ATTACHED, IFLA_XDP_FLAGS = 1, 2, 3
IFLA_XDP_PROG_ID, IFLA_XDP_DRV_PROG_ID, IFLA_XDP_SKB_PROG_ID = 4, 5, 6
XDP_ATTACHED_DRV, XDP_ATTACHED_SKB = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC = 1, 4, 5, 7
NDA_DST = 1
NTF_USE = 0x01

NLMSGHDR = struct.Struct("=IHHII")     # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")    # family, type, index, flags, change
RTMSG = struct.Struct("=BBBBBBBBI")     # family, dst_len, src_len, tos, table, protocol,
                                        # scope, type, flags
NDMSG = struct.Struct("=BxxxiHBB")      # family, ifindex, state, flags, type
NLATTR = struct.Struct("=HH")           # len, type
TIMEOUT_S = 5.0
RECV_BYTES = 1 << 18          # a link's message with all its attributes fits


class NetlinkError(OSError):
    """The kernel refused a request: errno and, when it says, why."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    body = NLATTR.pack(NLATTR.size + len(payload), kind) + payload
    return body + b"\0" * (_align(len(body)) - len(body))


def nested(kind: int, *attrs: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(attrs))


def parse_attrs(data: bytes) -> dict[int, bytes]:
    out, at = {}, 0
    while at + NLATTR.size <= len(data):
        length, kind = NLATTR.unpack_from(data, at)
        if length < NLATTR.size:
            break
        out[kind & NLA_TYPE_MASK] = data[at + NLATTR.size:at + length]
        at += _align(length)
    return out


def _u32(raw: bytes | None) -> int:
    return struct.unpack("=I", raw[:4])[0] if raw else 0


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


@dataclass
class Link:
    index: int
    kind: str | None          # "veth", "vlan", ... None for a plain device
    drv_prog: int             # id of the native-mode XDP program, 0 for none
    skb_prog: int             # id of the generic-mode one


@dataclass
class Route:
    next_hop: str             # the gateway, or the address itself when on-link
    oif: int
    prefsrc: str | None


class Rtnetlink:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  NETLINK_ROUTE)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)   # errors without the request
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)   # and with the kernel's reason
            self.sock.bind((0, 0))
            self.sock.settimeout(TIMEOUT_S)
        except BaseException:
            self.sock.close()
            raise
        self._lock = threading.Lock()
        self._seq = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Rtnetlink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ transport
    def request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request; (type, payload) of each reply message. A refusal raises
        NetlinkError; a broken socket raises whatever OSError the socket gives."""
        with self._lock:
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            seq = self._seq
            msg = NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, flags | NLM_F_REQUEST, seq, 0)
            self.sock.sendto(msg + body, (0, 0))
            replies = []
            while True:
                data = self.sock.recv(RECV_BYTES)
                at = 0
                while at + NLMSGHDR.size <= len(data):
                    length, mtype, mflags, mseq, _ = NLMSGHDR.unpack_from(data, at)
                    if length < NLMSGHDR.size:
                        raise OSError(errno.EPROTO, "malformed netlink message")
                    payload = data[at + NLMSGHDR.size:at + length]
                    at += _align(length)
                    if mseq != seq:
                        continue                    # a late answer to an abandoned request
                    if mtype == NLMSG_ERROR:
                        self._raise_error(payload)
                        return replies              # error 0: the ACK
                    if mtype == NLMSG_DONE:
                        return replies
                    replies.append((mtype, payload))
                    if not flags & NLM_F_ACK:
                        return replies

    @staticmethod
    def _raise_error(payload: bytes) -> None:
        code = -struct.unpack_from("=i", payload)[0]
        if code == 0:
            return
        # NETLINK_CAP_ACK: the request's header only; its extended-ack attributes follow
        why = parse_attrs(payload[4 + NLMSGHDR.size:]).get(NLMSGERR_ATTR_MSG, b"")
        text = os.strerror(code)
        if why:
            text += f" ({why.rstrip(bytes(1)).decode(errors='replace')})"
        raise NetlinkError(code, text)

    # ------------------------------------------------------------------ links
    def link(self, ifname: str) -> Link:
        """The link named ifname; NetlinkError ENODEV when there is none."""
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attr(IFLA_IFNAME, ifname.encode() + b"\0")
        (_, payload), = self.request(RTM_GETLINK, 0, body)
        _, _, index, _, _ = IFINFOMSG.unpack_from(payload)
        attrs = parse_attrs(payload[IFINFOMSG.size:])
        kind = parse_attrs(attrs.get(IFLA_LINKINFO, b"")).get(IFLA_INFO_KIND)
        xdp = parse_attrs(attrs.get(IFLA_XDP, b""))
        mode = xdp.get(IFLA_XDP_ATTACHED, b"\0")[0]
        single = _u32(xdp.get(IFLA_XDP_PROG_ID))
        drv = _u32(xdp.get(IFLA_XDP_DRV_PROG_ID)) or (single if mode == XDP_ATTACHED_DRV else 0)
        skb = _u32(xdp.get(IFLA_XDP_SKB_PROG_ID)) or (single if mode == XDP_ATTACHED_SKB else 0)
        return Link(index, kind.rstrip(b"\0").decode() if kind else None, drv, skb)

    def set_xdp(self, ifindex: int, prog_fd: int, flags: int) -> None:
        """Attach prog_fd (-1: detach) in the mode flags name."""
        body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, ifindex, 0, 0) + nested(
            IFLA_XDP, attr(IFLA_XDP_FD, struct.pack("=i", prog_fd)),
            attr(IFLA_XDP_FLAGS, struct.pack("=I", flags)))
        self.request(RTM_SETLINK, NLM_F_ACK, body)

    # ------------------------------------------------------------------ routes, neighbours
    def route(self, address: str) -> Route:
        """The route the kernel would take to address; NetlinkError when there is none."""
        family = _family(address)
        packed = socket.inet_pton(family, address)
        body = RTMSG.pack(family, len(packed) * 8, 0, 0, 0, 0, 0, 0, 0) + attr(RTA_DST, packed)
        (_, payload), = self.request(RTM_GETROUTE, 0, body)
        attrs = parse_attrs(payload[RTMSG.size:])
        gateway, prefsrc = attrs.get(RTA_GATEWAY), attrs.get(RTA_PREFSRC)
        return Route(socket.inet_ntop(family, gateway) if gateway else address,
                     _u32(attrs.get(RTA_OIF)),
                     socket.inet_ntop(family, prefsrc) if prefsrc else None)

    def resolve_neighbour(self, address: str, ifindex: int) -> None:
        """Have the kernel resolve address on ifindex as a packet sent there would
        (NTF_USE: creates the entry if needed, sends a solicitation unless it is valid)."""
        family = _family(address)
        body = NDMSG.pack(family, ifindex, 0, NTF_USE, 0) + attr(
            NDA_DST, socket.inet_pton(family, address))
        self.request(RTM_NEWNEIGH, NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE, body)
