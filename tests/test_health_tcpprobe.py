"""The C TCP prober (lbfast._tcpprobe) behind TcpProbeLoop: results and reasons, timeouts,
IPv6, and no fd left behind by cancel."""
import asyncio
import os
import socket

import pytest
import uvloop

from control.health import tcp_probe
from control.health.checks import CheckResult
from control.health.tcp_probe import TcpProbeLoop
from lbfast._tcpprobe import TIMEOUT, TcpProber
from lbfast.hostports import HOST_PORT_MAX, HOST_PORT_MIN


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def refused_port(family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
    with socket.socket(family) as sock:    # bound, never listening: the kernel refuses it
        sock.bind((host, 0))
        return sock.getsockname()[1]


class Tarpit:
    """A listener whose accept queue is full: later SYNs are dropped, so connects hang."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(4):    # enough to fill a backlog of 0 (+1) on any kernel
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(filler)

    def close(self) -> None:
        for sock in self.fillers + [self.listener]:
            sock.close()


def probe_once(address: str, port: int, timeout: float = 0.3, interval: float = 1.0
               ) -> tuple[CheckResult, TcpProbeLoop]:
    async def scenario():
        results: asyncio.Queue = asyncio.Queue()
        probe = TcpProbeLoop(address, port, interval, timeout, 0.0, results.put_nowait)
        try:
            return await asyncio.wait_for(results.get(), 5), probe
        finally:
            probe.cancel()
    return uvloop.run(scenario())


@pytest.mark.parametrize("host, family", [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)])
def test_listening_port_connects_from_the_host_port_range(host, family):
    """The probe leaves from lbfast.hostports' range, where the XDP program never puts a
    client flow."""
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen(16)
        result, _ = probe_once(host, listener.getsockname()[1])
        conn, peer = listener.accept()
        conn.close()
    assert result.ok and result.reason == "connected"
    assert 0 <= result.duration < 0.1
    assert HOST_PORT_MIN <= peer[1] <= HOST_PORT_MAX, peer


@pytest.mark.parametrize("host, family", [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)])
def test_refused_port_reports_the_errno(host, family):
    result, _ = probe_once(host, refused_port(family, host))
    assert not result.ok
    assert result.reason == f"connect: {os.strerror(111)}"  # ECONNREFUSED


def test_tarpit_times_out_with_the_timeout_in_the_reason():
    tarpit = Tarpit()
    try:
        result, _ = probe_once("127.0.0.1", tarpit.port, timeout=0.2)
    finally:
        tarpit.close()
    assert not result.ok and result.reason == "timeout after 200 ms"
    assert 0.19 < result.duration < 0.5


def test_checks_repeat_every_interval_after_the_random_phase():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)

        async def scenario():
            loop = asyncio.get_running_loop()
            times = []
            probe = TcpProbeLoop("127.0.0.1", listener.getsockname()[1], 0.1, 0.1, 0.0,
                                 lambda result: times.append(loop.time()))
            await asyncio.sleep(0.75)
            probe.cancel()
            return times
        times = uvloop.run(scenario())
    gaps = [b - a for a, b in zip(times[1:], times[2:])]
    assert 5 <= len(times) <= 9
    assert all(0.085 < gap < 0.13 for gap in gaps), gaps   # steady after the phase


def test_cancel_with_a_pending_probe_leaves_no_fd():
    tarpit = Tarpit()
    try:
        async def scenario():
            before = open_fds()
            probes = [TcpProbeLoop("127.0.0.1", tarpit.port, 1.0, 5.0, 0.0, lambda r: None)
                      for _ in range(20)]
            await asyncio.sleep(0.1)      # every connect is in flight, stuck on a dropped SYN
            assert open_fds() >= before + 20
            for probe in probes:
                probe.cancel()
            assert not tcp_probe._drivers    # the last cancel released the epoll fd
            return before, open_fds()
        before, after = uvloop.run(scenario())
    finally:
        tarpit.close()
    assert after == before


def test_prober_reports_timeout_and_frees_its_slots():
    tarpit = Tarpit()
    prober = TcpProber()
    try:
        slot = prober.add("key", socket.AF_INET, socket.inet_aton("127.0.0.1"), tarpit.port, 0,
                          1.0, 0.05, 0.0, 1.0)
        results, delay = prober.run()
        assert results == [] and 0 < delay <= 0.051
        while not results:
            results, delay = prober.run()
        [(key, error, duration)] = results
        assert key == "key" and error == TIMEOUT and duration >= 0.05
        assert 0.9 < delay <= 1.0      # the next check, an interval after the first
        prober.remove(slot)
        assert len(prober) == 0 and prober.run() == ([], None)
        with pytest.raises(ValueError):
            prober.add("key", socket.AF_INET6, socket.inet_aton("127.0.0.1"), 1, 0, 1.0, 1.0, 0.0, 1.0)
    finally:
        tarpit.close()
