"""The health monitor: one asyncio loop per checked server, rise/fall counting, passive
failures, and check state that survives reloads.

State rules, chosen for what HAProxy and keepalived users ask of an LB:

- A server seen for the first time starts DOWN and goes UP on its first successful
  check (HAProxy `init-state down`, keepalived `alpha`): it takes no traffic before one
  proof of life, yet a healthy pool fills within one check round trip, because first
  checks run at once, spread over min(interval, 1 s). After that first chance the usual
  counts apply: `fall` consecutive failures take a server DOWN, `rise` consecutive
  successes bring it back UP.
- `update()` with an unchanged (backend id, server key, HealthCheckSpec) keeps the
  server's state and its running loop: a reload never flaps a server UP or DOWN.
- A changed check is not news about the server: an UP (or unchecked) server stays UP
  until the new check fails `fall` times; a DOWN one stays DOWN until the new check's
  first success. Check type `none` makes the server UNCHECKED (usable) with no loop.
- After the quick first check, each loop's next check lands at a random point of its
  interval, then every interval: phases end up uniformly spread, so 1,000 servers are
  not probed in the same millisecond, and no gap between two checks exceeds the interval.
- Passive failures (Linode check_passive: the data plane saw a 5xx other than 501/505, or
  a failed connect, never one the client caused) are counted like failed checks: `fall`
  (`attempts`) of them in a row take an UP server DOWN; a good live response in between
  starts the count again. The active check brings it back after `rise` successes.

`on_change(backend_id, server_key, health, reason)` is called for the initial state of
every server that appears (or whose check is turned on or off) and on every transition,
from the event loop, synchronously: it must not block. Each transition is logged once
on the "lbfast.health" logger.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from control.health.checks import CheckResult, run_check
from control.health.tcp_probe import TcpProbeLoop
from lbfast.enums import CheckType, Health
from lbfast.spec import BackendSpec, HealthCheckSpec, ServerSpec

log = logging.getLogger("lbfast.health")

# First checks of new servers are spread over this window (or the interval if shorter):
# wide enough to spread thousands of servers, short enough to fill a pool at start.
FIRST_CHECK_SPREAD_S = 1.0

OnChange = Callable[[int, str, Health, str], None]
ServerId = tuple[int, str]  # (backend id, server key)


@dataclass(frozen=True, slots=True)
class ServerStatus:
    backend_id: int
    server_key: str
    check: CheckType
    health: Health
    last_ok: bool | None        # None until the first check finished
    last_reason: str            # the last check's reason ("HTTP 200", "timeout after 3000 ms")
    last_check: float | None    # epoch seconds the last check finished
    last_duration: float | None  # seconds the last check took
    last_change: float          # epoch seconds of the last transition (or of first sight)
    change_reason: str          # why the server is in its current state
    successes: int              # consecutive, towards `rise`
    failures: int               # consecutive, towards `fall`


class ServerWatch:
    """Mutable state of one (backend, server) pair and the loop that checks it."""
    __slots__ = ("backend_id", "server_key", "address", "port", "check", "health",
                 "successes", "failures", "passive_failures", "first_chance", "last_result", "last_check",
                 "last_change", "change_reason", "task")  # task: asyncio.Task or TcpProbeLoop

    def __init__(self, backend_id: int, server: ServerSpec, check: HealthCheckSpec) -> None:
        self.backend_id = backend_id
        self.server_key = server.key
        self.address = server.address
        self.port = server.port
        self.check = check
        self.health = Health.UNCHECKED
        self.successes = 0
        self.failures = 0
        self.passive_failures = 0  # consecutive, of live traffic, towards `fall`
        self.first_chance = False  # DOWN, but UP on the next success (never proven bad)
        self.last_result: CheckResult | None = None
        self.last_check: float | None = None
        self.last_change = time.time()
        self.change_reason = ""
        self.task: asyncio.Task | None = None

    def status(self) -> ServerStatus:
        result = self.last_result
        return ServerStatus(
            backend_id=self.backend_id, server_key=self.server_key, check=self.check.type,
            health=self.health, last_ok=result.ok if result else None,
            last_reason=result.reason if result else "", last_check=self.last_check,
            last_duration=result.duration if result else None, last_change=self.last_change,
            change_reason=self.change_reason, successes=self.successes, failures=self.failures)


class HealthMonitor:
    def __init__(self, on_change: OnChange) -> None:
        self._on_change = on_change
        self._watches: dict[ServerId, ServerWatch] = {}
        self._closed = False

    # ------------------------------------------------------------ configuration

    def update(self, backends: Iterable[BackendSpec]) -> None:
        """Start, restart or stop checks to match `backends` (call from the event loop)."""
        if self._closed:
            raise RuntimeError("HealthMonitor is closed")
        wanted: dict[ServerId, tuple[ServerSpec, HealthCheckSpec]] = {}
        for backend in backends:
            for server in backend.servers:
                wanted[(backend.id, server.key)] = (server, backend.health_check)
        for server_id in self._watches.keys() - wanted.keys():
            self._stop(self._watches.pop(server_id))
        for server_id, (server, check) in wanted.items():
            watch = self._watches.get(server_id)
            if watch is None:
                self._watches[server_id] = watch = ServerWatch(server_id[0], server, check)
                self._start_new(watch)
            elif watch.check != check:
                self._restart(watch, check)

    def _start_new(self, watch: ServerWatch) -> None:
        if watch.check.type is CheckType.NONE:
            self._set_initial(watch, Health.UNCHECKED, "no health check")
            return
        watch.successes, watch.first_chance = watch.check.rise - 1, True
        self._set_initial(watch, Health.DOWN, "new server, waiting for its first check")
        self._spawn(watch)

    def _restart(self, watch: ServerWatch, check: HealthCheckSpec) -> None:
        self._stop(watch)
        watch.check = check
        watch.successes = watch.failures = watch.passive_failures = 0
        watch.first_chance = False
        if check.type is CheckType.NONE:
            if watch.health is not Health.UNCHECKED:
                self._set_initial(watch, Health.UNCHECKED, "health check turned off")
            return
        if watch.health is Health.DOWN:
            watch.successes, watch.first_chance = check.rise - 1, True
        elif watch.health is Health.UNCHECKED:
            self._set_initial(watch, Health.UP, "health check turned on, kept in rotation")
        self._spawn(watch)

    def _set_initial(self, watch: ServerWatch, health: Health, reason: str) -> None:
        watch.health = health
        watch.last_change = time.time()
        watch.change_reason = reason
        log.debug("backend %s server %s %s: %s", watch.backend_id, watch.server_key, health, reason)
        self._notify(watch, reason)

    def _spawn(self, watch: ServerWatch) -> None:
        first_delay = random.uniform(0, min(watch.check.interval_ms / 1000, FIRST_CHECK_SPREAD_S))
        check = watch.check
        if check.type is CheckType.TCP and not check.send_proxy:
            watch.task = TcpProbeLoop(watch.address, check.port or watch.port, check.interval_ms / 1000,
                                      check.timeout_ms / 1000, first_delay,
                                      lambda result: self._record(watch, result))
            return
        watch.task = asyncio.get_running_loop().create_task(
            self._check_forever(watch, first_delay),
            name=f"health {watch.backend_id} {watch.server_key}")

    @staticmethod
    def _stop(watch: ServerWatch) -> None:
        if watch.task is not None:
            watch.task.cancel()
            watch.task = None

    # ------------------------------------------------------------ checking

    async def _check_forever(self, watch: ServerWatch, first_delay: float) -> None:
        loop = asyncio.get_running_loop()
        check = watch.check
        interval = check.interval_ms / 1000
        port = check.port or watch.port
        await asyncio.sleep(first_delay)
        next_start = loop.time()
        next_gap = random.uniform(0, interval)  # random phase, then a steady interval
        while True:
            self._record(watch, await run_check(check, watch.address, port))
            next_start += next_gap
            next_gap = interval
            delay = next_start - loop.time()
            if delay < 0:  # a check slower than the interval: carry on, no catch-up burst
                next_start, delay = loop.time(), 0
            await asyncio.sleep(delay)

    def _record(self, watch: ServerWatch, result: CheckResult) -> None:
        watch.last_result = result
        watch.last_check = time.time()
        check = watch.check
        first_chance, watch.first_chance = watch.first_chance, False
        if result.ok:
            watch.failures = 0
            watch.successes = min(watch.successes + 1, check.rise)
            if watch.health is Health.DOWN and watch.successes >= check.rise:
                passed = "first check passed" if first_chance else f"{watch.successes}/{check.rise} checks passed"
                self._transition(watch, Health.UP, f"{passed}: {result.reason}")
        else:
            watch.successes = 0
            watch.failures = min(watch.failures + 1, check.fall)
            if watch.health is Health.UP and watch.failures >= check.fall:
                self._transition(watch, Health.DOWN, f"{watch.failures}/{check.fall} checks failed: {result.reason}")

    def report_passive_failure(self, backend_id: int, server_key: str, reason: str) -> bool:
        """The data plane saw this server fail live traffic; True if that was the `fall`th
        failure in a row and took it DOWN.

        Ignored unless the server's check has `passive` set and is an active check (with
        no active check, nothing could ever bring the server back)."""
        watch = self._watches.get((backend_id, server_key))
        if watch is None or watch.task is None or not watch.check.passive:
            return False
        watch.successes, watch.first_chance = 0, False
        watch.passive_failures = min(watch.passive_failures + 1, watch.check.fall)
        if watch.health is not Health.UP or watch.passive_failures < watch.check.fall:
            return False
        self._transition(watch, Health.DOWN, f"passive: {watch.check.fall} failures in a row, the last: {reason}")
        return True

    def report_passive_ok(self, backend_id: int, server_key: str) -> None:
        """The server answered live traffic well again: its passive count starts over."""
        watch = self._watches.get((backend_id, server_key))
        if watch is not None:
            watch.passive_failures = 0

    def _transition(self, watch: ServerWatch, health: Health, reason: str) -> None:
        watch.health = health
        watch.passive_failures = 0
        watch.last_change = time.time()
        watch.change_reason = reason
        level = logging.INFO if health is Health.UP else logging.WARNING
        log.log(level, "backend %s server %s is %s: %s", watch.backend_id, watch.server_key, health, reason,
                extra={"backend": watch.backend_id, "server": watch.server_key})
        self._notify(watch, reason)

    def _notify(self, watch: ServerWatch, reason: str) -> None:
        try:
            self._on_change(watch.backend_id, watch.server_key, watch.health, reason)
        except Exception:  # a failing consumer must not stop the checks
            log.exception("on_change failed for backend %s server %s", watch.backend_id, watch.server_key)

    # ------------------------------------------------------------ reading

    def status(self) -> dict[ServerId, ServerStatus]:
        return {server_id: watch.status() for server_id, watch in self._watches.items()}

    def health(self, backend_id: int, server_key: str) -> Health | None:
        watch = self._watches.get((backend_id, server_key))
        return watch.health if watch else None

    async def close(self) -> None:
        self._closed = True
        tasks = [w.task for w in self._watches.values() if isinstance(w.task, asyncio.Task)]
        for watch in self._watches.values():
            self._stop(watch)
        await asyncio.gather(*tasks, return_exceptions=True)
