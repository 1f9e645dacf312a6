"""TCP connect checks for many servers through one C prober per event loop (lbfast._tcpprobe):
its epoll fd and one batching timer drive every server's schedule, so a check costs the
kernel's connect, a tuple and the record call (bench/bench_health.py)."""
from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Callable

from control.health.checks import CheckResult
from lbfast._tcpprobe import TIMEOUT, TcpProber
from lbfast.hostports import PORT_RANGE_VALUE

Record = Callable[[CheckResult], None]

# Probes start in batches up to this early (never late): one wake per batch, not per check.
START_GRANULARITY_S = 0.005


class ProbeDriver:
    """The prober of one event loop: runs it when its epoll fd is readable or its next
    start or deadline is due, and hands each result to its TcpProbeLoop."""
    __slots__ = ("loop", "prober", "timer", "wake_at")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.prober = TcpProber(START_GRANULARITY_S, PORT_RANGE_VALUE)
        self.timer: asyncio.TimerHandle | None = None
        self.wake_at = float("inf")
        loop.add_reader(self.prober.fileno(), self._run)

    def add(self, probe: TcpProbeLoop, family: int, packed_ip: bytes, port: int, scope_id: int,
            interval: float, timeout: float, first_delay: float, first_gap: float) -> int:
        slot = self.prober.add(probe, family, packed_ip, port, scope_id, interval, timeout,
                               first_delay, first_gap)
        self._arm(first_delay)
        return slot

    def remove(self, slot: int) -> None:
        self.prober.remove(slot)
        if not len(self.prober):     # the last one gone: release the epoll fd and the timer
            self.loop.remove_reader(self.prober.fileno())
            if self.timer is not None:
                self.timer.cancel()
            self.prober.close()
            del _drivers[self.loop]

    def _arm(self, delay: float) -> None:
        wake_at = self.loop.time() + delay
        if wake_at < self.wake_at:
            if self.timer is not None:
                self.timer.cancel()
            self.wake_at = wake_at
            self.timer = self.loop.call_at(wake_at, self._wake)

    def _wake(self) -> None:
        self.timer, self.wake_at = None, float("inf")
        self._run()

    def _run(self) -> None:
        results, delay = self.prober.run()
        for probe, error, duration in results:
            probe._done(error, duration)
        if delay is not None and _drivers.get(self.loop) is self:
            self._arm(delay)


_drivers: dict[asyncio.AbstractEventLoop, ProbeDriver] = {}


class TcpProbeLoop:
    """Checks one address:port every `interval` s from `first_delay` on; `cancel()` stops it
    (the same contract as the asyncio.Task the other check types run in)."""
    __slots__ = ("driver", "slot", "record", "timeout_reason")

    def __init__(self, address: str, port: int, interval: float, timeout: float,
                 first_delay: float, record: Record):
        loop = asyncio.get_running_loop()
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)[0]
        packed_ip = socket.inet_pton(family, sockaddr[0].partition("%")[0])
        scope_id = sockaddr[3] if family == socket.AF_INET6 else 0
        self.record = record
        self.timeout_reason = f"timeout after {round(timeout * 1000)} ms"
        self.driver = _drivers.get(loop) or _drivers.setdefault(loop, ProbeDriver(loop))
        self.slot = -1
        self.slot = self.driver.add(self, family, packed_ip, port, scope_id, interval, timeout,
                                    first_delay, random.uniform(0, interval))  # random phase

    def _done(self, error: int, duration: float) -> None:
        if self.slot < 0:       # cancelled by an earlier result's record call
            return
        if error == 0:
            self.record(CheckResult(True, "connected", duration))
        elif error == TIMEOUT:
            self.record(CheckResult(False, self.timeout_reason, duration))
        else:
            self.record(CheckResult(False, f"connect: {os.strerror(error)}", duration))

    def cancel(self) -> None:
        if self.slot >= 0:
            slot, self.slot = self.slot, -1
            self.driver.remove(slot)
