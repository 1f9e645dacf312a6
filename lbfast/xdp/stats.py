"""The program's counters as numbers: per-CPU traffic summed, open connections from the
program's half-flow counts, reasons by name. And the recount that corrects the open
counts from conntrack (they miss flows the LRU evicted or that idled out unseen)."""
import ctypes as ct

from lbfast.xdp import clock, conntrack
from lbfast.xdp.bpfmap import online_cpus, possible_cpus
from lbfast.xdp import structs as st
from lbfast.xdp.reasons import EVENTS, REASONS
from lbfast.xdp.sync import MapSync, server_key_text


def _traffic(m, slot: int) -> dict:
    per_cpu = m.get_percpu(ct.c_uint32(slot))
    total = {name: sum(getattr(v, name) for v in per_cpu) for name, _ in st.Traffic._fields_}
    total["new_connections"] = total.pop("new_flows")
    return total


def _open(halves: int, per_flow: int) -> int:
    """Open connections from a count of open halves (a half-closed flow still counts)."""
    return max(0, -(-int(halves) // per_flow))


def _syn_rate(sync: MapSync, slot: int) -> dict:
    """A frontend's SYNs per second (the last whole second, all CPUs), whether any CPU
    is in flood mode for it now (bpf/flood.h), and its SYNs counted in flood mode."""
    hz, per_cpu = int(sync.consts["JIFFIES_PER_S"]), int(sync.consts["SYN_FLOOD_PER_CPU"])
    now = clock.jiffies32()
    rate, flood, flood_syns = 0, 0, 0
    for w in sync.maps["syn_rate"].get_percpu(ct.c_uint32(slot)):
        flood_syns += w.flood_syns
        age = ((now - w.second * hz) & 0xFFFFFFFF) // hz     # whole seconds since its window
        last = w.syns if age == 1 else w.last_syns if age == 0 else 0
        rate += last
        if (age == 0 and max(w.syns, w.last_syns) > per_cpu) or (age == 1 and w.syns > per_cpu):
            flood = 1
    return {"syn_rate": rate, "syn_flood": flood, "flood_syns": flood_syns}


def flow_state(sync: MapSync) -> dict:
    """Occupancy of conntrack and the half-open maps against their capacity (what the
    CPUs can hold: each CPU's LRU has max_entries / possible CPUs, and only the online
    ones take packets), the program's flow-state events (bpf/consts.h EVENT_*), and the
    evictions those imply: entries created but neither deleted nor present any more."""
    maps, c = sync.maps, sync.consts
    possible, online = possible_cpus(), online_cpus()
    events = {name: sum(v.value for v in maps["ct_events"].get_percpu(ct.c_uint32(code)))
              for code, name in EVENTS.items()}
    out: dict = {"events": events}
    for label, names, sizes, made, gone in (
            ("conntrack", conntrack.MAPS, ("CONNTRACK_SIZE", "CONNTRACK6_SIZE"),
             "ct_inserted", "ct_deleted"),
            ("half_open", conntrack.HALF_OPEN_MAPS, ("HALFOPEN_SIZE", "HALFOPEN6_SIZE"),
             "halfopen_inserted", "halfopen_deleted")):
        entries = sum(maps[n].count() for n in names)
        capacity = sum(int(c[s]) // possible * online for s in sizes)
        out[label] = {"entries": entries, "capacity": capacity,
                      "evicted": max(0, events[made] - events[gone] - entries)}
    return out


def read(sync: MapSync) -> dict:
    """Per frontend id and per backend id / server key: packets and bytes both ways
    ("in" is client -> server), new and open connections, SYN rate and flood mode; the
    program's counters by reason (bpf/consts.h), also split into drops and passes; and
    the flow state (flow_state)."""
    maps, per_flow = sync.maps, int(sync.consts["ACTIVE_PER_FLOW"])
    active = maps["active_conns"].get(ct.c_uint32(0))
    out: dict = {"frontends": {}, "servers": {}, "reasons": {}}
    for key, slot in sync.fe_slot.items():
        entry = _traffic(maps["frontend_traffic"], slot)
        entry["active_connections"] = _open(active.frontends[slot] if active else 0, per_flow)
        entry.update(_syn_rate(sync, slot))
        out["frontends"][sync.fe_value[key].id] = entry
    for key, slot in sync.srv_slot.items():
        entry = _traffic(maps["server_traffic"], slot)
        entry["active_connections"] = _open(active.servers[slot] if active else 0, per_flow)
        out["servers"].setdefault(key[0], {})[server_key_text(key)] = entry
    for code, name in REASONS.items():
        out["reasons"][name] = sum(v.value for v in maps["reasons"].get_percpu(ct.c_uint32(code)))
    out["drops"] = {k[5:]: v for k, v in out["reasons"].items() if k.startswith("drop_")}
    out["passes"] = {k[5:]: v for k, v in out["reasons"].items() if k.startswith("pass_")}
    out["flow_state"] = flow_state(sync)
    return out


def recount_active(sync: MapSync) -> None:
    """Rewrite the open-connection counts from the live conntrack entries. A flow that
    opens or closes during the count may be off until the next recount."""
    c = sync.consts
    now, hz = clock.jiffies32(), int(c["JIFFIES_PER_S"])
    skip = int(c["CT_F_REPLY"]) | int(c["CT_F_CLOSED"])
    per_flow = int(c["ACTIVE_PER_FLOW"])
    counts = st.active_conns_type(c)()
    for _, _, _, nat in conntrack.entries(sync.maps):
        idle = (now - nat.last_seen) & 0xFFFFFFFF
        if nat.flags & skip or idle > nat.idle_timeout_s * hz:
            continue
        halves = per_flow - bin(nat.fins & 3).count("1")
        counts.servers[nat.server] += halves
        counts.frontends[nat.frontend] += halves
    sync.maps["active_conns"].set(ct.c_uint32(0), counts)
