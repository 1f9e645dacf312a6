"""XDP control-plane writes: the raw BPF map update rate through lbfast's map access, and
XdpDataplane.apply for 1,000 frontends × 10 servers (every server changed, one changed).
The program is compiled once and loaded, not attached, in the LB namespace of a fresh
testbed, with maps pinned in a directory of its own."""
import ctypes as ct
import functools
import os
import struct

import orjson
import pytest

from bench.e2e.cases import lbfast_xdp, netns

LBS, SERVERS, BATCH = 1000, 10, 1000


@functools.cache
def specs(weight: int, first_weight: int | None = None) -> list:
    from control import config as configfile
    from control.sync import frontend_specs

    lbs = []
    for i in range(LBS):
        servers = [{"address": f"10.200.{1 + s % 2}.2", "port": 10_000 + i * SERVERS + s,
                    "weight": first_weight if first_weight and (i, s) == (0, 0) else weight}
                   for s in range(SERVERS)]
        lbs.append({"name": f"lb{i}", "vip": f"10.{50 + i // 250}.{i % 250}.1",
                    "backends": [{"name": "web", "protocol": "tcp", "servers": servers}],
                    "frontends": [{"name": "web", "port": 80, "backend": "web"}]})
    return frontend_specs(configfile.parse(orjson.dumps({"lbs": lbs})))


@pytest.fixture(scope="module")
def dataplane():
    reason = lbfast_xdp() or netns()
    if reason:
        pytest.skip(reason)
    from control.testbed import Testbed
    from lbfast.xdp import loader
    from lbfast.xdp.dataplane import XdpDataplane

    pin_dir = f"/sys/fs/bpf/lbfast-bench-{os.getpid()}"
    # the program wants powers of two for frontend and server slots
    sizes = {"MAX_FRONTENDS": 1024, "MAX_BACKENDS": LBS + 8, "MAX_SERVERS": 16384}
    with Testbed(backends=2) as tb:
        try:
            dp = tb.lb.in_ns(lambda: XdpDataplane([], pin_dir=pin_dir, constants=sizes))
        except Exception as e:      # the data plane is young: report why, do not fail the suite
            loader.remove_pins(pin_dir)
            pytest.skip(f"XDP data plane not usable here: {type(e).__name__}: {e}")
        try:
            yield dp
        finally:
            dp.close(detach=False)
            loader.remove_pins(pin_dir)


def test_map_update_rate(benchmark, dataplane):
    """1,000 inserts into the conntrack LRU hash (syscall per update)."""
    benchmark.group = f"XDP maps: {BATCH:,} conntrack updates per round"
    m = dataplane.maps["conntrack"]
    size = ct.sizeof(m.key_type)
    keys = [m.key_type.from_buffer_copy(struct.pack("<I", i) + bytes(size - 4)) for i in range(BATCH)]
    value = m.value_type()

    def update():
        for k in keys:
            m.set(k, value)

    benchmark(update)
    for k in keys:
        m.delete(k)


def bench_alternating_applies(benchmark, dataplane, a, b) -> None:
    """Each round applies the other of two configurations: a diff of their difference."""
    benchmark.group = f"XDP apply: {LBS:,} frontends × {SERVERS} servers"
    dataplane.apply(a)
    turn = [b, a]

    def apply():
        dataplane.apply(turn[0])
        turn.reverse()

    benchmark(apply)


def test_apply_every_server_changed(benchmark, dataplane):
    bench_alternating_applies(benchmark, dataplane, specs(100), specs(50))


def test_apply_one_server_changed(benchmark, dataplane):
    bench_alternating_applies(benchmark, dataplane, specs(100), specs(100, first_weight=50))
