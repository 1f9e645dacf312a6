"""XdpDataplane: the XDP program kept in step with the control plane's FrontendSpecs.

    load (compile once, pinned maps) -> attach -> apply(specs) ... -> stats() -> close()

apply() diffs the specs against what the maps hold and writes only what changed. A
backend's selector is rebuilt in a spare slot and published by rewriting one index, so
no packet sees half a table. State is recovered from the pinned maps on start, so a
restarted daemon continues the flows and slot assignments of the previous one.
The dataplane works in the network namespace it was created in (its netlink and raw
sockets stay there), whichever thread calls it later."""
import ctypes as ct
import logging
import threading
from typing import Sequence

from lbfast.enums import XdpMode
from lbfast.spec import BackendSpec, FrontendSpec
from lbfast.xdp import clock, conntrack, loader, neighbours, records, sysctls
from lbfast.xdp import structs as st
from lbfast.xdp.bpfmap import possible_cpus
from lbfast.xdp.consts import Constants
from lbfast.xdp.probe import probe  # noqa: F401  (the daemon's `auto` check lives beside)
from lbfast.xdp.neighbours import NeighbourWatcher
from lbfast.xdp.netns import NamespaceHandle
from lbfast.xdp.purge import Challenger
from lbfast.xdp.reasons import REASONS
from lbfast.xdp.records import FrontendKey, ServerKey
from lbfast.xdp.selectors import SelectorContent, build_selector
from lbfast.xdp.slots import Slots
from lbfast.xdp.snat import SnatResolver
from lbfast.xdp.syscall import BPF_EXIST

log = logging.getLogger("lbfast.xdp")

DEFAULT_PIN_DIR = "/sys/fs/bpf/lbfast"


