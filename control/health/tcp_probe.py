"""TCP connect checks as a chain of event-loop callbacks (timer -> non-blocking connect ->
writable or deadline -> record -> timer) instead of a coroutine per server: the check
thousands of servers run costs a third less CPU this way (bench/bench_health.py)."""
from __future__ import annotations

import asyncio
import errno
import os
import random
import socket
import time
from collections.abc import Callable

from control.health.checks import LINGER_RESET, CheckResult

Record = Callable[[CheckResult], None]


class TcpProbeLoop:
    """Checks one address:port every `interval` s from `first_delay` on; `cancel()` stops it
    (the same contract as the asyncio.Task the other check types run in)."""
    __slots__ = ("loop", "address", "family", "interval", "timeout", "record", "sock", "fd",
                 "deadline", "timer", "started", "next_start", "next_gap", "cancelled")

    def __init__(self, address: str, port: int, interval: float, timeout: float,
                 first_delay: float, record: Record):
        self.loop = asyncio.get_running_loop()
        self.address = (address, port)
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.interval, self.timeout, self.record = interval, timeout, record
        self.sock: socket.socket | None = None
        self.fd = -1
        self.deadline: asyncio.TimerHandle | None = None
        self.cancelled = False
        self.next_start = self.loop.time() + first_delay
        self.next_gap = random.uniform(0, interval)    # random phase, then a steady interval
        self.timer = self.loop.call_at(self.next_start, self._probe)

    def _probe(self) -> None:
        self.started = time.perf_counter()
        sock = socket.socket(self.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        error = sock.connect_ex(self.address)
        if error != errno.EINPROGRESS:
            self._finish(sock, error)
            return
        self.sock, self.fd = sock, sock.fileno()
        self.loop.add_writer(self.fd, self._connected)
        self.deadline = self.loop.call_later(self.timeout, self._expired)

    def _connected(self) -> None:
        self.loop.remove_writer(self.fd)
        self.deadline.cancel()
        sock, self.sock = self.sock, None
        self._finish(sock, sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

    def _expired(self) -> None:
        self.loop.remove_writer(self.fd)
        sock, self.sock = self.sock, None
        sock.close()
        self._done(CheckResult(False, f"timeout after {round(self.timeout * 1000)} ms",
                               time.perf_counter() - self.started))

    def _finish(self, sock: socket.socket, error: int) -> None:
        try:        # a reset, as HAProxy does: no TIME_WAIT left on the checker
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        except OSError:
            pass
        sock.close()
        duration = time.perf_counter() - self.started
        self._done(CheckResult(True, "connected", duration) if not error
                   else CheckResult(False, f"connect: {os.strerror(error)}", duration))

    def _done(self, result: CheckResult) -> None:
        if self.cancelled:
            return
        self.record(result)
        self.next_start += self.next_gap
        self.next_gap = self.interval
        now = self.loop.time()
        if self.next_start < now:       # slower than the interval: carry on, no catch-up burst
            self.next_start = now
        self.timer = self.loop.call_at(self.next_start, self._probe)

    def cancel(self) -> None:
        self.cancelled = True
        self.timer.cancel()
        if self.sock is not None:
            self.loop.remove_writer(self.fd)
            self.deadline.cancel()
            self.sock.close()
            self.sock = None
