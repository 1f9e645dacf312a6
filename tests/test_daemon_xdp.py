"""The daemon with dataplane.mode xdp/auto on the netns testbed: L4 frontends are
forwarded by the XDP program (its counters prove it), health verdicts reach the maps,
reloads keep flows, and auto falls back to the userspace proxy with a reason."""
import os
import time
from collections import Counter

import pytest

from control.testbed import ethtool_offload_off, gro_on
from lbfast.xdp import remove_pins
from tests.lbrun import Daemon, wait_for

pytestmark = pytest.mark.xdp


def fetch(tb, path="/") -> str:
    with tb.client.connect(tb.vip, 80) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.rpartition(b"\r\n\r\n")[2].decode()


def post(tb, i: int, path: str) -> None:
    with tb.lb.connect(tb.backends[i].ip, 8080) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        while s.recv(4096):
            pass


def config(tb, pin_dir, mode="xdp", interfaces=None, **backend) -> dict:
    return {"dataplane": {"mode": mode, "pin_dir": pin_dir,
                          "interfaces": [tb.lb_client_if, *tb.lb_backend_ifs] if interfaces is None else interfaces},
            "lbs": [{"name": "t", "vip": tb.vip,
                     "backends": [{"name": "web", "forward_port": 8080,
                                   "servers": [{"address": b.ip} for b in tb.backends], **backend}],
                     "frontends": [{"name": "http", "port": 80, "backend": "web"}]}]}


@pytest.fixture
def xdp_testbed(testbed):
    for host in (testbed.client, *testbed.backends):
        gro_on(host, host.ifname)
        ethtool_offload_off(host, host.ifname)
    pin_dir = f"/sys/fs/bpf/lbfast-daemon-{os.getpid()}-{id(testbed)}"
    yield testbed, pin_dir
    remove_pins(pin_dir)


def test_l4_frontend_goes_through_xdp(xdp_testbed, tmp_path):
    tb, pin_dir = xdp_testbed
    d = Daemon(tmp_path, config(tb, pin_dir), wrap=["ip", "netns", "exec", tb.lb.name])
    try:
        st = d.status()
        assert st["dataplane"]["name"] == "xdp" and "XDP (native) on" in st["dataplane"]["reason"]
        got = Counter(fetch(tb) for _ in range(200))
        assert got == {"b0": 100, "b1": 100}
        stats = d.stats()
        f = [x for x in stats["frontends"] if x["name"] == "http"][0]
        assert f["total"] == 200 and f["packets_in"] > 600 and f["bytes_out"] > 0
        assert sum(s["total"] for s in stats["backends"]["1"]) == 200
        flows = stats["xdp"]["flow_state"]    # each flow half-open, then promoted
        assert flows["events"]["halfopen_created"] == 200 and flows["events"]["promoted"] == 200
        assert flows["half_open"]["entries"] == 0 and flows["conntrack"]["entries"] > 0
        assert flows["conntrack"]["capacity"] >= 65536 and f["syn_flood"] == 0
        # the VIP is not on the LB: only XDP can have answered
        addrs = tb.lb.run(["ip", "-o", "addr"]).stdout
        assert tb.vip not in addrs
    finally:
        d.close()
    # stopping the daemon detaches the program: the VIP no longer answers
    with pytest.raises(OSError):
        tb.client.connect(tb.vip, 80, timeout=1).close()


def test_health_verdicts_reach_the_xdp_maps(xdp_testbed, tmp_path):
    tb, pin_dir = xdp_testbed
    cfg = config(tb, pin_dir, health_check={"type": "http", "http_uri": "/health", "interval_ms": 300,
                                            "timeout_ms": 200, "attempts": 2, "rise": 2})
    d = Daemon(tmp_path, cfg, wrap=["ip", "netns", "exec", tb.lb.name])
    try:
        wait_for(lambda: all(s.get("health") == "UP" for s in d.status()["frontends"][0]["servers"]),
                 what="servers up")
        post(tb, 0, "/health/down")
        t0 = time.monotonic()
        wait_for(lambda: any(s.get("health") == "DOWN" for s in d.status()["frontends"][0]["servers"]),
                 timeout=5, what="b0 down")
        assert time.monotonic() - t0 < 0.3 * 2 + 0.2 + 0.5
        assert Counter(fetch(tb) for _ in range(30)) == {"b1": 30}
        post(tb, 0, "/health/up")
        wait_for(lambda: all(s.get("health") == "UP" for s in d.status()["frontends"][0]["servers"]),
                 timeout=5, what="b0 back")
        assert set(Counter(fetch(tb) for _ in range(30))) == {"b0", "b1"}
    finally:
        d.close()


