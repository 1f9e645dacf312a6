"""Neighbour resolution for the XDP path, which cannot ask for ARP/ND itself. A packet
whose next hop is unresolved goes to the kernel, already rewritten, and the kernel
forwards it and resolves the hop as for its own traffic (next_hop.h). The program also
notes the hop in `neigh_wanted`, which a thread here empties every POLL_S by having the
kernel resolve each (NTF_USE), so the hop gets resolved even where the kernel would not
forward. Servers' next hops are resolved ahead, on apply.

The thread owns its netlink socket: one that fails is replaced (and logged); when no new
one can be had, or anything else stops the thread, it says why through `on_death`."""
import logging
import threading
from typing import Callable

from lbfast.xdp.bpfmap import BpfMap
from lbfast.xdp.rtnetlink import NetlinkError, Rtnetlink

log = logging.getLogger("lbfast.xdp")

POLL_S = 0.05
REOPEN_DELAYS_S = (0.05, 0.2, 1.0)      # between attempts at a new socket, then give up


def resolve(rtnl: Rtnetlink, address: str, ifindex: int) -> None:
    """Have the kernel resolve `address` on `ifindex` unless it already has. A refusal
    (device gone, address unusable) is not an error of ours; a broken socket is."""
    try:
        rtnl.resolve_neighbour(address, ifindex)
    except NetlinkError as e:
        log.debug("neighbour %s on ifindex %d: %s", address, ifindex, e)


def resolve_route_to(rtnl: Rtnetlink, address: str) -> None:
    """Resolve the next hop (gateway, or address itself on-link) of the route to address."""
    try:
        route = rtnl.route(address)
    except NetlinkError:
        return
    resolve(rtnl, route.next_hop, route.oif)


class NeighbourWatcher:
    """Resolves what the program asks for in `neigh_wanted`, until stopped. Runs in the
    network namespace of the thread that creates it (new sockets are opened there)."""

    def __init__(self, wanted: BpfMap, on_death: Callable[[str], None]):
        self._wanted = wanted
        self._on_death = on_death
        self._rtnl = Rtnetlink()
        self._stop = threading.Event()
        self.resolved = 0                # requests made
        self.socket_failures = 0         # sockets replaced
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="lbfast-xdp-neigh",
                                        daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def netlink_fd(self) -> int:
        """The socket the thread asks the kernel on (tests break it to see the recovery)."""
        return self._rtnl.fileno()

    def _run(self) -> None:
        try:
            while not self._stop.wait(POLL_S):
                self.drain()
        except BaseException as e:
            if self._stop.is_set():          # maps or socket closed under us at shutdown
                return
            log.error("neighbour watcher stopped", exc_info=True)
            self._on_death(f"the XDP neighbour watcher stopped: {e}")

    def drain(self) -> int:
        keys = list(self._wanted.keys())
        for key in keys:
            self._resolve(key.addr.ip(key.family), key.ifindex)
            self._wanted.delete(key)
        return len(keys)

    def _resolve(self, address: str, ifindex: int) -> None:
        try:
            resolve(self._rtnl, address, ifindex)
        except OSError as e:                 # the socket, not the kernel's answer
            self.socket_failures += 1
            self.last_error = f"netlink socket failed: {e}"
            log.error("neighbour watcher: %s; opening a new one", self.last_error)
            self._reopen()
            resolve(self._rtnl, address, ifindex)
        self.resolved += 1

    def _reopen(self) -> None:
        old = self._rtnl
        for delay in (0.0, *REOPEN_DELAYS_S):
            if delay and self._stop.wait(delay):
                break
            try:
                self._rtnl = Rtnetlink()
            except OSError as e:
                self.last_error = f"cannot open a netlink socket: {e}"
                log.error("neighbour watcher: %s", self.last_error)
                continue
            _close_quietly(old)
            return
        raise OSError(f"no netlink socket for neighbour resolution: {self.last_error}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        _close_quietly(self._rtnl)


def _close_quietly(rtnl: Rtnetlink) -> None:
    try:
        rtnl.close()
    except OSError:
        pass
