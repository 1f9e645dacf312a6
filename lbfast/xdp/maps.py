"""Python's view of bpf/maps.h: each map's kind, key/value mirror and size constant.
The loader checks pinned maps against it (a layout change means re-creating the map) and
opens every map through it; tests check it against what bcc compiled."""
import ctypes as ct
from dataclasses import dataclass
from typing import Callable

from lbfast.xdp import structs as st
from lbfast.xdp.consts import Constants


@dataclass(frozen=True)
class MapSpec:
    name: str
    kind: str                 # syscall.MAP_TYPES key
    key: Callable[[Constants], type]
    value: Callable[[Constants], type]
    size: str | int           # constant name, or a literal
    flags: int = 0            # map_flags

    @property
    def percpu(self) -> bool:
        return self.kind.startswith("percpu")

    def max_entries(self, consts: Constants) -> int:
        return int(consts[self.size]) if isinstance(self.size, str) else self.size

    def name_digest(self) -> int:
        return st.digest64(self.name)

    def layout_digest(self, consts: Constants) -> int:
        return st.layout_digest(self.key(consts), self.value(consts))


def _fixed(t: type) -> Callable[[Constants], type]:
    return lambda consts: t


U32, U64 = _fixed(ct.c_uint32), _fixed(ct.c_uint64)
BPF_F_NO_COMMON_LRU = 1 << 1

MAPS: tuple[MapSpec, ...] = (
    MapSpec("frontends", "hash", _fixed(st.FrontendKey), _fixed(st.Frontend), "MAX_FRONTENDS"),
    MapSpec("backends", "array", U32, _fixed(st.Backend), "MAX_BACKENDS"),
    MapSpec("selectors", "array", U32, st.selector_type, "MAX_SELECTORS"),
    MapSpec("servers", "array", U32, st.server_type, "MAX_SERVERS"),
    MapSpec("conntrack", "lru_hash", _fixed(st.FlowKey4), _fixed(st.FlowNat), "CONNTRACK_SIZE",
            BPF_F_NO_COMMON_LRU),
    MapSpec("conntrack6", "lru_hash", _fixed(st.FlowKey), _fixed(st.FlowNat),
            "CONNTRACK6_SIZE", BPF_F_NO_COMMON_LRU),
    MapSpec("halfopen", "lru_hash", _fixed(st.FlowKey4), _fixed(st.FlowNat), "HALFOPEN_SIZE",
            BPF_F_NO_COMMON_LRU),
    MapSpec("halfopen6", "lru_hash", _fixed(st.FlowKey), _fixed(st.FlowNat), "HALFOPEN6_SIZE",
            BPF_F_NO_COMMON_LRU),
    MapSpec("sticky", "lru_hash", _fixed(st.StickyKey), _fixed(st.Sticky), "STICKY_SIZE"),
    MapSpec("throttle", "lru_hash", _fixed(st.ThrottleKey), _fixed(st.ThrottleBucket),
            "THROTTLE_SIZE"),
    MapSpec("neigh_wanted", "lru_hash", _fixed(st.NeighKey), U64, "NEIGH_WANTED_SIZE"),
    MapSpec("rr_cursor", "array", U32, U32, "MAX_BACKENDS"),
    MapSpec("snat_cursor", "percpu_array", U32, U32, 1),
    MapSpec("frontend_traffic", "percpu_array", U32, _fixed(st.Traffic), "MAX_FRONTENDS"),
    MapSpec("server_traffic", "percpu_array", U32, _fixed(st.Traffic), "MAX_SERVERS"),
    MapSpec("active_conns", "array", U32, st.active_conns_type, 1),
    MapSpec("reasons", "percpu_array", U32, U64, "REASON_COUNT"),
    MapSpec("ct_events", "percpu_array", U32, U64, "EVENT_COUNT"),
    MapSpec("syn_rate", "percpu_array", U32, _fixed(st.SynWindow), "MAX_FRONTENDS"),
    # map name's digest -> layout digest of its key and value (loader.pin_mismatch)
    MapSpec("layouts", "hash", U64, U64, 64),
)
MAP_BY_NAME = {m.name: m for m in MAPS}
