"""ctypes mirrors of bpf/structs.h, one class per C struct with the C field names
(tests/test_xdp_structs.py compares sizes and offsets with the compiler's), and the
conversions between Python addresses/ports and their wire form in those structs.
Structs whose size depends on a constant are built per `Constants` by a function."""
import ctypes as ct
import hashlib
import ipaddress
import socket
from functools import lru_cache

from lbfast.xdp.consts import DEFAULTS, Constants

FAMILY_V4 = int(DEFAULTS["FAMILY_V4"])
FAMILY_V6 = int(DEFAULTS["FAMILY_V6"])
PROTO_NUMBERS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


class Addr(ct.Union):
    _fields_ = [("v4", ct.c_uint32), ("v6", ct.c_uint32 * 4)]

    @classmethod
    def of(cls, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> "Addr":
        a = cls()
        packed = ipaddress.ip_address(ip).packed
        ct.memmove(ct.addressof(a), packed, len(packed))
        return a

    def ip(self, family: int) -> str:
        raw = bytes(self)
        return str(ipaddress.ip_address(raw[:4] if family == FAMILY_V4 else raw))


class FlowKey(ct.Structure):
    _fields_ = [("src", Addr), ("dst", Addr), ("sport", ct.c_uint16), ("dport", ct.c_uint16),
                ("proto", ct.c_uint8), ("family", ct.c_uint8), ("pad", ct.c_uint16)]


class FlowKey4(ct.Structure):
    _fields_ = [("src", ct.c_uint32), ("dst", ct.c_uint32), ("sport", ct.c_uint16),
                ("dport", ct.c_uint16), ("proto", ct.c_uint8), ("pad", ct.c_uint8 * 3)]


class NextHop(ct.Structure):
    _fields_ = [("dmac", ct.c_uint8 * 6), ("smac", ct.c_uint8 * 6), ("ifindex", ct.c_uint32),
                ("mtu", ct.c_uint16), ("pad", ct.c_uint16)]


class FlowNat(ct.Structure):
    _fields_ = [("src", Addr), ("dst", Addr), ("sport", ct.c_uint16), ("dport", ct.c_uint16),
                ("family", ct.c_uint8), ("flags", ct.c_uint8), ("server", ct.c_uint16),
                ("frontend", ct.c_uint16), ("pad", ct.c_uint16),
                ("idle_timeout_s", ct.c_uint32), ("last_seen", ct.c_uint64), ("nh", NextHop),
                ("fins", ct.c_uint32)]


class FrontendKey(ct.Structure):
    _fields_ = [("vip", Addr), ("port", ct.c_uint16), ("proto", ct.c_uint8),
                ("family", ct.c_uint8)]


class Frontend(ct.Structure):
    _fields_ = [("id", ct.c_uint32), ("slot", ct.c_uint16), ("backend", ct.c_uint16),
                ("idle_timeout_s", ct.c_uint32), ("conn_throttle", ct.c_uint32)]


class Backend(ct.Structure):
    _fields_ = [("id", ct.c_uint32), ("selector", ct.c_uint32),
                ("sticky_timeout_s", ct.c_uint32), ("flags", ct.c_uint32),
                ("digest", ct.c_uint64)]


class StickyKey(ct.Structure):
    _fields_ = [("src", Addr), ("backend", ct.c_uint16), ("family", ct.c_uint8),
                ("pad", ct.c_uint8)]


class Sticky(ct.Structure):
    _fields_ = [("last_seen", ct.c_uint64), ("server", ct.c_uint16),
                ("pad", ct.c_uint16 * 3)]


class ThrottleKey(ct.Structure):
    _fields_ = [("src", Addr), ("frontend", ct.c_uint16), ("family", ct.c_uint8),
                ("pad", ct.c_uint8)]


class ThrottleBucket(ct.Structure):
    _fields_ = [("tokens", ct.c_uint64), ("last", ct.c_uint64)]


class NeighKey(ct.Structure):
    _fields_ = [("addr", Addr), ("ifindex", ct.c_uint32), ("family", ct.c_uint8),
                ("pad", ct.c_uint8 * 3)]


class SynWindow(ct.Structure):
    _fields_ = [("second", ct.c_uint64), ("syns", ct.c_uint64), ("last_syns", ct.c_uint64),
                ("flood_syns", ct.c_uint64)]


class Traffic(ct.Structure):
    _fields_ = [("packets_in", ct.c_uint64), ("bytes_in", ct.c_uint64),
                ("packets_out", ct.c_uint64), ("bytes_out", ct.c_uint64),
                ("new_flows", ct.c_uint64)]


@lru_cache(maxsize=None)
def _selector_type(selector_size: int, leastconn_max_scan: int) -> type[ct.Structure]:
    class Selector(ct.Structure):
        _fields_ = [("algorithm", ct.c_uint32), ("len", ct.c_uint32),
                    ("servers", ct.c_uint16 * selector_size),
                    ("weights", ct.c_uint16 * leastconn_max_scan)]
    return Selector


def selector_type(consts: Constants = DEFAULTS) -> type[ct.Structure]:
    return _selector_type(int(consts["SELECTOR_SIZE"]), int(consts["LEASTCONN_MAX_SCAN"]))


@lru_cache(maxsize=None)
def _server_type(snat_per_server: int) -> type[ct.Structure]:
    class Server(ct.Structure):
        _fields_ = [("addr", Addr), ("snat", Addr * snat_per_server), ("port", ct.c_uint16),
                    ("family", ct.c_uint8), ("flags", ct.c_uint8), ("weight", ct.c_uint16),
                    ("backend", ct.c_uint16), ("id", ct.c_uint32), ("snat_count", ct.c_uint8),
                    ("pad", ct.c_uint8 * 3), ("nh", NextHop), ("nh_seen", ct.c_uint64)]
    return Server


def server_type(consts: Constants = DEFAULTS) -> type[ct.Structure]:
    return _server_type(int(consts["SNAT_PER_SERVER"]))


@lru_cache(maxsize=None)
def _active_conns_type(max_frontends: int, max_servers: int) -> type[ct.Structure]:
    class ActiveConns(ct.Structure):
        _fields_ = [("frontends", ct.c_int64 * max_frontends),
                    ("servers", ct.c_int64 * max_servers)]
    return ActiveConns


def active_conns_type(consts: Constants = DEFAULTS) -> type[ct.Structure]:
    return _active_conns_type(int(consts["MAX_FRONTENDS"]), int(consts["MAX_SERVERS"]))


def c_structs(consts: Constants = DEFAULTS) -> dict[str, type[ct.Structure | ct.Union]]:
    """C name -> mirror, for the layout test."""
    return {
        "addr": Addr, "flow_key": FlowKey, "flow_key4": FlowKey4, "next_hop": NextHop, "flow_nat": FlowNat, "frontend_key": FrontendKey,
        "frontend": Frontend, "backend": Backend, "selector": selector_type(consts),
        "server": server_type(consts), "sticky_key": StickyKey, "sticky": Sticky,
        "throttle_key": ThrottleKey, "throttle_bucket": ThrottleBucket, "neigh_key": NeighKey,
        "active_conns": active_conns_type(consts), "traffic": Traffic, "syn_window": SynWindow,
    }


def family_of(ip: str) -> int:
    return FAMILY_V6 if ipaddress.ip_address(ip).version == 6 else FAMILY_V4


def be16(port: int) -> int:
    """A port as the program stores it (network order, read as a host u16)."""
    return socket.htons(port)


def port_of(be: int) -> int:
    return socket.ntohs(be)


def layout_digest(*types: type) -> int:
    """64-bit digest of how `types` lay out their bytes (field names, offsets, sizes, down
    through nested structs and arrays): a pinned map whose key or value layout changed
    with the same sizes must not be reused (the loader keeps these in the `layouts` map)."""
    def describe(t: type) -> str:
        if hasattr(t, "_fields_"):
            return "{" + ",".join(f"{name}@{getattr(t, name).offset}:{describe(ft)}"
                                  for name, ft, *_ in t._fields_) + "}"
        if hasattr(t, "_length_"):
            return f"{describe(t._type_)}[{t._length_}]"
        return f"{t.__name__}/{ct.sizeof(t)}"
    return digest64("|".join(describe(t) for t in types))


def digest64(text: str) -> int:
    """A stable 64-bit digest (a u64 map key or value)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
