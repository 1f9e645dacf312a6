"""XdpDataplane: the XDP program kept in step with the control plane's FrontendSpecs.

    load (compile once, pinned maps) -> attach -> apply(specs) ... -> stats() -> close()

apply() diffs the specs against what the maps hold and writes only what changed
(sync.py). A backend's selector is rebuilt in a spare slot and published by rewriting
one index, so no packet sees half a table. State is recovered from the pinned maps on
start, so a restarted daemon continues the flows and slots of the previous one.
The dataplane works in the network namespace it was created in (its netlink and raw
sockets stay there), whichever thread calls it later. It starts no process: a helper
forked from a daemon inherits its signal handling (pyroute2's NetNS did that)."""
import logging
import threading
from typing import Callable, Sequence

from lbfast.enums import XdpMode
from lbfast.spec import FrontendSpec
from lbfast.xdp import conntrack, loader, records, sizing, stats, sysctls
from lbfast.xdp.bpfmap import online_cpus, possible_cpus
from lbfast.xdp.consts import Constants
from lbfast.xdp.neighbours import NeighbourWatcher
from lbfast.xdp.probe import probe
from lbfast.xdp.purge import Challenger, purge_server_flows
from lbfast.xdp.records import ServerKey
from lbfast.xdp.rtnetlink import Rtnetlink
from lbfast.xdp.snat import SnatResolver
from lbfast.xdp.sync import MapSync

log = logging.getLogger("lbfast.xdp")

__all__ = ["XdpDataplane", "probe", "DEFAULT_PIN_DIR"]   # probe: the daemon's `auto` check
DEFAULT_PIN_DIR = "/sys/fs/bpf/lbfast"


