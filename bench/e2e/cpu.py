"""CPU accounting for one run from /proc tick counts: the testbed's processes by role
(found by their network namespace), the kernel's softirq threads, the harness itself, and
the host's total busy time, so that what is left over ("other") measures disturbance."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def proc_ticks(pid: int | str) -> int | None:
    """utime + stime of a process (all its threads) in clock ticks; None when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[11]) + int(fields[12])     # fields 14 and 15 of proc(5)


def host_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all CPUs since boot from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        parts = f.readline().split()
    values = [int(x) for x in parts[1:9]]        # user nice system idle iowait irq softirq steal
    total = sum(values)
    return total - values[3] - values[4], total


def _ns_inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def namespace_pids(namespaces: dict[str, list[str]]) -> dict[str, list[int]]:
    """Pids per role, where `namespaces` maps a role ("lb", "backends") to netns names."""
    role_of = {}
    for role, names in namespaces.items():
        for name in names:
            ino = _ns_inode(f"/run/netns/{name}")
            if ino:
                role_of[ino] = role
    out: dict[str, list[int]] = {role: [] for role in namespaces}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            role = role_of.get(_ns_inode(f"/proc/{entry}/ns/net"))
            if role:
                out[role].append(int(entry))
    return out


def softirq_thread_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().startswith("ksoftirqd/"):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


@dataclass
class Snapshot:
    at: float
    host_busy: int
    host_total: int
    roles: dict[str, dict[int, int]]          # role -> pid -> ticks
    softirq: dict[int, int]
    harness: int

    @classmethod
    def take(cls, namespaces: dict[str, list[str]], softirq_pids: list[int]) -> "Snapshot":
        roles = {role: {p: t for p in pids if (t := proc_ticks(p)) is not None}
                 for role, pids in namespace_pids(namespaces).items()}
        busy, total = host_ticks()
        return cls(time.monotonic(), busy, total, roles,
                   {p: t for p in softirq_pids if (t := proc_ticks(p)) is not None},
                   proc_ticks("self") or 0)


def _delta(a: dict[int, int], b: dict[int, int]) -> int:
    # a process that started during the window counts from zero; one that ended is lost
    return sum(t - a.get(p, 0) for p, t in b.items())


@dataclass
class CpuUsage:
    """CPU seconds used during one run's window."""
    wall_s: float
    roles: dict[str, float]                   # client (wrk), lb, backends
    softirq_s: float
    harness_s: float
    host_busy_s: float
    samples_other: list[float] = field(default_factory=list)   # other-CPU share per interval

    @property
    def testbed_s(self) -> float:
        """wrk + LB + backends + the kernel's softirq threads."""
        return sum(self.roles.values()) + self.softirq_s

    @property
    def other_s(self) -> float:
        return max(0.0, self.host_busy_s - self.testbed_s - self.harness_s)

    @property
    def other_share(self) -> float:
        """Share of the whole machine (all CPUs) used by work that is not this run."""
        return self.other_s / (self.wall_s * NCPU) if self.wall_s > 0 else 0.0


class CpuWindow:
    """Snapshots at start and stop, and a sampler thread in between that records the
    share of the machine taken by other work in each interval (for the report)."""

    def __init__(self, namespaces: dict[str, list[str]], interval_s: float = 0.5):
        self.namespaces = namespaces
        self.interval_s = interval_s
        self.softirq_pids = softirq_thread_pids()
        self._stop = threading.Event()
        self._samples: list[float] = []
        self._thread: threading.Thread | None = None
        self.start_snap: Snapshot | None = None

    def start(self) -> None:
        self.start_snap = Snapshot.take(self.namespaces, self.softirq_pids)
        self._thread = threading.Thread(target=self._sample, name="cpu-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        names = {**self.namespaces}
        prev = self.start_snap
        while not self._stop.wait(self.interval_s):
            snap = Snapshot.take(names, self.softirq_pids)
            wall = snap.at - prev.at
            busy = (snap.host_busy - prev.host_busy) / HZ
            ours = sum(_delta(prev.roles.get(r, {}), snap.roles[r]) for r in snap.roles) / HZ
            ours += (_delta(prev.softirq, snap.softirq) + snap.harness - prev.harness) / HZ
            if wall > 0:
                self._samples.append(max(0.0, busy - ours) / (wall * NCPU))
            prev = snap

    def stop(self, extra_roles_s: dict[str, float]) -> CpuUsage:
        """End the window; `extra_roles_s` adds CPU measured otherwise (wrk's rusage)."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        end = Snapshot.take(self.namespaces, self.softirq_pids)
        start = self.start_snap
        roles = {r: _delta(start.roles.get(r, {}), end.roles.get(r, {})) / HZ for r in end.roles}
        for r, s in extra_roles_s.items():
            roles[r] = roles.get(r, 0.0) + s
        return CpuUsage(
            wall_s=end.at - start.at, roles=roles,
            softirq_s=_delta(start.softirq, end.softirq) / HZ,
            harness_s=(end.harness - start.harness) / HZ,
            host_busy_s=(end.host_busy - start.host_busy) / HZ,
            samples_other=self._samples)


def quiet_share(seconds: float = 1.0) -> float:
    """Busy share of the whole machine over `seconds` while this run has nothing running
    (used to wait for the host to calm down before re-running a disturbed run)."""
    b0, t0 = host_ticks()
    time.sleep(seconds)
    b1, t1 = host_ticks()
    return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