def _server_key_text(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class XdpDataplane:
    def __init__(self, interfaces: list[str], xdp_mode: XdpMode = XdpMode.NATIVE,
                 snat_addresses: list[str] | None = None, pin_dir: str = DEFAULT_PIN_DIR,
                 *, constants: dict[str, int] | None = None,
                 build_flags: Sequence[str] = ()) -> None:
        """`constants` overrides bpf/consts.h values for this build (tests use small
        maps); `build_flags` selects a build variant (the bench's). With no interfaces
        the program is loaded but attached nowhere."""
        self.interfaces = list(interfaces)
        self.xdp_mode = XdpMode(xdp_mode)
        self.attached: dict[str, XdpMode] = {}
        self._lock = threading.RLock()
        self._closed = False
        # netlink sockets of the caller's namespace (pyroute2's IPRoute follows whichever
        # thread uses it; a NetNS on a handle of this namespace stays in it)
        self._netns = NamespaceHandle()
        self._ipr = self._netns.netlink()
        self._neigh_ipr = self._netns.netlink()     # the watcher thread's own
        self._neighbours: NeighbourWatcher | None = None
        self._challenger: Challenger | None = None
        self.program: loader.Program | None = None
        try:
            for ifname in self.interfaces:             # fail before the long compile
                loader.check_attachable(self._ipr, ifname)
            self.consts = Constants({"PIN_DIR": pin_dir, "NR_CPUS_POSSIBLE": possible_cpus(),
                                     **(constants or {})})
            self._snat = SnatResolver(self._ipr, snat_addresses)
            sysctls.enable_forwarding(self.interfaces)
            sysctls.reserve_ports(int(self.consts["SNAT_PORT_MIN"]),
                                  int(self.consts["SNAT_PORT_MAX"]))
            self.program = loader.load(self.consts, list(build_flags))
            self.maps = self.program.maps
            self._recover()
            self._neighbours = NeighbourWatcher(self._neigh_ipr, self.maps["neigh_wanted"])
            self._challenger = Challenger()
            for ifname in self.interfaces:
                self.attached[ifname] = loader.attach(self._ipr, ifname, self.program.fd,
                                                      self.xdp_mode)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ recovery
    def _recover(self) -> None:
        """Rebuild slot assignments and health from the maps (empty on a first start)."""
        c = self.consts
        self._fe_slot: dict[FrontendKey, int] = {}
        self._fe_value: dict[FrontendKey, st.Frontend] = {}
        self._be_slot: dict[int, int] = {}
        self._be_value: dict[int, st.Backend] = {}
        self._be_spec: dict[int, BackendSpec] = {}
        self._srv_slot: dict[ServerKey, int] = {}
        self._srv_value: dict[ServerKey, st.Server] = {}
        self._down: set[ServerKey] = set()

        be_id_of_slot: dict[int, int] = {}
        for index, rec in self.maps["backends"].items():
            if rec.flags & int(c["BACKEND_F_IN_USE"]):
                i = index.value
                self._be_slot[rec.id] = i
                self._be_value[rec.id] = rec
                be_id_of_slot[i] = rec.id
        for index, rec in self.maps["servers"].items():
            i = index.value
            if not rec.flags & int(c["SERVER_F_IN_USE"]) or rec.backend not in be_id_of_slot:
                continue
            key = (be_id_of_slot[rec.backend], rec.addr.ip(rec.family), st.port_of(rec.port))
            self._srv_slot[key] = i
            self._srv_value[key] = rec
            if rec.flags & int(c["SERVER_F_DOWN"]):
                self._down.add(key)
        protos = {v: k for k, v in st.PROTO_NUMBERS.items()}
        for k, v in self.maps["frontends"].items():
            key = (k.vip.ip(k.family), st.port_of(k.port), protos.get(k.proto, "tcp"))
            self._fe_slot[key] = v.slot
            self._fe_value[key] = v

        self._fe_slots = Slots(int(c["MAX_FRONTENDS"]), "frontend", set(self._fe_slot.values()))
        self._be_slots = Slots(int(c["MAX_BACKENDS"]), "backend", set(self._be_slot.values()))
        self._srv_slots = Slots(int(c["MAX_SERVERS"]), "server", set(self._srv_slot.values()))
        self._sel_slots = Slots(int(c["MAX_SELECTORS"]), "selector",
                                {v.selector for v in self._be_value.values()})
        if self._fe_slot or self._be_slot:
            log.info("recovered %d frontends, %d backends, %d servers from pinned maps",
                     len(self._fe_slot), len(self._be_slot), len(self._srv_slot))

    # ------------------------------------------------------------------ apply
    def apply(self, frontends: Sequence[FrontendSpec]) -> None:
        """Make the maps describe `frontends` (tcp/udp ones; others are the kernel's),
        touching only what changed."""
        want = records.desired(list(frontends))
        with self._lock:
            self._check_open()
            want_servers = {records.server_key(be.id, s): (be, s)
                            for be in want.backends.values() for s in be.servers}
            for be_id in want.backends:
                if be_id not in self._be_slot:
                    self._be_slot[be_id] = self._be_slots.take()
            snat_cache: dict[str, str] = {}
            for key, (be, server) in want_servers.items():
                self._put_server(key, be, server, snat_cache)
            for be in want.backends.values():
                self._sync_backend(be)
            for key, rec in want.frontends.items():
                self._put_frontend(key, rec)
            for key in set(self._fe_slot) - set(want.frontends):
                self._drop_frontend(key)
            for be_id in set(self._be_slot) - set(want.backends):
                self._drop_backend(be_id)
            for key in set(self._srv_slot) - set(want_servers):
                self._drop_server(key)

    def _server_value(self, key: ServerKey, be: BackendSpec, server, snat: str,
                      keep_flags: int) -> st.Server:
        c = self.consts
        flags = int(c["SERVER_F_IN_USE"]) | (keep_flags & int(c["SERVER_F_USABLE"]))
        if key in self._down:
            flags |= int(c["SERVER_F_DOWN"])
        return st.Server(addr=st.Addr.of(key[1]), snat=st.Addr.of(snat),
                         port=st.be16(key[2]), family=st.family_of(key[1]), flags=flags,
                         weight=max(0, min(server.weight, 0xFFFF)),
                         backend=self._be_slot[be.id], id=server.id)

    def _put_server(self, key: ServerKey, be: BackendSpec, server,
                    snat_cache: dict[str, str]) -> None:
        address = key[1]
        if address not in snat_cache:
            snat_cache[address] = self._snat.source_for(address)
        old = self._srv_value.get(key)
        if key not in self._srv_slot:
            slot = self._srv_slots.take()
            self._srv_slot[key] = slot
            self.maps["server_traffic"].zero(ct.c_uint32(slot))
            hop = neighbours.next_hop(self._ipr, address)   # so its first SYN is not lost
            if hop:
                neighbours.resolve(self._ipr, *hop)
        value = self._server_value(key, be, server, snat_cache[address],
                                   old.flags if old is not None else 0)
        self._write_server(key, value)

    def _write_server(self, key: ServerKey, value: st.Server) -> None:
        old = self._srv_value.get(key)
        if old is None or bytes(old) != bytes(value):
            self.maps["servers"].set(ct.c_uint32(self._srv_slot[key]), value)
            self._srv_value[key] = value

    def _set_server_flag(self, key: ServerKey, flag: int, on: bool) -> None:
        value = st.Server.from_buffer_copy(self._srv_value[key])
        value.flags = (value.flags | flag) if on else (value.flags & ~flag)
        self._write_server(key, value)

    def _sync_backend(self, be: BackendSpec) -> None:
        """Backend record and selector; a changed selector is written to a spare slot
        and published by the backend record's one-word flip."""
        c = self.consts
        slots = {s.key: self._srv_slot[records.server_key(be.id, s)] for s in be.servers}
        content = build_selector(
            be, slots, lambda s: records.server_key(be.id, s) not in self._down,
            int(c["SELECTOR_SIZE"]), int(c["LEASTCONN_MAX_SCAN"]))
        self._be_spec[be.id] = be
        old = self._be_value.get(be.id)
        value = st.Backend(id=be.id, selector=old.selector if old is not None else 0,
                           sticky_timeout_s=records.sticky_timeout_s(be),
                           flags=int(c["BACKEND_F_IN_USE"]), digest=content.digest)
        if old is not None and old.digest == content.digest:
            if bytes(old) != bytes(value):
                self._write_backend(be.id, value)
            return
        usable = int(c["SERVER_F_USABLE"])
        key_of_slot = {self._srv_slot[records.server_key(be.id, s)]: records.server_key(be.id, s)
                       for s in be.servers}
        value.selector = self._sel_slots.take()
        self._write_selector(value.selector, content)
        for slot in content.usable:
            self._set_server_flag(key_of_slot[slot], usable, True)
        self._write_backend(be.id, value)                       # the flip
        for slot, key in key_of_slot.items():
            if slot not in content.usable:
                self._set_server_flag(key, usable, False)
        if old is not None:
            self._sel_slots.give_back(old.selector)

    def _write_selector(self, index: int, content: SelectorContent) -> None:
        sel = st.selector_type(self.consts)()
        sel.algorithm = int(content.algorithm)
        sel.len = len(content.servers)
        if content.servers:
            sel.servers[:len(content.servers)] = content.servers
        if content.weights:
            sel.weights[:len(content.weights)] = content.weights
        self.maps["selectors"].set(ct.c_uint32(index), sel)

    def _write_backend(self, be_id: int, value: st.Backend) -> None:
        self.maps["backends"].set(ct.c_uint32(self._be_slot[be_id]), value)
        self._be_value[be_id] = value

    def _put_frontend(self, key: FrontendKey, rec: records.FrontendRecord) -> None:
        if key not in self._fe_slot:
            slot = self._fe_slots.take()
            self._fe_slot[key] = slot
            self.maps["frontend_traffic"].zero(ct.c_uint32(slot))
        value = st.Frontend(id=rec.id, slot=self._fe_slot[key],
                            backend=self._be_slot[rec.backend_id],
                            idle_timeout_s=rec.idle_timeout_s,
                            conn_throttle=rec.conn_throttle)
        old = self._fe_value.get(key)
        if old is None or bytes(old) != bytes(value):
            self.maps["frontends"].set(self._frontend_map_key(key), value)
            self._fe_value[key] = value

    @staticmethod
    def _frontend_map_key(key: FrontendKey) -> st.FrontendKey:
        vip, port, proto = key
        return st.FrontendKey(vip=st.Addr.of(vip), port=st.be16(port),
                              proto=st.PROTO_NUMBERS[proto], family=st.family_of(vip))

    def _drop_frontend(self, key: FrontendKey) -> None:
        """New flows stop; established ones keep their conntrack entries until they end."""
        self.maps["frontends"].delete(self._frontend_map_key(key))
        self._fe_slots.give_back(self._fe_slot.pop(key))
        self._fe_value.pop(key, None)

    def _drop_backend(self, be_id: int) -> None:
        slot = self._be_slot.pop(be_id)
        old = self._be_value.pop(be_id, None)
        self.maps["backends"].set(ct.c_uint32(slot), st.Backend())
        if old is not None and old.flags:
            self._sel_slots.give_back(old.selector)
        self._be_slots.give_back(slot)
        self._be_spec.pop(be_id, None)

    def _drop_server(self, key: ServerKey) -> None:
        """Its established flows continue: conntrack entries carry the addresses."""
        slot = self._srv_slot.pop(key)
        self.maps["servers"].set(ct.c_uint32(slot), st.Server())
        self._srv_value.pop(key, None)
        self._down.discard(key)
        self._srv_slots.give_back(slot)

    # ------------------------------------------------------------------ health
    def _server(self, backend_id: int, server_key: str) -> ServerKey:
        key = (backend_id, *records.parse_server_key(server_key))
        if key not in self._srv_slot:
            raise KeyError(f"no server {server_key} in backend {backend_id}")
        return key

    def set_server_health(self, backend_id: int, server_key: str, up: bool) -> None:
        """Health as the checks see it; a down server leaves the selector (its
        established flows continue unless purge_server is called)."""
        with self._lock:
            self._check_open()
            key = self._server(backend_id, server_key)
            if (key not in self._down) == up:
                return
            (self._down.discard if up else self._down.add)(key)
            self._set_server_flag(key, int(self.consts["SERVER_F_DOWN"]), not up)
            be = self._be_spec.get(backend_id)
            if be is not None:
                self._sync_backend(be)

    def purge_server(self, backend_id: int, server_key: str) -> int:
        """Cut the server's flows (shutdown_sessions): UDP entries are deleted; TCP ones
        are marked so the program answers their next packet with a RST, and both ends
        are prompted to send one. Returns how many flows were cut."""
        with self._lock:
            self._check_open()
            slot = self._srv_slot[self._server(backend_id, server_key)]
            reset = int(self.consts["CT_F_RESET"])
            reply = int(self.consts["CT_F_REPLY"])
            closed = int(self.consts["CT_F_CLOSED"])
            marked, flows = [], 0
            for m, key, flow, nat in list(conntrack.entries(self.maps)):
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
            for key in marked:
                self._challenger.challenge(key)
            return flows

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict:
        """Per frontend id and per backend id / server key: packets and bytes both ways
        ("in" is client -> server), new and active connections; and the program's
        drop/pass counters by reason (see bpf/consts.h)."""
        with self._lock:
            self._check_open()
            active = self.maps["active_conns"].get(ct.c_uint32(0))
            out: dict = {"frontends": {}, "servers": {}, "reasons": {}}
            for key, slot in self._fe_slot.items():
                entry = self._traffic("frontend_traffic", slot)
                entry["active_connections"] = self._open(active.frontends[slot] if active else 0)
                out["frontends"][self._fe_value[key].id] = entry
            for (be_id, address, port), slot in self._srv_slot.items():
                entry = self._traffic("server_traffic", slot)
                entry["active_connections"] = self._open(active.servers[slot] if active else 0)
                out["servers"].setdefault(be_id, {})[_server_key_text(address, port)] = entry
            reasons = self.maps["reasons"]
            for code, name in REASONS.items():
                out["reasons"][name] = sum(v.value for v in reasons.get_percpu(ct.c_uint32(code)))
            out["drops"] = {k[5:]: v for k, v in out["reasons"].items() if k.startswith("drop_")}
            out["passes"] = {k[5:]: v for k, v in out["reasons"].items() if k.startswith("pass_")}
            return out

    def _open(self, halves: int) -> int:
        """Open connections from the program's count of open halves (a half-closed
        flow still counts)."""
        per_flow = int(self.consts["ACTIVE_PER_FLOW"])
        return max(0, -(-int(halves) // per_flow))

    def _traffic(self, map_name: str, slot: int) -> dict:
        per_cpu = self.maps[map_name].get_percpu(ct.c_uint32(slot))
        total = {name: sum(getattr(v, name) for v in per_cpu) for name, _ in st.Traffic._fields_}
        total["new_connections"] = total.pop("new_flows")
        return total

    def recount_active_connections(self) -> None:
        """Correct the program's open-connection counts (which miss flows the LRU
        evicted or that idled out unseen) by counting live conntrack entries. A flow
        opening or closing during the count may be off by one until the next recount."""
        with self._lock:
            self._check_open()
            c = self.consts
            now = clock.jiffies32()
            hz = int(c["JIFFIES_PER_S"])
            counts = st.active_conns_type(c)()
            skip = int(c["CT_F_REPLY"]) | int(c["CT_F_CLOSED"])
            per_flow = int(c["ACTIVE_PER_FLOW"])
            for _, _, _, nat in conntrack.entries(self.maps):
                idle = (now - nat.last_seen) & 0xFFFFFFFF
                if nat.flags & skip or idle > nat.idle_timeout_s * hz:
                    continue
                halves = per_flow - bin(nat.fins & 3).count("1")
                counts.servers[nat.server] += halves
                counts.frontends[nat.frontend] += halves
            self.maps["active_conns"].set(ct.c_uint32(0), counts)

    # ------------------------------------------------------------------ lifecycle
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
                        loader.detach(self._ipr, ifname)
                    except Exception as e:  # keep closing the rest
                        log.warning("detaching XDP from %s failed: %s", ifname, e)
                self.attached.clear()
            if self._neighbours is not None:
                self._neighbours.stop()
            self._neigh_ipr.close()
            if self._challenger is not None:
                self._challenger.close()
            if self.program is not None:
                self.program.close()
            self._ipr.close()
            self._netns.close()

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

