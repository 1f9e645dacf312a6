"""Observers for the HA netns tests, each a bounded thread inside one namespace: a client
that keeps opening connections to the VIP, an ARP prober that records which MACs answer
for the VIP, and address monitors that record when the VIP comes and goes on each LB."""
import os
import socket
import struct
import subprocess
import threading
import time
from datetime import datetime

from control import testbed

ETH_P_ARP = 0x0806
CLONE_NEWNET = 0x40000000


def enter_netns(name: str) -> None:
    """Move the calling thread (only) into namespace `name`."""
    fd = os.open(f"{testbed.NETNS_DIR}/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if testbed._libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError("setns failed")
    finally:
        os.close(fd)


def monitor_lines(proc):
    """A monitor's output lines until it ends, or until close() (testbed.stop_processes)
    closes the pipe under the reading thread."""
    try:
        yield from proc.stdout
    except ValueError:      # I/O on a closed file
        return


class NsThread(threading.Thread):
    """Runs `self.loop()` in namespace `ns` until stop() or `limit_s` seconds."""

    def __init__(self, ns: str, limit_s: float):
        super().__init__(daemon=True)
        self.ns = ns
        self.deadline = time.monotonic() + limit_s
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            enter_netns(self.ns)
            self.loop()
        except BaseException as e:      # reported by stop()
            self.error = e

    def going(self) -> bool:
        return not self.stopped.is_set() and time.monotonic() < self.deadline

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)
        if self.error is not None:
            raise self.error


class Load(NsThread):
    """One HTTP request per new connection to addr:port every `gap_s`; results are
    (wall time, ok, backend name or error)."""

    def __init__(self, ns: str, addr: str, port: int, gap_s: float = 0.02, limit_s: float = 60.0,
                 sources: list[str] | None = None):
        super().__init__(ns, limit_s)
        self.addr, self.port, self.gap_s = addr, port, gap_s
        self.sources = sources or [None]
        self.results: list[tuple[float, bool, str]] = []

    def loop(self) -> None:
        i = 0
        while self.going():
            src = self.sources[i % len(self.sources)]
            i += 1
            t = time.time()
            try:
                with socket.create_connection((self.addr, self.port), timeout=0.3,
                                              source_address=(src, 0) if src else None) as s:
                    s.settimeout(0.5)
                    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                name = data.rpartition(b"\r\n\r\n")[2].decode()
                self.results.append((t, bool(name), name or "empty reply"))
            except OSError as e:
                self.results.append((t, False, type(e).__name__))
            time.sleep(self.gap_s)

    def ok_after(self, t: float) -> float | None:
        """Time of the first successful connection opened at or after t, with no failure
        after it (service is back for good)."""
        last_fail = max((r[0] for r in self.results if r[0] >= t and not r[1]), default=t)
        return next((r[0] for r in self.results if r[0] >= last_fail and r[1]), None)

    def failures(self, t0: float, t1: float) -> int:
        return sum(1 for r in self.results if t0 <= r[0] < t1 and not r[1])


class ArpProbe(NsThread):
    """Every `gap_s`: broadcast who-has VIP on `ifname` and record the set of MACs that
    answer within `listen_s`. Two MACs in one sample mean two hosts hold the VIP."""

    def __init__(self, ns: str, ifname: str, src_ip: str, vip: str, gap_s: float = 0.03,
                 listen_s: float = 0.03, limit_s: float = 60.0):
        super().__init__(ns, limit_s)
        self.ifname, self.src_ip, self.vip = ifname, src_ip, vip
        self.gap_s, self.listen_s = gap_s, listen_s
        self.samples: list[tuple[float, frozenset[str]]] = []

    def loop(self) -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as s:
            s.bind((self.ifname, ETH_P_ARP))
            mac = s.getsockname()[4]
            request = (b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP)
                       + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + socket.inet_aton(self.src_ip)
                       + b"\x00" * 6 + socket.inet_aton(self.vip))
            vip = socket.inet_aton(self.vip)
            while self.going():
                t = time.time()
                s.send(request)
                macs = set()
                end = time.monotonic() + self.listen_s
                while (left := end - time.monotonic()) > 0:
                    s.settimeout(left)
                    try:
                        frame = s.recv(128)
                    except TimeoutError:
                        break
                    arp = frame[14:42]
                    if len(arp) == 28 and arp[6:8] == b"\x00\x02" and arp[14:18] == vip:
                        macs.add(arp[8:14].hex(":"))
                self.samples.append((t, frozenset(macs)))
                time.sleep(self.gap_s)

    def double_answers(self) -> list[tuple[float, frozenset[str]]]:
        return [s for s in self.samples if len(s[1]) > 1]

    def owners(self) -> list[tuple[float, frozenset[str]]]:
        """The samples where the answer changed."""
        out = []
        for t, macs in self.samples:
            if not out or out[-1][1] != macs:
                out.append((t, macs))
        return out


