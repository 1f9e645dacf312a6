"""HealthMonitor against real TCP servers: first-check start, fall/rise transitions,
jitter, state kept across update(), passive failures, and a blackholed server."""
import asyncio
import logging
import time
from dataclasses import replace

import uvloop

from control.health import HealthMonitor
from lbfast.enums import CheckType, Health
from lbfast.spec import BackendSpec, HealthCheckSpec, ServerSpec

FAST = HealthCheckSpec(type=CheckType.TCP, interval_ms=100, timeout_ms=200, fall=3, rise=2)


def run(coro):
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def backend(*servers: ServerSpec, check: HealthCheckSpec = FAST, backend_id: int = 1) -> BackendSpec:
    return BackendSpec(id=backend_id, uuid=f"uuid-{backend_id}", name=f"b{backend_id}",
                       health_check=check, servers=servers)


class Events:
    """on_change calls, with the loop time they came at."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, int, str, Health, str]] = []

    def __call__(self, backend_id: int, server_key: str, health: Health, reason: str) -> None:
        self.seen.append((time.monotonic(), backend_id, server_key, health, reason))

    def of(self, server_key: str) -> list[tuple[Health, str]]:
        return [(h, r) for _, _, k, h, r in self.seen if k == server_key]

    async def wait(self, server_key: str, health: Health, timeout: float = 3.0) -> tuple[float, str]:
        """Time and reason of the next transition of server_key to health."""
        start = len(self.seen)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, _, key, h, reason in self.seen[start:]:
                if key == server_key and h is health:
                    return at, reason
            await asyncio.sleep(0.005)
        raise AssertionError(f"{server_key} not {health} within {timeout} s; events: {self.seen}")


class Listener:
    """A real TCP server on a fixed loopback port that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = 0
        self.server: asyncio.Server | None = None
        self.accepted: list[float] = []

    async def start(self) -> "Listener":
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _accept(self, reader, writer) -> None:
        self.accepted.append(asyncio.get_running_loop().time())
        writer.close()

    @property
    def spec(self) -> ServerSpec:
        return ServerSpec(id=self.port, address="127.0.0.1", port=self.port)


async def watch_counts(monitor: HealthMonitor, server_id, until: asyncio.Future) -> list[tuple]:
    """(health, successes, failures) as polled every 5 ms until `until` is done."""
    seen = []
    while not until.done():
        s = monitor.status()[server_id]
        if not seen or seen[-1] != (s.health, s.successes, s.failures):
            seen.append((s.health, s.successes, s.failures))
        await asyncio.sleep(0.005)
    return seen


def test_new_server_starts_down_and_is_up_after_its_first_check():
    async def scenario():
        listener = await Listener().start()
        events = Events()
        monitor = HealthMonitor(events)
        try:
            started = time.monotonic()
            monitor.update([backend(listener.spec)])
            key = listener.spec.key
            assert events.of(key) == [(Health.DOWN, "new server, waiting for its first check")]
            at, reason = await events.wait(key, Health.UP)
            assert at - started < 0.5  # first check within min(interval, 1 s), not after rise
            assert reason == "first check passed: connected"
            status = monitor.status()[(1, key)]
            assert status.health is Health.UP and status.last_ok and status.last_reason == "connected"
            assert status.last_check is not None and status.last_change >= started - 1
        finally:
            await monitor.close()
    run(scenario())


def test_fall_then_rise_with_one_log_line_per_transition(caplog):
    caplog.set_level(logging.INFO, logger="lbfast.health")

    async def scenario():
        listener = await Listener().start()
        events = Events()
        monitor = HealthMonitor(events)
        key = listener.spec.key
        try:
            monitor.update([backend(listener.spec)])
            await events.wait(key, Health.UP)
            await listener.stop()
            stopped = time.monotonic()
            down = asyncio.ensure_future(events.wait(key, Health.DOWN))
            counts = await watch_counts(monitor, (1, key), down)
            at, reason = down.result()
            assert reason == "3/3 checks failed: connect: Connection refused"
            assert (Health.UP, 0, 1) in counts and (Health.UP, 0, 2) in counts
            assert 0.15 < at - stopped < 1.0  # three failures, 100 ms apart

            await listener.start()
            restarted = time.monotonic()
            up = asyncio.ensure_future(events.wait(key, Health.UP))
            counts = await watch_counts(monitor, (1, key), up)
            at, reason = up.result()
            assert reason == "2/2 checks passed: connected"
            assert (Health.DOWN, 1, 0) in counts
            assert 0.05 < at - restarted < 1.0
        finally:
            await monitor.close()
    run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "lbfast.health"]
    assert len(lines) == 3, lines  # UP, DOWN, UP: the initial state is not a transition
    assert "DOWN: 3/3 checks failed" in lines[1] and caplog.records[1].levelno == logging.WARNING