class XdpDataplane:
    def __init__(self, interfaces: list[str], xdp_mode: XdpMode = XdpMode.NATIVE,
                 snat_addresses: list[str] | None = None, pin_dir: str = DEFAULT_PIN_DIR,
                 *, conntrack_entries: int | None = None, syn_flood_protection: bool = True,
                 syn_flood_threshold: int = 20000, constants: dict[str, int] | None = None,
                 build_flags: Sequence[str] = (),
                 on_failure: Callable[[str], None] | None = None) -> None:
        """`conntrack_entries`: IPv4 conntrack entries the online CPUs hold together
        (None: from the host's memory, sizing.py). `syn_flood_protection`: new TCP
        flows wait in the half-open maps for their handshake. `syn_flood_threshold`:
        SYNs per second to one frontend above which it is in flood mode.
        `constants` overrides bpf/consts.h values for this build (tests use small
        maps); `build_flags` selects a build variant (the bench's). With no interfaces
        the program is loaded but attached nowhere. `on_failure(reason)` is called (from
        another thread) when a part of the dataplane stops working for good; by default
        it is logged."""
        self.interfaces = list(interfaces)
        self.xdp_mode = XdpMode(xdp_mode)
        self.attached: dict[str, XdpMode] = {}
        self._lock = threading.RLock()
        self._closed = False
        self.on_failure = on_failure or (lambda reason: log.error("%s", reason))
        self._rtnl = Rtnetlink()        # opened here: stays in the caller's namespace
        self._neighbours: NeighbourWatcher | None = None
        self._challenger: Challenger | None = None
        self.program: loader.Program | None = None
        try:
            for ifname in self.interfaces:             # fail before the long compile
                loader.check_attachable(self._rtnl, ifname)
            self.consts = Constants({
                "PIN_DIR": pin_dir, "NR_CPUS_POSSIBLE": possible_cpus(),
                **sizing.flow_map_sizes(conntrack_entries),
                "SYN_PROTECTION": int(syn_flood_protection),
                "SYN_FLOOD_PER_CPU": max(1, syn_flood_threshold // online_cpus()),
                **(constants or {})})
            sysctls.enable_forwarding(self.interfaces)
            sysctls.reserve_ports(int(self.consts["SNAT_PORT_MIN"]),
                                  int(self.consts["SNAT_PORT_MAX"]))
            self.program = loader.load(self.consts, list(build_flags))
            self.maps = self.program.maps
            self._sync = MapSync(self.maps, self.consts,
                                 SnatResolver(self._rtnl, snat_addresses), self._rtnl)
            self._neighbours = NeighbourWatcher(self.maps["neigh_wanted"], self._report_failure)
            self._challenger = Challenger()
            for ifname in self.interfaces:
                self.attached[ifname] = loader.attach(self._rtnl, ifname, self.program.fd,
                                                      self.xdp_mode)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ the model
    def apply(self, frontends: Sequence[FrontendSpec]) -> None:
        """Make the maps describe `frontends` (tcp/udp ones; others are the kernel's),
        touching only what changed. A refused apply (no route to a server, no room)
        changes nothing."""
        want = records.desired(list(frontends))
        with self._lock:
            self._check_open()
            self._sync.apply(want)

    def _server(self, backend_id: int, server_key: str) -> ServerKey:
        key = (backend_id, *records.parse_server_key(server_key))
        if key not in self._sync.srv_slot:
            raise KeyError(f"no server {server_key} in backend {backend_id}")
        return key

    def set_server_health(self, backend_id: int, server_key: str, up: bool) -> None:
        """Health as the checks see it; a down server leaves the selector (its
        established flows continue unless purge_server is called)."""
        with self._lock:
            self._check_open()
            self._sync.set_health(self._server(backend_id, server_key), up)

    def purge_server(self, backend_id: int, server_key: str) -> int:
        """Cut the server's flows (on_marked_down shutdown_sessions): UDP entries are
        deleted; TCP ones are marked so the program answers their next packet with a
        RST, and both ends are prompted to send one. Returns how many flows were cut."""
        with self._lock:
            self._check_open()
            slot = self._sync.srv_slot[self._server(backend_id, server_key)]
            return purge_server_flows(self.maps, self.consts, slot, self._challenger)

    # ------------------------------------------------------------------ counters
    def stats(self) -> dict:
        """{"frontends": {id: traffic}, "servers": {backend id: {server key: traffic}},
        "reasons"/"drops"/"passes": {name: count}, "flow_state": ...}; traffic is
        packets and bytes in (client -> server) and out, new_connections and
        active_connections, and for frontends syn_rate, syn_flood and flood_syns;
        flow_state is conntrack and half-open occupancy, capacity and evictions, and
        the program's flow-state events (stats.flow_state)."""
        with self._lock:
            self._check_open()
            return stats.read(self._sync)

    def recount_active_connections(self) -> None:
        """Correct the open-connection counts from conntrack (the program's counts miss
        flows the LRU evicted or that idled out unseen); worth calling now and then."""
        with self._lock:
            self._check_open()
            stats.recount_active(self._sync)

    def sweep_half_open(self) -> int:
        """Delete expired half-open entries (conntrack.sweep_half_open); how many."""
        with self._lock:
            self._check_open()
            return conntrack.sweep_half_open(self.maps, self.consts)

    # ------------------------------------------------------------------ lifecycle
    @property
    def neighbours(self) -> NeighbourWatcher | None:
        return self._neighbours

    def _report_failure(self, reason: str) -> None:
        if not self._closed:
            self.on_failure(reason)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("XdpDataplane is closed")

    def close(self, detach: bool = True) -> None:
        """Detach from every interface (unless detach=False: the program keeps running
        on them and the next XdpDataplane takes over). Pinned maps always stay."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if detach:
                for ifname in list(self.attached):
                    try:
                        loader.detach(self._rtnl, ifname)
                    except Exception as e:  # keep closing the rest
                        log.warning("detaching XDP from %s failed: %s", ifname, e)
                self.attached.clear()
            if self._neighbours is not None:
                self._neighbours.stop()
            if self._challenger is not None:
                self._challenger.close()
            if self.program is not None:
                self.program.close()
            self._rtnl.close()

    def __enter__(self) -> "XdpDataplane":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def program_fd(self) -> int:
        return self.program.fd if self.program else -1

    def __repr__(self) -> str:
        return (f"XdpDataplane(interfaces={self.interfaces}, attached={self.attached}, "
                f"pin_dir={self.consts['PIN_DIR']!r})")
