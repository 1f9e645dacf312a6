"""The XDP program against the packet fixtures of tests/xdp_fixtures.py: one
BPF_PROG_TEST_RUN per packet, in a testbed's LB namespace (so bpf_fib_lookup sees the
real routes and neighbours), comparing verdict, output bytes and reason counters."""
import ctypes as ct
import os

import pytest
from scapy.layers.l2 import Ether

from tests.xdp_fixtures import (CASES, SMALL_CONNTRACK, SMALL_HALFOPEN, SYN_FLOOD_PER_CPU,
                                VERDICTS, Case, Send, World)

pytestmark = pytest.mark.xdp


@pytest.fixture(scope="module")
def world():
    from control.testbed import Testbed
    from lbfast.xdp import XdpDataplane, remove_pins

    pin_dir = f"/sys/fs/bpf/lbfast-fixtures-{os.getpid()}"
    with Testbed(backends=2) as tb:
        dp = tb.lb.in_ns(lambda: XdpDataplane(
            [], pin_dir=pin_dir,
            constants={"CONNTRACK_SIZE": SMALL_CONNTRACK, "CONNTRACK6_SIZE": SMALL_CONNTRACK,
                       "HALFOPEN_SIZE": SMALL_HALFOPEN, "HALFOPEN6_SIZE": SMALL_HALFOPEN,
                       "SYN_FLOOD_PER_CPU": SYN_FLOOD_PER_CPU}))
        try:
            yield World(tb, dp)
        finally:
            dp.close()
            remove_pins(pin_dir)


def clear_flow_state(dp) -> None:
    """Empty conntrack, half-open, sticky and throttle tables; zero cursors, SYN rates
    and open counts."""
    for name in ("conntrack", "conntrack6", "halfopen", "halfopen6", "sticky", "throttle"):
        m = dp.maps[name]
        for key in list(m.keys()):
            m.delete(key)
    for name in ("rr_cursor", "snat_cursor", "syn_rate", "ct_events"):
        m = dp.maps[name]
        for i in range(m_size(dp, name)):
            m.zero(ct.c_uint32(i))
    dp.maps["active_conns"].zero(ct.c_uint32(0))


def m_size(dp, name: str) -> int:
    sizes = {"snat_cursor": 1, "syn_rate": int(dp.consts["MAX_FRONTENDS"]),
             "ct_events": int(dp.consts["EVENT_COUNT"])}
    return sizes.get(name, int(dp.consts["MAX_BACKENDS"]))


def reason_count(dp, name: str) -> int:
    return dp.stats()["reasons"][name]


def send(w: World, s: Send) -> tuple[int, bytes]:
    from lbfast.xdp.syscall import prog_test_run

    ifname = w.tb.lb_client_if if s.ingress == "client" else w.tb.lb_backend_ifs[int(s.ingress[1:])]
    verdict, out, _ = prog_test_run(w.dp.program_fd, bytes(s.packet), w.tb.lb.ifindex(ifname))
    return verdict, out


def describe(frame: bytes) -> str:
    return Ether(frame).show(dump=True)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fixture(world: World, case: Case):
    def run():
        os.sched_setaffinity(0, {0})     # deterministic per-CPU cursors and SNAT ports
        frontends = case.frontends(world)
        world.dp.apply(frontends)
        for be in {fe.backend.id: fe.backend for fe in frontends}.values():
            for server in be.servers:
                world.dp.set_server_health(be.id, server.key, True)
        clear_flow_state(world.dp)
        for packet in case.before:
            send(world, packet(world))
        if case.setup:
            case.setup(world)
        counted = reason_count(world.dp, case.reason) if case.reason else 0

        verdict, out = send(world, case.packet(world))

        assert VERDICTS[verdict] == VERDICTS[case.verdict], case.description
        if case.expected is not None:
            want = bytes(case.expected(world))
            assert out == want, (f"{case.description}\n--- got\n{describe(out)}\n"
                                 f"--- expected\n{describe(want)}")
        if case.reason:
            assert reason_count(world.dp, case.reason) == counted + 1, case.reason
        if case.check:
            case.check(world)

    world.tb.lb.in_ns(run)


def test_compiled_maps_match_the_python_view(world: World):
    """Every pinned map has the type, key/value sizes and entries lbfast/xdp/maps.py
    expects (the check a restarted daemon makes before reusing a pin)."""
    from lbfast.xdp import loader
    from lbfast.xdp.maps import MAPS

    pin_dir = str(world.dp.consts["PIN_DIR"])
    for spec in MAPS:
        assert loader.pin_mismatch(os.path.join(pin_dir, spec.name), spec.name,
                                   world.dp.consts) is None, spec.name
