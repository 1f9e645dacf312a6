"""The HA manager the daemon drives: it runs keepalived (mode vrrp) or BIRD (mode bgp)
for the daemon's VIPs, tracks this host's role, logs and counts failovers, and answers
the track script's `ha-check`.

What it reads from the daemon: `socket_path` (the runtime dir sits beside it and the
track script asks this socket), `stopping`, and the userspace data plane `l4` (its
listeners and pools tell whether a VIP can be served)."""
import asyncio
import collections
import errno
import logging
import os
import socket
import time
import uuid as uuidlib
from datetime import datetime, timezone
from pathlib import Path

from control.ha import bird, keepalived
from control.model import ID_NAMESPACE, Config, HaSection
from lbfast.enums import HaMode, HaRole, ServerMode

log = logging.getLogger("lbfast.ha")

POLL_S = 0.5                 # how often BGP announcements follow server health
NEIGHBOR_POLL_TICKS = 4      # session states for status: every 2 s
IFA_F_NODAD = 0x02
KEEPALIVED_ROLES = {"MASTER": HaRole.MASTER, "BACKUP": HaRole.BACKUP, "FAULT": HaRole.FAULT,
                    "STOP": HaRole.STOPPED, "DELETED": HaRole.STOPPED}
SERVING = (HaRole.MASTER, HaRole.ACTIVE)
USABLE_MODES = (ServerMode.ACCEPT, ServerMode.BACKUP)
# The Scaleway view's instance status for each role
INSTANCE_STATUS = {HaRole.STANDALONE: "ready", HaRole.MASTER: "ready", HaRole.BACKUP: "ready",
                   HaRole.ACTIVE: "ready", HaRole.WITHDRAWN: "ready", HaRole.STARTING: "pending",
                   HaRole.FAULT: "error", HaRole.STOPPED: "stopped"}


def instance_id(address: str | None) -> str:
    return str(uuidlib.uuid5(ID_NAMESPACE, f"instance:{address or socket.gethostname()}"))


def _ipr():
    # pyroute2's synchronous IPRoute runs its own event loop: these helpers are called in a
    # worker thread (asyncio.to_thread), never on the daemon's loop.
    from pyroute2 import IPRoute
    return IPRoute()


def interface_ipv4(ifname: str, exclude: set[str]) -> str | None:
    with _ipr() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET, label=ifname):
            addr = msg.get_attr("IFA_ADDRESS")
            if addr not in exclude:
                return addr
    return None


def source_towards(address: str) -> str | None:
    with _ipr() as ipr:
        try:
            routes = ipr.route("get", dst=address)
        except Exception:       # no route: netlink error
            return None
    return routes[0].get_attr("RTA_PREFSRC") if routes else None


def add_local(ifname: str, addresses: list[str]) -> None:
    from pyroute2.netlink.exceptions import NetlinkError
    with _ipr() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        for a in addresses:
            v6 = ":" in a
            try:
                ipr.addr("add", index=index, address=a, prefixlen=128 if v6 else 32,
                         **({"flags": IFA_F_NODAD} if v6 else {}))
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise


def remove_local(ifname: str, addresses: list[str]) -> None:
    from pyroute2.netlink.exceptions import NetlinkError
    with _ipr() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        for a in addresses:
            try:
                if found:
                    ipr.addr("del", index=found[0], address=a, prefixlen=128 if ":" in a else 32)
            except NetlinkError as e:
                if e.code not in (errno.EADDRNOTAVAIL, errno.ENOENT):
                    raise


def frontend_usability(daemon) -> dict[int, list[bool]]:
    """Load balancer id -> for each of its frontends the data planes carry, whether one of
    its servers is usable (accept, or backup, and not marked down)."""
    out: dict[int, list[bool]] = collections.defaultdict(list)
    for state in daemon.l4.frontends.values():
        out[state.spec.lb_id].append(state.pool is not None and bool(state.pool.usable()))
    l7 = getattr(daemon, "l7", None)
    for f in getattr(l7, "frontends", {}).values():
        health = getattr(l7, "health", {})
        out[f.lb_id].append(any(s.mode in USABLE_MODES and health.get((f.backend.id, s.key), True)
                                for s in f.backend.servers))
    return out


