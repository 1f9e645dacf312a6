"""Neighbour resolution for the XDP path, which cannot ask for ARP/ND itself. Servers'
next hops are resolved ahead (on apply); any other hop the program met unresolved
(a client's, a new gateway's) it notes in `neigh_wanted`, which a small thread empties
every POLL_S by asking the kernel to resolve each (NTF_USE, as a sent packet would)."""
import logging
import socket
import threading

from pyroute2 import IPRoute

from lbfast.xdp.bpfmap import BpfMap

log = logging.getLogger("lbfast.xdp")

NTF_USE = 0x01
POLL_S = 0.05


def resolve(ipr: IPRoute, address: str, ifindex: int) -> None:
    """Have the kernel resolve `address` on `ifindex` unless it already has."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        ipr.neigh("set", dst=address, ifindex=ifindex, family=family, flags=NTF_USE)
    except Exception as e:   # NetlinkError: device gone, address unusable
        log.debug("neighbour %s on ifindex %d: %s", address, ifindex, e)


def next_hop(ipr: IPRoute, address: str) -> tuple[str, int] | None:
    """(gateway or address itself, egress ifindex) of the route to address."""
    try:
        msg = ipr.route("get", dst=address)[0]
    except Exception:
        return None
    return msg.get_attr("RTA_GATEWAY") or address, msg.get_attr("RTA_OIF")


class NeighbourWatcher:
    """Resolves what the program asks for in `neigh_wanted`, until stopped."""

    def __init__(self, ipr: IPRoute, wanted: BpfMap):
        self._ipr = ipr
        self._wanted = wanted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lbfast-xdp-neigh",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.drain()
            except OSError as e:     # map closed under us at shutdown
                log.debug("neighbour watcher: %s", e)
                return

    def drain(self) -> int:
        keys = list(self._wanted.keys())
        for key in keys:
            resolve(self._ipr, key.addr.ip(key.family), key.ifindex)
            self._wanted.delete(key)
        return len(keys)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

