"""The maps as the control plane describes them: which frontend, backend and server owns
which slot, what each record holds, and the diff that brings them to a new set of
specs. Recovered from the pinned maps on start, so a restarted daemon keeps the slots
(and with them the flows and counters) of the previous one.

Order of writes in an apply: servers, then backends (selector built in a spare slot,
then the one-word flip), then frontends; removals last, once nothing points at them."""
import ctypes as ct
import logging

from lbfast.spec import BackendSpec, ServerSpec
from lbfast.xdp import neighbours, records
from lbfast.xdp import structs as st
from lbfast.xdp.bpfmap import BpfMap
from lbfast.xdp.consts import Constants
from lbfast.xdp.records import Desired, FrontendKey, ServerKey
from lbfast.xdp.rtnetlink import Rtnetlink
from lbfast.xdp.selectors import SelectorContent, build_selector
from lbfast.xdp.slots import Slots, SlotsExhausted
from lbfast.xdp.snat import SnatResolver

log = logging.getLogger("lbfast.xdp")


def server_key_text(key: ServerKey) -> str:
    """The ServerSpec.key form of a server key."""
    _, address, port = key
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def frontend_map_key(key: FrontendKey) -> st.FrontendKey:
    vip, port, proto = key
    return st.FrontendKey(vip=st.Addr.of(vip), port=st.be16(port),
                          proto=st.PROTO_NUMBERS[proto], family=st.family_of(vip))


