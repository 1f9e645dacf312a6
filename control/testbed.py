"""Network-namespace testbed: a client, a load-balancer host and N backends on veths.

    client ns ── veth ── LB ns ── veth(s) ── one ns per backend

Addressing (fixed, so tests and benchmarks can hard-code it):

    client      10.200.0.2/24      fd00:200::2/64        default via the LB (v4 and v6)
    LB (client) 10.200.0.1/24      fd00:200::1/64
    LB (b i)    10.200.{i+1}.1/24  fd00:200:{i+1}::1/64
    backend i   10.200.{i+1}.2/24  fd00:200:{i+1}::2/64  default via the LB
    VIP         10.200.255.1       fd00:200:ffff::1      (client reaches it through its
                                                          default route via the LB)

The LB namespace forwards (global and per-interface ``forwarding=1``: XDP's
``bpf_fib_lookup`` needs the per-interface one), has ``rp_filter`` off, and every
namespace has ``lo`` up.  Neighbour entries between the LB and its peers are installed as
permanent by default (``static_neigh=True``: no ARP/ND in the way of what a test measures);
``static_neigh=False`` leaves them to be learnt, as in real networks.

Processes started through :meth:`Host.popen` / :meth:`Host.python` are tracked and
terminated (then killed) by :meth:`Testbed.close`, which also kills anything else still
running inside the testbed's namespaces and deletes them (the veths go with them).
``close`` is idempotent, runs from ``__exit__`` even after an exception, and an
``atexit`` hook closes every testbed still open when the interpreter exits.  Namespaces
left behind by a process that died without cleaning up (``lbf<pid>x<n>-*`` whose pid is
gone) are removed, with whatever still runs in them, when the next testbed is created;
backend servers also exit by themselves once the process that started them is gone.

Only loopback and these namespaces ever carry traffic.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from control.testbed_servers import HTTP_PORT, TCP_ECHO_PORT, UDP_ECHO_PORT

__all__ = [
    "CommandError",
    "Host",
    "Testbed",
    "HTTP_PORT",
    "TCP_ECHO_PORT",
    "UDP_ECHO_PORT",
    "VIP",
    "VIP6",
    "ethtool_offload_off",
    "gro_on",
    "netns_unavailable_reason",
    "cleanup_stale",
    "stop_processes",
]

NETNS_DIR = "/run/netns"
VIP = "10.200.255.1"
VIP6 = "fd00:200:ffff::1"
REPO_ROOT = str(Path(__file__).resolve().parent.parent)

CLONE_NEWNET = 0x40000000
IFA_F_NODAD = 0x02
NUD_PERMANENT = 0x80
_AUTO_PREFIX_RE = re.compile(r"^lbf(\d+)x\d+-")
_TERM_GRACE = 3.0  # seconds between SIGTERM and SIGKILL on close

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


class CommandError(subprocess.CalledProcessError):
    """A command run inside a namespace failed; the message carries its stderr."""

    def __str__(self) -> str:
        base = super().__str__()
        err = self.stderr
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        return f"{base}\n{err.strip()}" if err else base


def _in_netns(ns: str, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in a short-lived thread that has joined namespace ``ns``.

    Only that thread changes namespace (setns on a thread is per-thread for CLONE_NEWNET),
    so the rest of the process is untouched.  Sockets created there stay in ``ns``.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({ns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            box["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class Host:
    """One network namespace of a testbed.

    ``name`` is the namespace name (usable with ``ip netns exec``), ``ifname``/``ip``/``ip6``
    its main veth and addresses.
    """

    def __init__(self, name: str, ifname: str = "", ip: str = "", ip6: str = "",
                 procs: list[subprocess.Popen] | None = None) -> None:
        self.name = name
        self.ifname = ifname
        self.ip = ip
        self.ip6 = ip6
        self._procs: list[subprocess.Popen] = procs if procs is not None else []

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ifname={self.ifname!r}, ip={self.ip!r}, ip6={self.ip6!r})"

    def _argv(self, argv: Iterable[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *map(str, argv)]

    def run(self, argv: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the namespace and wait for it.

        Defaults: output captured as text, 120 s timeout.  With ``check`` a failure raises
        :class:`CommandError` whose message includes the command's stderr.
        """
        if not any(k in kw for k in ("stdout", "stderr", "capture_output")):
            kw["capture_output"] = True
        if "encoding" not in kw and "errors" not in kw:
            kw.setdefault("text", True)
        kw.setdefault("timeout", 120)
        if "input" not in kw:
            kw.setdefault("stdin", subprocess.DEVNULL)
        cp = subprocess.run(self._argv(argv), check=False, **kw)
        if check and cp.returncode != 0:
            raise CommandError(cp.returncode, cp.args, cp.stdout, cp.stderr)
        return cp

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        """Start ``argv`` inside the namespace; tracked, terminated on testbed close.

        Runs in its own session (process group) unless ``start_new_session=False`` is
        passed, so that close() can signal the whole group.
        """
        kw.setdefault("start_new_session", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self._argv(argv), **kw)
        p._lbf_group = bool(kw["start_new_session"])  # type: ignore[attr-defined]
        self._procs.append(p)
        return p

    def python(self, args: list[str], **kw: Any) -> subprocess.Popen:
        """Start ``sys.executable *args`` inside the namespace (tracked, unbuffered,
        with the repository on ``PYTHONPATH``)."""
        env = dict(kw.pop("env", None) or os.environ)
        pp = env.get("PYTHONPATH")
        env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + pp if pp else "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        return self.popen([sys.executable, *args], env=env, **kw)

    def sysctl(self, key: str, value: str) -> None:
        self.sysctls({key: value})

    def sysctls(self, values: dict[str, Any]) -> None:
        """Set several sysctls with one ``sysctl -w`` run."""
        if values:
            self.run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())])

    def in_ns(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` in a thread that has joined this namespace."""
        return _in_netns(self.name, fn, *args)

    def socket(self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM,
               proto: int = 0) -> socket.socket:
        """A socket that lives in this namespace (usable from any thread)."""
        return self.in_ns(socket.socket, family, type, proto)

    def connect(self, addr: str, port: int, timeout: float | None = 5.0,
                source: str | None = None) -> socket.socket:
        """A TCP connection from this namespace to ``addr:port`` (v4 or v6)."""
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = self.socket(fam, socket.SOCK_STREAM)
        try:
            s.settimeout(timeout)
            if source:
                s.bind((source, 0))
            s.connect((addr, port))
        except BaseException:
            s.close()
            raise
        return s

    def ifindex(self, ifname: str) -> int:
        return self.in_ns(socket.if_nametoindex, ifname)

    def alive_procs(self) -> list[subprocess.Popen]:
        return [p for p in self._procs if p.poll() is None and p.args[3] == self.name]


class Testbed:
    """client ns ── veth ── LB ns ── veth(s) ── one ns per backend

    ``Testbed(backends=2)``; use as a context manager or call :meth:`close`.
    Extra keyword: ``static_neigh`` (default True) installs permanent neighbour entries
    on both ends of every veth.  ``workdir`` is a private temp directory (server logs,
    configs), removed on close.
    """

    vip: str = VIP
    vip6: str = VIP6
    http_port: int = HTTP_PORT
    tcp_echo_port: int = TCP_ECHO_PORT
    udp_echo_port: int = UDP_ECHO_PORT

    __test__ = False  # not a pytest test class
    _counter = 0
    _counter_lock = threading.Lock()

    def __init__(self, backends: int = 2, prefix: str | None = None, *,
                 static_neigh: bool = True) -> None:
        if not 0 <= backends <= 254:
            raise ValueError("backends must be between 0 and 254")
        with Testbed._counter_lock:
            Testbed._counter += 1
            n = Testbed._counter
        if prefix is None:
            prefix = f"lbf{os.getpid()}x{n}"
            tag = f"{_b36(os.getpid())}x{_b36(n)}"
        elif re.fullmatch(r"[A-Za-z0-9]{1,8}", prefix):
            tag = prefix
        else:
            tag = hashlib.sha1(prefix.encode()).hexdigest()[:8]
        self.prefix = prefix
        self._closed = False
        self._procs: list[subprocess.Popen] = []
        self._ns_created: list[str] = []
        self.server_procs: list[subprocess.Popen] = []
        self.workdir = tempfile.mkdtemp(prefix=f"{prefix}-")

        self.lb_client_if = f"{tag}-lc"
        self.lb_client_ip = "10.200.0.1"
        self.lb_client_ip6 = "fd00:200::1"
        self.lb_backend_ifs = [f"{tag}-l{i}" for i in range(backends)]
        self.lb_backend_ips = [f"10.200.{i + 1}.1" for i in range(backends)]
        self.lb_backend_ip6s = [f"fd00:200:{i + 1}::1" for i in range(backends)]
        self.client = Host(f"{prefix}-client", f"{tag}-cl", "10.200.0.2", "fd00:200::2",
                           self._procs)
        self.lb = Host(f"{prefix}-lb", self.lb_client_if, self.lb_client_ip,
                       self.lb_client_ip6, self._procs)
        self.backends = [
            Host(f"{prefix}-b{i}", f"{tag}-b{i}", f"10.200.{i + 1}.2", f"fd00:200:{i + 1}::2",
                 self._procs)
            for i in range(backends)
        ]
        _register(self)
        try:
            cleanup_stale()
            self._build(static_neigh)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ building
    @property
    def hosts(self) -> list[Host]:
        return [self.client, self.lb, *self.backends]

    def _build(self, static_neigh: bool) -> None:
        from pyroute2 import NetNS, netns

        for h in self.hosts:
            if os.path.exists(os.path.join(NETNS_DIR, h.name)):
                raise FileExistsError(f"network namespace {h.name} already exists")
            self._ns_created.append(h.name)
            netns.create(h.name)

        # (LB-side ifname, LB addrs, peer host, peer gateway addrs)
        links = [(self.lb_client_if, self.lb_client_ip, self.lb_client_ip6, self.client)]
        links += [(self.lb_backend_ifs[i], self.lb_backend_ips[i], self.lb_backend_ip6s[i], b)
                  for i, b in enumerate(self.backends)]

        macs: dict[tuple[str, str], str] = {}
        with NetNS(self.lb.name) as ns:
            for lb_if, _, _, peer in links:
                ns.link("add", ifname=lb_if, kind="veth",
                        peer={"ifname": peer.ifname, "net_ns_fd": peer.name})

        # sysctls before any address exists (DAD off, forwarding on in the LB)
        lb_sysctl = {
            "net.ipv4.ip_forward": 1,
            "net.ipv6.conf.all.forwarding": 1,
            "net.ipv4.conf.all.rp_filter": 0,
            "net.ipv4.conf.default.rp_filter": 0,
            "net.ipv6.conf.all.accept_dad": 0,
            "net.ipv6.conf.default.accept_dad": 0,
        }
        for lb_if, *_ in links:
            lb_sysctl[f"net.ipv4.conf.{lb_if}.forwarding"] = 1
            lb_sysctl[f"net.ipv4.conf.{lb_if}.rp_filter"] = 0
            lb_sysctl[f"net.ipv6.conf.{lb_if}.forwarding"] = 1
            lb_sysctl[f"net.ipv6.conf.{lb_if}.accept_dad"] = 0
        self.lb.sysctls(lb_sysctl)
        for h in [self.client, *self.backends]:
            h.sysctls({"net.ipv6.conf.all.accept_dad": 0,
                       "net.ipv6.conf.default.accept_dad": 0,
                       f"net.ipv6.conf.{h.ifname}.accept_dad": 0,
                       f"net.ipv6.conf.{h.ifname}.accept_ra": 0})

        def setup(nsname: str, ifname: str, ip: str, ip6: str,
                  gw: tuple[str, str] | None) -> str:
            with NetNS(nsname) as ns:
                lo = ns.link_lookup(ifname="lo")[0]
                ns.link("set", index=lo, state="up")
                idx = ns.link_lookup(ifname=ifname)[0]
                ns.addr("add", index=idx, address=ip, prefixlen=24)
                ns.addr("add", index=idx, address=ip6, prefixlen=64, flags=IFA_F_NODAD)
                ns.link("set", index=idx, state="up")
                if gw:
                    ns.route("add", dst="0.0.0.0/0", gateway=gw[0])
                    ns.route("add", dst="::/0", gateway=gw[1], family=socket.AF_INET6)
                return ns.get_links(idx)[0].get_attr("IFLA_ADDRESS")

        for lb_if, lb_ip, lb_ip6, peer in links:
            macs[(self.lb.name, lb_if)] = setup(self.lb.name, lb_if, lb_ip, lb_ip6, None)
            macs[(peer.name, peer.ifname)] = setup(peer.name, peer.ifname, peer.ip, peer.ip6,
                                                   (lb_ip, lb_ip6))

        if static_neigh:
            with NetNS(self.lb.name) as ns:
                for lb_if, _, _, peer in links:
                    idx = ns.link_lookup(ifname=lb_if)[0]
                    mac = macs[(peer.name, peer.ifname)]
                    for dst, fam in ((peer.ip, socket.AF_INET), (peer.ip6, socket.AF_INET6)):
                        ns.neigh("replace", ifindex=idx, dst=dst, lladdr=mac,
                                 state=NUD_PERMANENT, family=fam)
            for lb_if, lb_ip, lb_ip6, peer in links:
                mac = macs[(self.lb.name, lb_if)]
                with NetNS(peer.name) as ns:
                    idx = ns.link_lookup(ifname=peer.ifname)[0]
                    for dst, fam in ((lb_ip, socket.AF_INET), (lb_ip6, socket.AF_INET6)):
                        ns.neigh("replace", ifindex=idx, dst=dst, lladdr=mac,
                                 state=NUD_PERMANENT, family=fam)
        self.macs = macs

    def mac(self, host: Host, ifname: str | None = None) -> str:
        """MAC address of ``host``'s interface (default: its main veth)."""
        return self.macs[(host.name, ifname or host.ifname)]

    def add_vip_local(self) -> None:
        """Put the VIPs on the LB's ``lo`` (userspace proxy path). Idempotent."""
        from pyroute2 import NetNS
        from pyroute2.netlink.exceptions import NetlinkError

        with NetNS(self.lb.name) as ns:
            lo = ns.link_lookup(ifname="lo")[0]
            for addr, plen, flags in ((self.vip, 32, 0), (self.vip6, 128, IFA_F_NODAD)):
                try:
                    ns.addr("add", index=lo, address=addr, prefixlen=plen, flags=flags)
                except NetlinkError as e:
                    if e.code != errno.EEXIST:
                        raise

    def remove_vip_local(self) -> None:
        from pyroute2 import NetNS
        from pyroute2.netlink.exceptions import NetlinkError

        with NetNS(self.lb.name) as ns:
            lo = ns.link_lookup(ifname="lo")[0]
            for addr, plen in ((self.vip, 32), (self.vip6, 128)):
                try:
                    ns.addr("del", index=lo, address=addr, prefixlen=plen)
                except NetlinkError as e:
                    if e.code not in (errno.EADDRNOTAVAIL, errno.ENOENT):
                        raise

    # ------------------------------------------------------------------ servers
    def start_backend_servers(self, kinds: Iterable[str] = ("http", "tcp_echo", "udp_echo"),
                              wait: bool = True, timeout: float = 10.0) -> None:
        """Run ``control.testbed_servers`` in every backend namespace, named ``b{i}``,
        on both address families, default ports; wait for the TCP ports unless
        ``wait=False``.  Logs go to ``workdir/b{i}.log``."""
        kinds = tuple(kinds)
        flags = {"http": ("--http", HTTP_PORT), "tcp_echo": ("--tcp-echo", TCP_ECHO_PORT),
                 "udp_echo": ("--udp-echo", UDP_ECHO_PORT)}
        unknown = set(kinds) - set(flags)
        if unknown:
            raise ValueError(f"unknown server kinds: {sorted(unknown)}")
        if not kinds:
            return
        for i, b in enumerate(self.backends):
            args = ["-m", "control.testbed_servers", "--name", f"b{i}",
                    "--parent-pid", str(os.getpid())]
            for k in kinds:
                args += [flags[k][0], str(flags[k][1])]
            log = open(os.path.join(self.workdir, f"b{i}.log"), "ab")
            try:
                p = b.python(args, stdout=log, stderr=subprocess.STDOUT)
            finally:
                log.close()
            self.server_procs.append(p)
        if wait:
            for b in self.backends:
                for k in kinds:
                    if k != "udp_echo":  # UDP is bound before the TCP listeners
                        self.wait_port(b, b.ip, flags[k][1], timeout=timeout)

    def wait_port(self, host: Host, addr: str, port: int, timeout: float = 5.0) -> None:
        """Wait until a TCP connect from ``host``'s namespace to ``addr:port`` succeeds."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            try:
                left = deadline - time.monotonic()
                host.connect(addr, port, timeout=max(0.05, min(1.0, left))).close()
                return
            except OSError as e:
                last = e
            dead = [p for p in self._procs if p.poll() is not None and p in self.server_procs]
            if time.monotonic() >= deadline or dead:
                msg = f"{addr}:{port} not reachable from {host.name} within {timeout}s ({last})"
                if dead:
                    msg += "; backend server exited early:" + self._log_tails()
                raise TimeoutError(msg)
            time.sleep(0.02)

    def _log_tails(self) -> str:
        out = []
        for i in range(len(self.backends)):
            path = os.path.join(self.workdir, f"b{i}.log")
            try:
                with open(path, "rb") as f:
                    tail = f.read()[-2000:].decode(errors="replace").strip()
            except OSError:
                continue
            if tail:
                out.append(f"\n--- b{i}.log ---\n{tail}")
        return "".join(out)

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Kill tracked processes (SIGTERM, then SIGKILL), anything else still inside the
        namespaces, delete the namespaces and the workdir.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            stop_processes(self._procs)
            _kill_ns_residents(self._ns_created)
            for name in reversed(self._ns_created):
                _remove_netns(name)
            self._ns_created.clear()
            shutil.rmtree(self.workdir, ignore_errors=True)
        finally:
            _unregister(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Testbed":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Testbed(prefix={self.prefix!r}, backends={len(self.backends)}, "
                f"closed={self._closed})")


# ---------------------------------------------------------------------- helpers
def ethtool_offload_off(host: Host, ifname: str) -> None:
    """Turn tx checksum offload off on ``ifname`` in ``host`` (needed by senders whose
    packets cross native XDP on veth)."""
    host.run(["ethtool", "-K", ifname, "tx", "off"])


def gro_on(host: Host, ifname: str) -> None:
    """Turn GRO on (gives the veth NAPI so it can receive XDP-redirected frames)."""
    host.run(["ethtool", "-K", ifname, "gro", "on"])


def _b36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def stop_processes(procs: list[subprocess.Popen], grace: float = _TERM_GRACE) -> None:
    """SIGTERM to every process still running (its group when started as one), SIGKILL to
    what is left after `grace` s, then reap them all and close their pipes."""
    def signal_all(sig: int) -> None:
        for p in procs:
            if p.poll() is not None:
                continue
            try:
                if getattr(p, "_lbf_group", False):
                    os.killpg(p.pid, sig)
                else:
                    p.send_signal(sig)
            except ProcessLookupError:
                pass
            except PermissionError:
                p.send_signal(sig)

    signal_all(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    signal_all(signal.SIGKILL)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (p.stdin, p.stdout, p.stderr):
            if f:
                try:
                    f.close()
                except OSError:
                    pass


def _ns_inode(name: str) -> tuple[int, int] | None:
    try:
        st = os.stat(os.path.join(NETNS_DIR, name))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _ns_resident_pids(names: Iterable[str]) -> list[int]:
    """Pids of processes whose network namespace is one of ``names``."""
    inodes = {i for i in map(_ns_inode, names) if i}
    if not inodes:
        return []
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inodes:
            pids.append(int(entry))
    return pids


def _kill_ns_residents(names: Iterable[str]) -> None:
    names = list(names)
    pids = _ns_resident_pids(names)
    if not pids:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (1.0 if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline:
            pids = _ns_resident_pids(names)
            if not pids:
                return
            time.sleep(0.02)


def _remove_netns(name: str) -> None:
    path = os.path.join(NETNS_DIR, name)
    if not os.path.exists(path):
        return
    try:
        from pyroute2 import netns

        netns.remove(name)
    except Exception:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete testbed namespaces (``lbf<pid>x<n>-*``) left by a process that no longer
    exists (killed before it could clean up), and the processes still running inside
    them.  Returns the names removed."""
    try:
        names = os.listdir(NETNS_DIR)
    except OSError:
        return []
    removed = []
    for name in names:
        m = _AUTO_PREFIX_RE.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        _kill_ns_residents([name])
        _remove_netns(name)
        removed.append(name)
    return removed


_unavailable: list[str | None] = []


def netns_unavailable_reason() -> str | None:
    """None when network namespaces can be created here, else why not (cached)."""
    if _unavailable:
        return _unavailable[0]
    reason: str | None = None
    if os.geteuid() != 0:
        reason = "needs root for network namespaces"
    elif not shutil.which("ip"):
        reason = "iproute2 `ip` not found"
    else:
        name = f"lbf{os.getpid()}probe"
        try:
            r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                               timeout=20)
            if r.returncode != 0:
                reason = f"`ip netns add` failed: {r.stderr.strip()}"
            else:
                r = subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                                   capture_output=True, text=True, timeout=20)
                if r.returncode != 0:
                    reason = f"`ip netns exec` failed: {r.stderr.strip()}"
        except (OSError, subprocess.SubprocessError) as e:
            reason = f"`ip netns` unusable: {e}"
        finally:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
        if reason is None:
            try:
                import pyroute2  # noqa: F401  (availability check)
            except ImportError:
                reason = "pyroute2 not installed"
    _unavailable.append(reason)
    return reason


# ---------------------------------------------------------------------- registry / atexit
_open: dict[int, Testbed] = {}
_open_lock = threading.Lock()


def _register(tb: Testbed) -> None:
    with _open_lock:
        _open[id(tb)] = tb


def _unregister(tb: Testbed) -> None:
    with _open_lock:
        _open.pop(id(tb), None)


@atexit.register
def _close_all() -> None:
    with _open_lock:
        left = list(_open.values())
    for tb in left:
        try:
            tb.close()
        except Exception as e:  # pragma: no cover - best effort at exit
            print(f"testbed: cleanup of {tb.prefix} failed: {e}", file=sys.stderr)