PROBE = "198.51.100.254"     # TEST-NET-2: never a VIP; shows a monitor is subscribed


class AddressWatch:
    """`ip -ts monitor address` in each LB namespace: every time `vip` is added to or
    deleted from one of them, with the kernel event's timestamp."""

    def __init__(self, hosts, vip: str):
        self.vip = vip
        self.events: list[tuple[float, int, bool]] = []     # (time, host index, present)
        self.lock = threading.Lock()
        self.procs = []
        self.threads = []
        for i, h in enumerate(hosts):
            p = h.popen(["ip", "-ts", "monitor", "address"], stdout=subprocess.PIPE, text=True)
            self.procs.append(p)
            t = threading.Thread(target=self._read, args=(i, p), daemon=True)
            t.start()
            self.threads.append(t)
        # A monitor that subscribed late would miss events and report no overlap: wait
        # until each one has printed a probe address added after it started.
        # The probe is added again until it is seen: one made before the subscription is missed.
        self.live = [threading.Event() for _ in hosts]
        for i, h in enumerate(hosts):
            deadline = time.monotonic() + 10
            while not self.live[i].is_set() and time.monotonic() < deadline:
                h.run(["ip", "addr", "add", f"{PROBE}/32", "dev", "lo"])
                self.live[i].wait(0.3)
                h.run(["ip", "addr", "del", f"{PROBE}/32", "dev", "lo"])
            if not self.live[i].is_set():
                raise RuntimeError(f"`ip monitor address` on {h.name} never reported the probe address")

    def _read(self, i: int, proc) -> None:
        for line in monitor_lines(proc):
            if f" {PROBE}/" in line:
                self.live[i].set()
                continue
            if not line.startswith("[") or f" {self.vip}/" not in line:
                continue
            stamp, _, rest = line[1:].partition("] ")
            t = datetime.fromisoformat(stamp).timestamp()
            with self.lock:
                self.events.append((t, i, not rest.startswith("Deleted")))

    def holders_at(self, t: float) -> set[int]:
        held = set()
        with self.lock:
            for when, i, present in sorted(self.events):
                if when > t:
                    break
                (held.add if present else held.discard)(i)
        return held

    def gained(self, i: int, after: float) -> float | None:
        """When host i got the VIP (first time after `after`)."""
        with self.lock:
            return min((t for t, j, present in self.events if j == i and present and t >= after), default=None)

    def overlaps(self) -> list[tuple[float, float]]:
        """(start, seconds) of every moment the VIP was on more than one host."""
        held: set[int] = set()
        out = []
        start = None
        with self.lock:
            events = sorted(self.events)
        for t, i, present in events:
            (held.add if present else held.discard)(i)
            if len(held) > 1 and start is None:
                start = t
            elif len(held) <= 1 and start is not None:
                out.append((start, t - start))
                start = None
        if start is not None:
            out.append((start, float("inf")))
        return out

    def close(self) -> None:
        testbed.stop_processes(self.procs, grace=5)
        for t in self.threads:
            t.join(5)


class RouteWatch:
    """`ip -ts -oneline monitor route` in one namespace: the timestamp and text of every
    route event for `prefix` (a multipath route's next hops on the same line)."""

    def __init__(self, host, prefix: str):
        self.prefix = prefix
        self.events: list[tuple[float, str]] = []
        self.proc = host.popen(["ip", "-ts", "-oneline", "monitor", "route"], stdout=subprocess.PIPE, text=True)
        self.live = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10          # subscribed once a probe route shows
        while not self.live.is_set() and time.monotonic() < deadline:
            host.run(["ip", "route", "add", f"{PROBE}/32", "dev", "lo"])
            self.live.wait(0.3)
            host.run(["ip", "route", "del", f"{PROBE}/32", "dev", "lo"])
        if not self.live.is_set():
            raise RuntimeError(f"`ip monitor route` on {host.name} never reported the probe route")

    def _read(self) -> None:
        for line in monitor_lines(self.proc):
            stamp, _, text = line[1:].partition("] ")
            words = text.replace("\\", " ").split()
            if PROBE in text:
                self.live.set()
                continue
            if self.prefix in words[:2]:        # "PREFIX ..." or "Deleted PREFIX ..."
                self.events.append((datetime.fromisoformat(stamp).timestamp(), " ".join(words)))

    def first_after(self, t: float) -> tuple[float, str] | None:
        return next(((when, text) for when, text in list(self.events) if when >= t), None)

    def close(self) -> None:
        testbed.stop_processes([self.proc], grace=5)
        self.thread.join(5)