class MapSync:
    def __init__(self, maps: dict[str, BpfMap], consts: Constants, snat: SnatResolver,
                 rtnl: Rtnetlink) -> None:
        self.maps = maps
        self.consts = consts
        self._snat = snat
        self._rtnl = rtnl
        self.fe_slot: dict[FrontendKey, int] = {}
        self.fe_value: dict[FrontendKey, st.Frontend] = {}
        self.be_slot: dict[int, int] = {}
        self.be_value: dict[int, st.Backend] = {}
        self.be_spec: dict[int, BackendSpec] = {}    # as last applied (none after restart)
        self.srv_slot: dict[ServerKey, int] = {}
        self.srv_value: dict[ServerKey, ct.Structure] = {}
        self._server_type = st.server_type(consts)
        self.down: set[ServerKey] = set()
        self._recover()

    def _flag(self, name: str) -> int:
        return int(self.consts[name])

    # ------------------------------------------------------------------ recovery
    def _recover(self) -> None:
        """Slot assignments and health as the maps hold them (empty on a first start)."""
        c = self.consts
        be_id_of_slot: dict[int, int] = {}
        for index, rec in self.maps["backends"].items():
            if rec.flags & self._flag("BACKEND_F_IN_USE"):
                self.be_slot[rec.id] = index.value
                self.be_value[rec.id] = rec
                be_id_of_slot[index.value] = rec.id
        for index, rec in self.maps["servers"].items():
            if not rec.flags & self._flag("SERVER_F_IN_USE") or rec.backend not in be_id_of_slot:
                continue
            key = (be_id_of_slot[rec.backend], rec.addr.ip(rec.family), st.port_of(rec.port))
            self.srv_slot[key] = index.value
            self.srv_value[key] = rec
            if rec.flags & self._flag("SERVER_F_DOWN"):
                self.down.add(key)
        protos = {v: k for k, v in st.PROTO_NUMBERS.items()}
        for k, v in self.maps["frontends"].items():
            key = (k.vip.ip(k.family), st.port_of(k.port), protos.get(k.proto, "tcp"))
            self.fe_slot[key] = v.slot
            self.fe_value[key] = v

        self._fe_slots = Slots(int(c["MAX_FRONTENDS"]), "frontend", set(self.fe_slot.values()))
        self._be_slots = Slots(int(c["MAX_BACKENDS"]), "backend", set(self.be_slot.values()))
        self._srv_slots = Slots(int(c["MAX_SERVERS"]), "server", set(self.srv_slot.values()))
        self._sel_slots = Slots(int(c["MAX_SELECTORS"]), "selector",
                                {v.selector for v in self.be_value.values()})
        if self.fe_slot or self.be_slot:
            log.info("recovered %d frontends, %d backends, %d servers from pinned maps",
                     len(self.fe_slot), len(self.be_slot), len(self.srv_slot))

    # ------------------------------------------------------------------ apply
    def apply(self, want: Desired) -> None:
        want_servers = {records.server_key(be.id, s): (be, s)
                        for be in want.backends.values() for s in be.servers}
        # what can fail comes first, so a refused apply leaves the maps as they were
        most = int(self.consts["SNAT_PER_SERVER"])
        snat = {address: self._snat.sources_for(address, most)
                for address in {key[1] for key in want_servers}}
        self._check_room(want, want_servers)
        for be_id in want.backends:
            if be_id not in self.be_slot:
                self.be_slot[be_id] = self._be_slots.take()
        for key, (be, server) in want_servers.items():
            self._put_server(key, be, server, snat[key[1]])
        for be in want.backends.values():
            self.sync_backend(be)
        for key, rec in want.frontends.items():
            self._put_frontend(key, rec)
        for key in set(self.fe_slot) - set(want.frontends):
            self._drop_frontend(key)
        for be_id in set(self.be_slot) - set(want.backends):
            self._drop_backend(be_id)
        for key in set(self.srv_slot) - set(want_servers):
            self._drop_server(key)

    def _check_room(self, want: Desired, want_servers: dict) -> None:
        """New objects must fit in the free slots (those an apply frees come back only
        after it, once nothing points at them)."""
        for what, slots, have, wanted in (
                ("frontend", self._fe_slots, self.fe_slot, want.frontends),
                ("backend", self._be_slots, self.be_slot, want.backends),
                ("server", self._srv_slots, self.srv_slot, want_servers)):
            new = len(set(wanted) - set(have))
            if new > slots.free:
                raise SlotsExhausted(
                    f"{new} new {what}s, {slots.free} free {what} slots: raise "
                    f"MAX_{what.upper()}S (bpf/consts.h, or the dataplane's constants)")

    # ------------------------------------------------------------------ servers
    def _put_server(self, key: ServerKey, be: BackendSpec, server: ServerSpec,
                    snat: list[str]) -> None:
        old = self.srv_value.get(key)
        if key not in self.srv_slot:
            slot = self._srv_slots.take()
            self.srv_slot[key] = slot
            self.maps["server_traffic"].zero(ct.c_uint32(slot))
            neighbours.resolve_route_to(self._rtnl, key[1])   # its first SYN goes straight out
        flags = self._flag("SERVER_F_IN_USE")
        if old is not None:
            flags |= old.flags & self._flag("SERVER_F_USABLE")
        if key in self.down:
            flags |= self._flag("SERVER_F_DOWN")
        value = self._server_type(
            addr=st.Addr.of(key[1]), port=st.be16(key[2]), family=st.family_of(key[1]),
            flags=flags, weight=max(0, min(server.weight, 0xFFFF)),
            backend=self.be_slot[be.id], id=server.id, snat_count=len(snat))
        for i, address in enumerate(snat):
            value.snat[i] = st.Addr.of(address)
        self._write_server(key, value)

    def _write_server(self, key: ServerKey, value: ct.Structure) -> None:
        old = self.srv_value.get(key)
        if old is None or bytes(old) != bytes(value):
            self.maps["servers"].set(ct.c_uint32(self.srv_slot[key]), value)
            self.srv_value[key] = value

    def set_server_flag(self, key: ServerKey, flag: int, on: bool) -> None:
        value = self._server_type.from_buffer_copy(self.srv_value[key])
        value.flags = (value.flags | flag) if on else (value.flags & ~flag)
        self._write_server(key, value)

    def _drop_server(self, key: ServerKey) -> None:
        """Its established flows continue: conntrack entries carry the addresses."""
        slot = self.srv_slot.pop(key)
        self.maps["servers"].set(ct.c_uint32(slot), self._server_type())
        self.srv_value.pop(key, None)
        self.down.discard(key)
        self._srv_slots.give_back(slot)

    # ------------------------------------------------------------------ health
    def set_health(self, key: ServerKey, up: bool) -> None:
        if (key not in self.down) == up:
            return
        (self.down.discard if up else self.down.add)(key)
        self.set_server_flag(key, self._flag("SERVER_F_DOWN"), not up)
        be = self.be_spec.get(key[0])
        if be is not None:
            self.sync_backend(be)

    # ------------------------------------------------------------------ backends
    def sync_backend(self, be: BackendSpec) -> None:
        """Backend record and selector; a changed selector is written to a spare slot
        and published by the backend record's one-word flip."""
        c = self.consts
        keys = {s.key: records.server_key(be.id, s) for s in be.servers}
        content = build_selector(
            be, {k: self.srv_slot[key] for k, key in keys.items()},
            lambda s: keys[s.key] not in self.down,
            int(c["SELECTOR_SIZE"]), int(c["LEASTCONN_MAX_SCAN"]))
        self.be_spec[be.id] = be
        old = self.be_value.get(be.id)
        value = st.Backend(id=be.id, selector=old.selector if old is not None else 0,
                           sticky_timeout_s=records.sticky_timeout_s(be),
                           flags=self._flag("BACKEND_F_IN_USE"), digest=content.digest)
        if old is not None and old.digest == content.digest:
            if bytes(old) != bytes(value):
                self._write_backend(be.id, value)
            return
        usable = self._flag("SERVER_F_USABLE")
        key_of_slot = {self.srv_slot[key]: key for key in keys.values()}
        value.selector = self._sel_slots.take()
        self._write_selector(value.selector, content)
        for slot in content.usable:
            self.set_server_flag(key_of_slot[slot], usable, True)
        self._write_backend(be.id, value)                       # the flip
        for slot, key in key_of_slot.items():
            if slot not in content.usable:
                self.set_server_flag(key, usable, False)
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
        self.maps["backends"].set(ct.c_uint32(self.be_slot[be_id]), value)
        self.be_value[be_id] = value

    def _drop_backend(self, be_id: int) -> None:
        slot = self.be_slot.pop(be_id)
        old = self.be_value.pop(be_id, None)
        self.maps["backends"].set(ct.c_uint32(slot), st.Backend())
        if old is not None and old.flags:
            self._sel_slots.give_back(old.selector)
        self._be_slots.give_back(slot)
        self.be_spec.pop(be_id, None)

    # ------------------------------------------------------------------ frontends
    def _put_frontend(self, key: FrontendKey, rec: records.FrontendRecord) -> None:
        if key not in self.fe_slot:
            slot = self._fe_slots.take()
            self.fe_slot[key] = slot
            self.maps["frontend_traffic"].zero(ct.c_uint32(slot))
        value = st.Frontend(id=rec.id, slot=self.fe_slot[key],
                            backend=self.be_slot[rec.backend_id],
                            idle_timeout_s=rec.idle_timeout_s, conn_throttle=rec.conn_throttle)
        old = self.fe_value.get(key)
        if old is None or bytes(old) != bytes(value):
            self.maps["frontends"].set(frontend_map_key(key), value)
            self.fe_value[key] = value

    def _drop_frontend(self, key: FrontendKey) -> None:
        """New flows stop; established ones keep their conntrack entries until they end."""
        self.maps["frontends"].delete(frontend_map_key(key))
        self._fe_slots.give_back(self.fe_slot.pop(key))
        self.fe_value.pop(key, None)
