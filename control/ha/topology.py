"""Network-namespace topologies for the HA tests: two (or more) LB hosts in front of shared
backends, with either a LAN (VRRP) or a router (BGP/ECMP) between them and the client.

``vrrp``::

    client  10.210.0.100 ─┐                        ┌─ backend i  10.211.0.{10+i}
    lb i    10.210.0.{1+i} ┤ front bridge  back bridge ├─ lb i    10.211.0.{1+i}
                          (VIP 10.210.0.10, moved by keepalived between the LBs' eth0)

``bgp``::

    client 10.212.0.2 (+ 10.212.0.{10..} sources) ── router 10.212.0.1
    router 10.213.{i}.1 ── lb i 10.213.{i}.2  (one link per LB; lb default route via it)
    back bridge as above; VIP 10.214.0.1, announced by each LB over BGP, ECMP in the router

Both bridges live in a ``switch`` namespace. Every host's interfaces are ``eth0`` (front)
and ``eth1`` (back); the router names its links ``client`` and ``lb<i>``. Namespaces are
named like :class:`control.testbed.Testbed`'s (``lbf<pid>x<n>-*``), so the same stale
cleanup covers them, and :meth:`close` kills whatever runs inside and deletes them.
Only these namespaces carry traffic.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

from control import testbed
from control.testbed import HTTP_PORT, Host

VRRP_VIP = "10.210.0.10"
BGP_VIP = "10.214.0.1"


class HaTestbed:
    __test__ = False

    def __init__(self, kind: str = "vrrp", lbs: int = 2, backends: int = 2, sources: int = 0):
        if kind not in ("vrrp", "bgp"):
            raise ValueError("kind is vrrp or bgp")
        with testbed.Testbed._counter_lock:
            testbed.Testbed._counter += 1
            n = testbed.Testbed._counter
        self.kind = kind
        self.prefix = f"lbf{os.getpid()}x{n}"
        self.workdir = tempfile.mkdtemp(prefix=f"{self.prefix}-")
        self._procs: list[subprocess.Popen] = []
        self._ns: list[str] = []
        self._closed = False
        self.http_port = HTTP_PORT
        self.switch = Host(f"{self.prefix}-sw", procs=self._procs)
        self.lbs = [Host(f"{self.prefix}-lb{i}", "eth0", procs=self._procs) for i in range(lbs)]
        self.backends = [Host(f"{self.prefix}-b{i}", "eth0", f"10.211.0.{10 + i}", procs=self._procs)
                         for i in range(backends)]
        self.lb_back_ips = [f"10.211.0.{1 + i}" for i in range(lbs)]
        self.router: Host | None = None
        if kind == "vrrp":
            self.vip = VRRP_VIP
            self.client = Host(f"{self.prefix}-client", "eth0", "10.210.0.100", procs=self._procs)
            for i, lb in enumerate(self.lbs):
                lb.ip = f"10.210.0.{1 + i}"
            self.sources = [self.client.ip]
        else:
            self.vip = BGP_VIP
            self.client = Host(f"{self.prefix}-client", "eth0", "10.212.0.2", procs=self._procs)
            self.router = Host(f"{self.prefix}-rt", "client", "10.212.0.1", procs=self._procs)
            for i, lb in enumerate(self.lbs):
                lb.ip = f"10.213.{i}.2"
            self.router_lb_ips = [f"10.213.{i}.1" for i in range(lbs)]
            self.sources = [f"10.212.0.{10 + i}" for i in range(sources)]
        testbed._register(self)
        try:
            testbed.cleanup_stale()
            self._build()
        except BaseException:
            self.close()
            raise

    @property
    def hosts(self) -> list[Host]:
        return [self.switch, self.client, *([self.router] if self.router else []), *self.lbs, *self.backends]

    # -- building ---------------------------------------------------------------------
    def _veth(self, a: Host, a_if: str, b: Host, b_if: str) -> None:
        a.run(["ip", "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name])
        a.run(["ip", "link", "set", a_if, "up"])

    def _address(self, host: Host, ifname: str, cidr: str) -> None:
        host.run(["ip", "addr", "add", cidr, "dev", ifname])
        host.run(["ip", "link", "set", ifname, "up"])

    def _build(self) -> None:
        for h in self.hosts:
            if os.path.exists(os.path.join(testbed.NETNS_DIR, h.name)):
                raise FileExistsError(f"network namespace {h.name} already exists")
            self._ns.append(h.name)
            subprocess.run(["ip", "netns", "add", h.name], check=True, capture_output=True)
            h.run(["ip", "link", "set", "lo", "up"])
            h.sysctls({"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0,
                       "net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1})
        sw = self.switch
        bridges = ["back"] + (["front"] if self.kind == "vrrp" else [])
        for br in bridges:
            sw.run(["ip", "link", "add", br, "type", "bridge", "forward_delay", "0", "stp_state", "0"])
            sw.run(["ip", "link", "set", br, "up"])

        def port(host: Host, ifname: str, bridge: str, cidr: str) -> None:
            sw_if = f"{host.name.rsplit('-', 1)[1]}-{bridge[0]}"
            self._veth(sw, sw_if, host, ifname)
            sw.run(["ip", "link", "set", sw_if, "master", bridge])
            self._address(host, ifname, cidr)

        for i, lb in enumerate(self.lbs):
            port(lb, "eth1", "back", f"{self.lb_back_ips[i]}/24")
        for b in self.backends:
            port(b, "eth0", "back", f"{b.ip}/24")
        if self.kind == "vrrp":
            port(self.client, "eth0", "front", f"{self.client.ip}/24")
            for lb in self.lbs:
                port(lb, "eth0", "front", f"{lb.ip}/24")
        else:
            r = self.router
            r.sysctls({"net.ipv4.ip_forward": 1, "net.ipv4.fib_multipath_hash_policy": 1})
            self._veth(r, "client", self.client, "eth0")
            self._address(r, "client", f"{r.ip}/24")
            self._address(self.client, "eth0", f"{self.client.ip}/24")
            for a in self.sources:
                self.client.run(["ip", "addr", "add", f"{a}/24", "dev", "eth0"])
            self.client.run(["ip", "route", "add", "default", "via", r.ip])
            for i, lb in enumerate(self.lbs):
                self._veth(r, f"lb{i}", lb, "eth0")
                self._address(r, f"lb{i}", f"{self.router_lb_ips[i]}/24")
                self._address(lb, "eth0", f"{lb.ip}/24")
                lb.run(["ip", "route", "add", "default", "via", self.router_lb_ips[i]])

    # -- link cuts --------------------------------------------------------------------------
    def set_front_link(self, lb: Host, up: bool) -> None:
        """Pull (or plug back) the LB's front cable: its switch-side port goes down, so the
        LB's eth0 loses carrier, as with a real cable."""
        i = self.lbs.index(lb)
        if self.kind == "vrrp":
            self.switch.run(["ip", "link", "set", f"lb{i}-f", "up" if up else "down"])
        else:
            self.router.run(["ip", "link", "set", f"lb{i}", "up" if up else "down"])

    # -- servers ----------------------------------------------------------------------------
    def start_backend_servers(self, timeout: float = 10.0) -> None:
        for i, b in enumerate(self.backends):
            log = open(os.path.join(self.workdir, f"b{i}.log"), "ab")
            try:
                b.python(["-m", "control.testbed_servers", "--name", f"b{i}", "--http", str(HTTP_PORT),
                          "--bind", "0.0.0.0", "--parent-pid", str(os.getpid())],
                         stdout=log, stderr=subprocess.STDOUT)
            finally:
                log.close()
        deadline = time.monotonic() + timeout
        for b in self.backends:
            while True:
                try:
                    self.lbs[0].connect(b.ip, HTTP_PORT, timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"backend {b.name} not up")
                    time.sleep(0.05)

    # -- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            testbed.stop_processes(self._procs)
            testbed._kill_ns_residents(self._ns)
            for name in reversed(self._ns):
                testbed._remove_netns(name)
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            testbed._unregister(self)

    def __enter__(self) -> "HaTestbed":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
