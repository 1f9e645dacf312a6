"""Python's view of the program's connection tracking: the IPv4 (`conntrack`, 16-byte
keys) and IPv6 (`conntrack6`) maps as one set of entries, each key in the generic
FlowKey form (what the challenger and the tests need); and the sweep of the half-open
maps (`halfopen`, `halfopen6`), whose expired entries nothing else removes."""
from typing import Iterator

from lbfast.xdp import clock
from lbfast.xdp import structs as st
from lbfast.xdp.bpfmap import BpfMap

MAPS = ("conntrack", "conntrack6")
HALF_OPEN_MAPS = ("halfopen", "halfopen6")


def generic_key(key) -> st.FlowKey:
    if isinstance(key, st.FlowKey):
        return key
    return st.FlowKey(src=st.Addr(v4=key.src), dst=st.Addr(v4=key.dst), sport=key.sport,
                      dport=key.dport, proto=key.proto, family=st.FAMILY_V4)


def map_key(key: st.FlowKey):
    """(map name, key as that map stores it) for a generic key."""
    if key.family == st.FAMILY_V4:
        return "conntrack", st.FlowKey4(src=key.src.v4, dst=key.dst.v4, sport=key.sport,
                                        dport=key.dport, proto=key.proto)
    return "conntrack6", key


def entries(maps: dict[str, BpfMap]) -> Iterator[tuple[BpfMap, object, st.FlowKey, st.FlowNat]]:
    """(map, stored key, generic key, value) for every entry of both maps."""
    for name in MAPS:
        m = maps[name]
        for key, nat in m.items():
            yield m, key, generic_key(key), nat


def clear(maps: dict[str, BpfMap]) -> None:
    for name in MAPS:
        m = maps[name]
        for key in list(m.keys()):
            m.delete(key)


def sweep_half_open(maps: dict[str, BpfMap], consts) -> int:
    """Delete the half-open entries older than HALFOPEN_TIMEOUT_S (a flow that never
    completed its handshake: after a SYN flood, most of the map). The program ignores
    them already; this gives the room back and makes the occupancy say so. Returns how
    many were deleted."""
    now = clock.jiffies32()
    timeout = int(consts["HALFOPEN_TIMEOUT_S"]) * int(consts["JIFFIES_PER_S"])
    deleted = 0
    for name in HALF_OPEN_MAPS:
        m = maps[name]
        stale = [key for key, nat in m.items() if (now - nat.last_seen) & 0xFFFFFFFF > timeout]
        deleted += sum(m.delete(key) for key in stale)
    return deleted