def test_new_server_failing_its_first_check_needs_rise_successes():
    async def scenario():
        listener = await Listener().start()
        await listener.stop()  # the port is known and refused
        events = Events()
        monitor = HealthMonitor(events)
        key = listener.spec.key
        try:
            monitor.update([backend(listener.spec)])
            while monitor.status()[(1, key)].failures == 0:
                await asyncio.sleep(0.005)
            assert monitor.status()[(1, key)].last_reason == "connect: Connection refused"
            await listener.start()
            up = asyncio.ensure_future(events.wait(key, Health.UP))
            counts = await watch_counts(monitor, (1, key), up)
            assert (Health.DOWN, 1, 0) in counts
            assert [h for h, _ in events.of(key)] == [Health.DOWN, Health.UP]
        finally:
            await monitor.close()
    run(scenario())


def test_unchecked_servers_run_no_loop_and_a_failing_consumer_stops_nothing():
    async def scenario():
        listener = await Listener().start()
        calls = []

        def on_change(*args):
            calls.append(args)
            raise RuntimeError("consumer bug")
        monitor = HealthMonitor(on_change)
        try:
            tasks_before = len(asyncio.all_tasks())
            unchecked = ServerSpec(id=9, address="127.0.0.9", port=9)
            monitor.update([backend(unchecked, check=HealthCheckSpec(), backend_id=2)])
            assert len(asyncio.all_tasks()) == tasks_before
            assert monitor.status()[(2, unchecked.key)].health is Health.UNCHECKED
            monitor.update([backend(unchecked, check=HealthCheckSpec(), backend_id=2),
                            backend(listener.spec)])
            deadline = time.monotonic() + 2
            while monitor.health(1, listener.spec.key) is not Health.UP and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert monitor.health(1, listener.spec.key) is Health.UP
            assert [c[2] for c in calls] == [Health.UNCHECKED, Health.DOWN, Health.UP]
        finally:
            await monitor.close()
    run(scenario())


def test_update_keeps_state_of_unchanged_servers():
    async def scenario():
        alive = await Listener().start()
        dead = await Listener().start()
        await dead.stop()
        events = Events()
        monitor = HealthMonitor(events)

        def config(check=FAST):
            # built afresh, as a reload does: equal, not identical, specs
            return [backend(ServerSpec(id=1, address="127.0.0.1", port=alive.port),
                            ServerSpec(id=2, address="127.0.0.1", port=dead.port), check=check)]
        try:
            monitor.update(config())
            await events.wait(alive.spec.key, Health.UP)
            while monitor.status()[(1, dead.spec.key)].failures < 2:
                await asyncio.sleep(0.01)
            before = monitor.status()
            tasks = asyncio.all_tasks()
            n_events = len(events.seen)

            for _ in range(3):
                monitor.update(config())
            assert asyncio.all_tasks() == tasks  # the same loops keep running
            await asyncio.sleep(0.35)
            after = monitor.status()
            assert len(events.seen) == n_events
            for server_id, status in before.items():
                assert after[server_id].health is status.health
                assert after[server_id].last_change == status.last_change
                assert after[server_id].last_check > status.last_check  # still being checked
            assert after[(1, dead.spec.key)].health is Health.DOWN  # no flap to UP on reload

            # a changed check is no news about the servers: both keep their state
            slower = HealthCheckSpec(type=CheckType.TCP, interval_ms=150, timeout_ms=200, fall=3, rise=2)
            monitor.update(config(slower))
            await asyncio.sleep(0.4)
            assert len(events.seen) == n_events
            assert monitor.health(1, alive.spec.key) is Health.UP
            assert monitor.health(1, dead.spec.key) is Health.DOWN
            # ... and a DOWN server comes back on the first success of a changed check
            await dead.start()
            monitor.update(config(replace(slower, interval_ms=120)))
            at, reason = await events.wait(dead.spec.key, Health.UP)
            assert reason == "first check passed: connected"

            # removed servers are forgotten, added ones start as new
            added = await Listener().start()
            monitor.update([backend(alive.spec, added.spec, check=slower)])
            assert set(monitor.status()) == {(1, alive.spec.key), (1, added.spec.key)}
            assert events.of(added.spec.key) == [(Health.DOWN, "new server, waiting for its first check")]
            await events.wait(added.spec.key, Health.UP)
        finally:
            await monitor.close()
    run(scenario())