def test_reload_keeps_established_flows(xdp_testbed, tmp_path):
    tb, pin_dir = xdp_testbed
    d = Daemon(tmp_path, config(tb, pin_dir), wrap=["ip", "netns", "exec", tb.lb.name])
    try:
        s = tb.client.connect(tb.vip, 80)
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        first = s.recv(4096)
        assert b"200" in first
        for algorithm in ("leastconn", "source", "roundrobin"):
            d.write(config(tb, pin_dir, algorithm=algorithm))
            d.reload()
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert b"200" in s.recv(4096)
        s.close()
        assert d.status()["reloads"] == 3
    finally:
        d.close()


def test_auto_without_interfaces_runs_userspace_and_says_why(testbed, tmp_path):
    testbed.add_vip_local()
    cfg = config(testbed, "/sys/fs/bpf/unused", mode="auto", interfaces=[])
    d = Daemon(tmp_path, cfg, wrap=["ip", "netns", "exec", testbed.lb.name])
    try:
        st = d.status()
        assert st["dataplane"]["name"] == "userspace"
        assert "no dataplane.interfaces configured" in st["dataplane"]["reason"]
        assert fetch(testbed) in ("b0", "b1")
    finally:
        d.close()


def test_xdp_mode_that_cannot_attach_is_a_clear_error(testbed, tmp_path):
    cfg = config(testbed, "/sys/fs/bpf/unused", interfaces=["nosuchdev0"])
    with pytest.raises(RuntimeError) as e:
        Daemon(tmp_path, cfg, wrap=["ip", "netns", "exec", testbed.lb.name])
    assert "dataplane.mode: xdp cannot run here" in str(e.value) and "nosuchdev0" in str(e.value)


def test_twenty_reloads_under_load_on_the_xdp_path(xdp_testbed, tmp_path):
    import threading
    tb, pin_dir = xdp_testbed
    d = Daemon(tmp_path, config(tb, pin_dir), wrap=["ip", "netns", "exec", tb.lb.name])
    stop = threading.Event()
    failures, served = [], []

    def clients():
        deadline = time.monotonic() + 60        # bounded: stops by itself
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                served.append(fetch(tb))
            except OSError as e:
                failures.append(repr(e))

    def stream():                               # one established flow across every reload
        with tb.client.connect(tb.vip, 80) as s:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                if b"200 OK" not in s.recv(4096):
                    failures.append("stream broke")
                    return
                time.sleep(0.01)

    workers = [threading.Thread(target=clients) for _ in range(3)] + [threading.Thread(target=stream)]
    for w in workers:
        w.start()
    try:
        plans = [{}, {"algorithm": "source"}, {"algorithm": "leastconn"}, {"stickiness": "table"},
                 {"servers": [{"address": tb.backends[0].ip}]}]
        for i in range(20):
            cfg = config(tb, pin_dir)
            cfg["lbs"][0]["backends"][0].update(plans[i % len(plans)])
            if i == 10:
                cfg["lbs"][0]["backends"][0]["servers"][0]["weight"] = 999      # invalid: rejected
            d.write(cfg)
            d.sighup_and_wait(f"reload {i}")
            time.sleep(0.1)
        st = d.status()
    finally:
        stop.set()
        for w in workers:
            w.join()
        d.close()
    assert failures == []
    assert st["reloads"] == 19 and st["reload_failures"] == 1
    assert len(served) > 100 and set(served) == {"b0", "b1"}
