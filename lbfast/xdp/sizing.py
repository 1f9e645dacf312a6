"""How big the flow maps are made: dataplane.conntrack_entries, or a default from the
host's memory, turned into max_entries for each map.

The conntrack and half-open maps are per-CPU LRUs (BPF_F_NO_COMMON_LRU): the kernel
gives each *possible* CPU max_entries / possible CPUs, but only the online CPUs see
packets. So max_entries is scaled by possible / online: the online CPUs together hold
what was asked for. IPv6 flows and half-open flows get a share of the IPv4 size."""
import os

from lbfast.xdp.bpfmap import online_cpus, possible_cpus

ENTRY_BYTES = 160           # an IPv4 conntrack entry: key, value and the map's own element
MEMORY_SHARE = 512          # the default takes at most 1/512 of the host's memory
MIN_ENTRIES, MAX_DEFAULT = 65536, 1 << 22
SHARES = {"CONNTRACK_SIZE": 1, "CONNTRACK6_SIZE": 4, "HALFOPEN_SIZE": 1, "HALFOPEN6_SIZE": 4}


def default_entries(memory_bytes: int | None = None) -> int:
    """The largest power of two of entries within the memory share, at least 65536."""
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    fit = max(MIN_ENTRIES, min(MAX_DEFAULT, memory_bytes // MEMORY_SHARE // ENTRY_BYTES))
    return 1 << (fit.bit_length() - 1)


def flow_map_sizes(conntrack_entries: int | None = None, online: int | None = None,
                   possible: int | None = None) -> dict[str, int]:
    """max_entries of conntrack, conntrack6, halfopen and halfopen6 (consts.h names)."""
    entries = conntrack_entries or default_entries()
    online = online or online_cpus()
    possible = possible or possible_cpus()
    sizes = {}
    for name, share in SHARES.items():
        per_cpu = max(1024, -(-entries // share // online))
        sizes[name] = per_cpu * possible
    return sizes