def test_fall_passive_failures_in_a_row_take_the_server_down_until_rise_checks_pass():
    async def scenario():
        listener = await Listener().start()
        events = Events()
        monitor = HealthMonitor(events)
        key = listener.spec.key
        passive = HealthCheckSpec(type=CheckType.TCP, interval_ms=100, timeout_ms=200, fall=3, rise=2,
                                  passive=True)
        try:
            monitor.update([backend(listener.spec, check=passive), backend(listener.spec, backend_id=2)])
            while not monitor.health(1, key) is monitor.health(2, key) is Health.UP:
                await asyncio.sleep(0.005)

            assert not monitor.report_passive_failure(2, key, "HTTP 503")  # check_passive off
            assert monitor.health(2, key) is Health.UP
            assert not monitor.report_passive_failure(1, "127.0.0.1:1", "HTTP 503")  # unknown server

            # fall=3 failures in a row; a good live response in between starts over
            assert not monitor.report_passive_failure(1, key, "HTTP 500")
            assert not monitor.report_passive_failure(1, key, "HTTP 500")
            monitor.report_passive_ok(1, key)
            assert not monitor.report_passive_failure(1, key, "HTTP 500")
            assert not monitor.report_passive_failure(1, key, "HTTP 500")
            assert monitor.health(1, key) is Health.UP
            assert monitor.report_passive_failure(1, key, "HTTP 503 on a live request")
            assert monitor.health(1, key) is Health.DOWN
            assert events.of(key)[-1] == (Health.DOWN, "passive: 3 failures in a row, the last: HTTP 503 on a live request")
            up = asyncio.ensure_future(events.wait(key, Health.UP))
            counts = await watch_counts(monitor, (1, key), up)
            assert (Health.DOWN, 1, 0) in counts  # rise successes, not the first-check shortcut
        finally:
            await monitor.close()
    run(scenario())


def test_check_start_times_are_spread_over_the_interval():
    async def scenario():
        listener = await Listener().start()
        monitor = HealthMonitor(lambda *args: None)
        check = HealthCheckSpec(type=CheckType.TCP, interval_ms=1000, timeout_ms=500, fall=3, rise=2)
        try:
            t0 = asyncio.get_running_loop().time()
            # 200 (backend, server) pairs probing the same listener, so it sees every probe
            monitor.update([backend(listener.spec, check=check, backend_id=i) for i in range(200)])
            await asyncio.sleep(2.5)
        finally:
            await monitor.close()
        return [t - t0 for t in listener.accepted]

    offsets = run(scenario())
    assert 400 <= len(offsets) <= 800
    per_10ms: dict[int, int] = {}
    for offset in offsets:
        per_10ms[int(offset * 100)] = per_10ms.get(int(offset * 100), 0) + 1
    assert max(per_10ms.values()) <= 20  # without jitter: 200 in one bucket
    first_second = {b for b in per_10ms if b < 100}
    assert len(first_second) >= 50  # first checks cover the spread window
    steady = [o for o in offsets if 1.5 <= o < 2.5]
    for tenth in range(10):  # steady-state checks fill every tenth of the interval
        assert sum(1 for o in steady if 1.5 + tenth / 10 <= o < 1.6 + tenth / 10) >= 3


def test_blackholed_server_goes_down_by_timeout_not_hang(testbed_factory):
    tb = testbed_factory(backends=1, servers=("tcp_echo",))
    server_host = tb.backends[0]
    server = ServerSpec(id=1, address=server_host.ip, port=tb.tcp_echo_port)
    check = HealthCheckSpec(type=CheckType.TCP, interval_ms=200, timeout_ms=300, fall=2, rise=2)
    blackhole = (f"table inet lbfast_blackhole {{\n chain input {{\n"
                 f"  type filter hook input priority 0; policy accept;\n"
                 f"  tcp dport {tb.tcp_echo_port} drop\n }}\n}}\n")

    async def scenario():
        events = Events()
        monitor = HealthMonitor(events)
        try:
            monitor.update([backend(server, check=check)])
            await events.wait(server.key, Health.UP)
            server_host.run(["nft", "-f", "-"], input=blackhole)
            dropped = time.monotonic()
            at, reason = await events.wait(server.key, Health.DOWN, timeout=5)
            assert reason == "2/2 checks failed: timeout after 300 ms"
            # fall x (interval or timeout, whichever is longer) plus the phase of the loop
            assert at - dropped < 2 * 0.3 + 0.2 + 0.3
            status = monitor.status()[(1, server.key)]
            assert 0.29 < status.last_duration < 0.5

            while monitor.status()[(1, server.key)].last_check < at:
                await asyncio.sleep(0.01)
            closing = time.monotonic()
            await asyncio.sleep(0.1)  # a check is in flight, stuck on a dropped SYN
            await monitor.close()
            assert time.monotonic() - closing < 0.3
        finally:
            await monitor.close()

    # the event loop runs in a thread that joined the LB namespace: its sockets live there
    tb.lb.in_ns(run, scenario())
    server_host.run(["nft", "delete", "table", "inet", "lbfast_blackhole"])
