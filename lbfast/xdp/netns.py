"""The network namespace a dataplane was created in, kept as an open handle so that its
netlink sockets live there whichever thread later uses them (tests drive a dataplane
of a testbed's LB namespace from their own threads)."""
import os

from pyroute2 import NetNS


class NamespaceHandle:
    def __init__(self) -> None:
        self.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    @property
    def path(self) -> str:
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def netlink(self) -> NetNS:
        """An rtnetlink socket (pyroute2's IPRoute API) in this namespace."""
        return NetNS(self.path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