class HaManager:
    def __init__(self, daemon):
        self.daemon = daemon
        self.ha = HaSection()
        self.config: Config | None = None
        self.vips: list[str] = []
        self.rundir = Path(os.path.abspath(daemon.socket_path)).with_suffix(".ha")
        self.keepalived: keepalived.Keepalived | None = None
        self.bird: bird.Bird | None = None
        self.role = HaRole.STANDALONE
        self.role_since = time.time()
        self.local_address: str | None = None
        self.announced: set[str] = set()
        self.withdrawn: dict[str, str] = {}         # VIP -> why it is not announced
        self.neighbors: dict[str, dict] = {}
        self.local_vips: tuple[str, list[str]] | None = None   # bgp: (interface, VIPs we put there)
        self.events: collections.deque[dict] = collections.deque(maxlen=50)
        self.counts = collections.Counter()
        self.last_error = ""
        self._watch: asyncio.Task | None = None

    # -- driven by the daemon ---------------------------------------------------------
    async def apply(self, config: Config) -> None:
        """Follow a new config: start, reload or stop the engine. Engine trouble is logged
        and shown in status, never raised: the data plane has taken the config already."""
        ha = config.ha
        if ha.mode != self.ha.mode:
            await self._stop_engine()
        self.ha, self.config = ha, config
        self.vips = list(dict.fromkeys(lb.vip for lb in config.lbs if lb.vip))
        try:
            if ha.mode == HaMode.VRRP:
                await self._apply_vrrp()
            elif ha.mode == HaMode.BGP:
                await self._apply_bgp()
            else:
                self._set_role(HaRole.STANDALONE, "no HA configured")
            self.last_error = ""
        except Exception as e:      # OSError, netlink errors, a missing interface
            self.last_error = f"{ha.mode}: {e}"
            log.error("HA %s could not be applied: %s", ha.mode, e)

    async def stop(self) -> None:
        """Daemon stopping: give the VIPs up first (keepalived hands them to a backup, BIRD
        withdraws them), while the listeners still serve."""
        await self._stop_engine()

    def check(self) -> tuple[bool, str]:
        """Whether this host can serve: the track script's question, and BGP's precondition."""
        if self.daemon.stopping.is_set():
            return False, "daemon stopping"
        for state in self.daemon.l4.frontends.values():
            if not self.daemon.l4.listening(state):
                return False, f"listener {state.spec.address}:{state.spec.port} is not serving"
        return True, "serving"

    # -- VRRP ---------------------------------------------------------------------------
    async def _apply_vrrp(self) -> None:
        ha = self.ha
        if not self.vips:               # keepalived refuses an instance without addresses
            await self._stop_keepalived()
            self._set_role(HaRole.STOPPED, "no VIP to hold")
            return
        self.local_address = ha.source_address or await asyncio.to_thread(
            interface_ipv4, ha.interface, set(self.vips))
        if self.keepalived is None:
            self.keepalived = keepalived.Keepalived(self.rundir, self._keepalived_state,
                                                    lambda: self._set_role(HaRole.STOPPED, "keepalived exited"))
            self._set_role(HaRole.STARTING, "keepalived starting")
        text = keepalived.render(ha, self.vips, self.keepalived.paths,
                                 keepalived.probe_command(self.daemon.socket_path))
        await self.keepalived.apply(text)

    def _keepalived_state(self, state: str, priority: int | None) -> None:
        self._set_role(KEEPALIVED_ROLES[state], f"keepalived reports {state} (priority {priority})")

    # -- BGP ----------------------------------------------------------------------------
    async def _apply_bgp(self) -> None:
        bgp = self.ha.bgp
        self.local_address = bgp.router_id or await asyncio.to_thread(source_towards, bgp.neighbors[0].address)
        if self.local_address is None or ":" in self.local_address:
            raise OSError(errno.EADDRNOTAVAIL, "no IPv4 router id: set ha.bgp.router_id")
        # The userspace data plane serves only addresses that are local.
        ifname = self.ha.interface or "lo"
        if self.local_vips is not None and self.local_vips[0] != ifname:
            await asyncio.to_thread(remove_local, *self.local_vips)
            self.local_vips = None
        gone = set(self.local_vips[1]) - set(self.vips) if self.local_vips else set()
        if gone:
            await asyncio.to_thread(remove_local, ifname, sorted(gone))
        await asyncio.to_thread(add_local, ifname, self.vips)
        self.local_vips = (ifname, list(self.vips))
        if self.bird is None:
            self.bird = bird.Bird(self.rundir, lambda: log.error("BIRD exited: its routes are withdrawn"))
        await self._announce()
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._watch_bgp())

    def vip_reasons(self) -> dict[str, str | None]:
        """For each VIP: None to announce it, else why not. A VIP is announced while the data
        plane serves and one of its frontends has a usable server; frontends that neither the
        userspace L4 proxy nor the L7 proxy carry count as usable."""
        ok, why = self.check()
        usable = frontend_usability(self.daemon)
        reasons: dict[str, str | None] = {}
        for lb in self.config.lbs:
            known = usable.get(lb.id, [])
            if not ok:
                reason = f"data plane: {why}"
            elif not lb.frontends:
                reason = "no frontend"
            elif any(known) or len(lb.frontends) > len(known):
                reason = None
            else:
                reason = "no usable server"
            if reasons.get(lb.vip, "") is not None:     # another LB on the same VIP may serve it
                reasons[lb.vip] = reason
        return reasons

    async def _announce(self) -> None:
        reasons = self.vip_reasons()
        want = {vip for vip, reason in reasons.items() if reason is None}
        for vip in sorted(want - self.announced):
            self.counts["announcements"] += 1
            log.warning("BGP: announcing %s", vip)
        for vip in sorted(self.announced - want):
            self.counts["withdrawals"] += 1
            log.warning("BGP: withdrawing %s (%s)", vip, reasons.get(vip) or "no longer configured")
        self.announced = want
        self.withdrawn = {vip: reason for vip, reason in reasons.items() if reason is not None}
        await self.bird.apply(bird.render(self.ha, self.local_address, want))
        if want:
            self._set_role(HaRole.ACTIVE, f"announcing {len(want)} VIP(s)")
        else:
            self._set_role(HaRole.WITHDRAWN, "; ".join(f"{v}: {r}" for v, r in self.withdrawn.items())
                           or "no VIP")

    async def _watch_bgp(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self._announce()
                if tick % NEIGHBOR_POLL_TICKS == 0:
                    self.neighbors = await self.bird.protocols()
            except Exception:       # keep following health; the next tick retries
                log.exception("BGP announcement update failed")
            tick += 1

    # -- both ---------------------------------------------------------------------------
    async def _stop_engine(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            try:
                await self._watch
            except asyncio.CancelledError:
                pass
            self._watch = None
        await self._stop_keepalived()
        if self.bird is not None:
            self.counts["engine_restarts"] += self.bird.child.restarts
            if self.announced:
                log.warning("BGP: withdrawing %s (daemon stopping or HA mode changed)",
                            " ".join(sorted(self.announced)))
                self.counts["withdrawals"] += len(self.announced)
            await self.bird.stop()
            self.bird = None
            self.announced = set()
            self.neighbors = {}
        if self.local_vips is not None:
            try:
                await asyncio.to_thread(remove_local, *self.local_vips)
            except Exception as e:      # OSError, netlink errors
                log.error("could not remove the VIPs from %s: %s", self.local_vips[0], e)
            self.local_vips = None
        if self.ha.mode != HaMode.NONE:
            self._set_role(HaRole.STOPPED, "HA engine stopped")

    async def _stop_keepalived(self) -> None:
        if self.keepalived is not None:
            self.counts["engine_restarts"] += self.keepalived.child.restarts
            await self.keepalived.stop()
            self.keepalived = None

    def _set_role(self, role: HaRole, reason: str) -> None:
        old = self.role
        if role == old:
            return
        self.role, self.role_since = role, time.time()
        self.counts["role_changes"] += 1
        failover = (old in SERVING) != (role in SERVING)
        if failover:
            self.counts["failovers"] += 1
        (log.warning if failover else log.info)("HA role %s -> %s: %s", old, role, reason)
        self.events.append({"at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                            "from": str(old), "to": str(role), "reason": reason})

    # -- views ----------------------------------------------------------------------------
    def instances(self) -> list[dict]:
        """Every LB host of this HA group as the API's instances: this one, then the VRRP
        peers. A backup hears only the master, and a master hears nobody, so a peer's role
        is known only in a pair."""
        ok, _ = self.check()
        local_status = INSTANCE_STATUS[self.role] if ok else "error"
        out = [{"id": instance_id(self.local_address), "address": self.local_address,
                "role": str(self.role), "status": local_status, "local": True}]
        if self.ha.mode == HaMode.VRRP:
            peers = [p for p in self.ha.peers if p != self.local_address]
            for p in peers:
                role, status = "unknown", "unknown"
                if self.role == HaRole.MASTER:
                    role = str(HaRole.BACKUP)
                elif self.role == HaRole.BACKUP and len(peers) == 1:
                    role, status = str(HaRole.MASTER), "ready"
                out.append({"id": instance_id(p), "address": p, "role": role, "status": status,
                            "local": False})
        return out

    def status(self) -> dict:
        engine = self.keepalived or self.bird
        out = {"mode": str(self.ha.mode), "role": str(self.role),
               "since": datetime.fromtimestamp(self.role_since, timezone.utc).isoformat(timespec="seconds"),
               "healthy": self.check()[0], "engine": engine.status() if engine else None,
               "failovers": self.counts["failovers"], "last_error": self.last_error,
               "vips": self.vips, "instances": self.instances(), "events": list(self.events)[-10:],
               "counters": self.counters()}
        if self.ha.mode == HaMode.VRRP:
            out["vrrp"] = {"interface": self.ha.interface, "virtual_router_id": self.ha.virtual_router_id,
                           "priority": self.ha.priority, "peers": self.ha.peers, "preempt": self.ha.preempt}
        elif self.ha.mode == HaMode.BGP:
            protos = self.neighbors
            out["bgp"] = {
                "router_id": self.local_address, "local_as": self.ha.bgp.local_as,
                "announced": sorted(self.announced), "withdrawn": self.withdrawn,
                "neighbors": [{"address": n.address, "as": n.as_,
                               **protos.get(f"lbfast_n{i}", {"state": "unknown", "info": ""})}
                              for i, n in enumerate(self.ha.bgp.neighbors)]}
        return out

    def counters(self) -> dict[str, int]:
        """For /metrics: counters (`_total`) since the daemon started, and `lbfast_ha_serving`,
        1 while this host serves its VIPs (VRRP master, BGP announcing, or no HA)."""
        engine = self.keepalived or self.bird
        return {"lbfast_ha_failovers_total": self.counts["failovers"],
                "lbfast_ha_role_changes_total": self.counts["role_changes"],
                "lbfast_ha_engine_restarts_total": self.counts["engine_restarts"]
                + (engine.child.restarts if engine else 0),
                "lbfast_ha_bgp_announcements_total": self.counts["announcements"],
                "lbfast_ha_bgp_withdrawals_total": self.counts["withdrawals"],
                "lbfast_ha_serving": int(self.role in SERVING or self.role == HaRole.STANDALONE)}
