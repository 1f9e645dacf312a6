"""The userspace L4 proxy on the netns testbed: a client namespace reaches the VIP on
the LB namespace, which forwards to backends in their own namespaces (IPv4 and IPv6)."""
from collections import Counter

import pytest

from tests.lbrun import Daemon

pytestmark = pytest.mark.netns


def request(tb, addr: str, port: int) -> str:
    with tb.client.connect(addr, port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.rpartition(b"\r\n\r\n")[2].decode()


def config(tb, servers: list[str]) -> dict:
    return {"dataplane": {"mode": "userspace"},
            "lbs": [{"name": "t", "vip": tb.vip,
                     "backends": [{"name": "pool", "forward_port": 8080,
                                   "servers": [{"address": a} for a in servers]}],
                     "frontends": [{"name": "f", "port": 80, "backend": "pool"}]}]}


def test_client_namespace_reaches_both_backends_through_the_lb(testbed, tmp_path):
    testbed.add_vip_local()
    d = Daemon(tmp_path, config(testbed, [b.ip for b in testbed.backends]),
               wrap=["ip", "netns", "exec", testbed.lb.name])
    try:
        got = Counter(request(testbed, testbed.vip, 80) for _ in range(100))
        assert got == {"b0": 50, "b1": 50}
    finally:
        d.close()


def test_ipv6_backends_behind_an_ipv4_vip(testbed, tmp_path):
    testbed.add_vip_local()
    d = Daemon(tmp_path, config(testbed, [b.ip6 for b in testbed.backends]),
               wrap=["ip", "netns", "exec", testbed.lb.name])
    try:
        got = Counter(request(testbed, testbed.vip, 80) for _ in range(20))
        assert got == {"b0": 10, "b1": 10}
        servers = d.status()["frontends"][0]["servers"]
        assert {s["key"] for s in servers} == {f"[{b.ip6}]:8080" for b in testbed.backends}
    finally:
        d.close()
