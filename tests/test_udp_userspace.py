"""UDP frontends in userspace mode: a real daemon proxies datagrams between clients and two
real UDP echo servers on loopback, with per-client sessions, the backend's algorithm and
stickiness, health, idle expiry and a cap on sessions."""
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest

from control import config as configfile
from control.daemon import Daemon as InProcessDaemon
from control.testbed import stop_processes
from lbfast import maglev
from lbfast.enums import Protocol, ProxyProtocol
from lbfast.hashing import source_slot
from lbfast.spec import BackendSpec, FrontendSpec
from tests.lbrun import Daemon, connectable, wait_for

VIP = "127.0.0.13"
SERVERS = {"a": "127.0.0.21", "b": "127.0.0.22"}    # one address each: same ports, one check port


def free_udp_port(*hosts: str) -> int:
    """A UDP port free on every host (a server's address, or the VIP)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
            try:
                for h in hosts[1:]:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as t:
                        t.bind((h, port))
            except OSError:
                continue
            return port


class UdpEchoServers:
    """control.testbed_servers on one address each: UDP echo answers `<name>:<payload>`,
    HTTP serves /health for the checks (POST /health/down makes it fail)."""

    def __init__(self):
        self.udp = free_udp_port(*SERVERS.values())
        with socket.socket() as s:
            s.bind((SERVERS["a"], 0))
            self.http = s.getsockname()[1]
        self.procs = [subprocess.Popen(
            [sys.executable, "-m", "control.testbed_servers", "--name", name, "--bind", addr,
             "--udp-echo", str(self.udp), "--http", str(self.http), "--parent-pid", str(os.getpid())],
            cwd=Path(__file__).parent.parent) for name, addr in SERVERS.items()]
        for addr in SERVERS.values():      # UDP is bound before HTTP accepts
            wait_for(lambda: connectable(addr, self.http), what=f"echo server on {addr}")

    def health(self, name: str, state: str) -> None:
        req = urllib.request.Request(f"http://{SERVERS[name]}:{self.http}/health/{state}", method="POST")
        urllib.request.urlopen(req, timeout=5).read()

    def close(self) -> None:
        stop_processes(self.procs, grace=5)


@pytest.fixture(scope="module")
def servers():
    s = UdpEchoServers()
    yield s
    s.close()


@pytest.fixture
def run(tmp_path, servers):
    daemons = []

    def start(backend: dict | None = None, **dataplane) -> Daemon:
        port = free_udp_port(VIP)
        cfg = {"dataplane": {"mode": "userspace", **dataplane},
               "lbs": [{"name": "u", "vip": VIP,
                        "backends": [{"name": "pool", "protocol": "udp", "forward_port": servers.udp,
                                      "servers": [{"address": a, "label": n} for n, a in SERVERS.items()],
                                      **(backend or {})}],
                        "frontends": [{"name": "dns", "port": port, "backend": "pool"}]}]}
        where = tmp_path / f"d{len(daemons)}"
        where.mkdir()
        d = Daemon(where, cfg)
        d.port = port
        daemons.append(d)
        return d
    yield start
    for d in daemons:
        d.close()


def http_check(servers: UdpEchoServers) -> dict:
    """Checks every 200 ms on the servers' HTTP port: one failure marks DOWN."""
    return {"type": "http", "http_uri": "/health", "port": servers.http, "interval_ms": 200,
            "timeout_ms": 150, "attempts": 1, "rise": 1}


def client(source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.settimeout(3)
    return s


def roundtrip(s: socket.socket, d: Daemon, payload: bytes = b"ping") -> str:
    """One datagram there and its echo back; returns the name of the server that answered."""
    s.sendto(payload, (VIP, d.port))
    data, sender = s.recvfrom(65535)
    assert sender == (VIP, d.port)          # answered from the VIP, not from the server
    name, _, echoed = data.partition(b":")
    assert echoed == payload
    return name.decode()


def frontend_stats(d: Daemon) -> dict:
    (row,) = d.stats()["frontends"]
    return row


def health(d: Daemon) -> dict:
    by_address = {s["key"].partition(":")[0]: s.get("health") for s in d.status()["frontends"][0]["servers"]}
    return {name: by_address[address] for name, address in SERVERS.items()}


def server_totals(d: Daemon) -> dict:
    return {s["key"].partition(":")[0]: s["total"] for s in d.stats()["backends"]["1"]}


def test_each_client_gets_its_own_replies(run):
    d = run()
    clients = [client() for _ in range(6)]
    for round_ in range(3):                 # interleaved: replies must not cross between clients
        for i, c in enumerate(clients):
            c.sendto(b"c%d-r%d" % (i, round_), (VIP, d.port))
        for i, c in enumerate(clients):
            data, _ = c.recvfrom(65535)
            assert data.partition(b":")[2] == b"c%d-r%d" % (i, round_)
    st = frontend_stats(d)
    sent = sum(len(b"c%d-r%d" % (i, r)) for i in range(6) for r in range(3))
    assert (st["active"], st["total"], st["bytes_in"]) == (6, 6, sent)
    assert st["bytes_out"] == sent + 3 * 6 * len(b"a:")
    (row,) = d.status()["frontends"]
    assert (row["protocol"], row["dataplane"]) == ("udp", "userspace")
    for c in clients:
        c.close()


def test_roundrobin_spreads_sessions_and_a_session_keeps_its_server(run):
    d = run()
    clients = [client() for _ in range(10)]
    first = [roundtrip(c, d) for c in clients]
    assert Counter(first) == {"a": 5, "b": 5}
    again = [roundtrip(c, d, b"more") for c in clients]
    assert again == first
    assert server_totals(d) == {"127.0.0.21": 5, "127.0.0.22": 5}
    for c in clients:
        c.close()


def test_source_algorithm_follows_maglev_for_every_port_of_a_client(run, servers):
    d = run({"algorithm": "source"})
    keys = [f"{a}:{servers.udp}" for a in SERVERS.values()]
    table = maglev.build_table(keys, [100, 100])
    names = dict(zip(keys, SERVERS))
    seen = set()
    for i in range(2, 22):
        src = f"127.0.6.{i}"
        expected = names[keys[table[source_slot(src, len(table))]]]
        clients = [client(src) for _ in range(3)]       # three sessions, one client address
        assert {roundtrip(c, d) for c in clients} == {expected}
        seen.add(expected)
        for c in clients:
            c.close()
    assert seen == {"a", "b"}


def test_table_stickiness_pins_a_client_address_across_sessions(run):
    d = run({"stickiness": "table", "sticky_timeout_ms": 60_000})
    pinned = {}
    for i in range(2, 8):
        src = f"127.0.7.{i}"
        clients = [client(src) for _ in range(4)]       # roundrobin alone would alternate
        got = {roundtrip(c, d) for c in clients}
        assert len(got) == 1, (src, got)
        pinned[src] = got.pop()
        for c in clients:
            c.close()
    assert set(pinned.values()) == {"a", "b"}


def test_a_down_server_gets_no_new_sessions(run, servers):
    d = run({"health_check": http_check(servers)})
    wait_for(lambda: health(d) == {"a": "UP", "b": "UP"}, what="both servers up")
    on_b = None
    while on_b is None:                     # roundrobin: one of two clients lands on b
        c = client()
        if roundtrip(c, d) == "b":
            on_b = c
        else:
            c.close()
    servers.health("b", "down")
    try:
        wait_for(lambda: health(d)["b"] == "DOWN", timeout=5, what="b down")
        before = server_totals(d)
        fresh = [client() for _ in range(8)]
        assert {roundtrip(c, d) for c in fresh} == {"a"}
        assert server_totals(d)["127.0.0.22"] == before["127.0.0.22"]
        assert roundtrip(on_b, d) == "b"    # on_marked_down_action none: its session goes on
    finally:
        servers.health("b", "up")
    for c in [on_b, *fresh]:
        c.close()


def test_idle_sessions_expire_after_udp_session_timeout(run):
    d = run({"udp_session_timeout_ms": 400})
    idle, busy = client(), client()
    first_busy = roundtrip(busy, d)
    roundtrip(idle, d)
    assert frontend_stats(d)["active"] == 2
    deadline = time.monotonic() + 1.2     # three timeouts long
    while time.monotonic() < deadline:    # a datagram every 100 ms keeps `busy`
        assert roundtrip(busy, d) == first_busy
        time.sleep(0.1)
    st = frontend_stats(d)
    assert (st["active"], st["timeouts"], st["total"]) == (1, 1, 2)
    roundtrip(idle, d)                      # the expired client comes back: a new session
    st = frontend_stats(d)
    assert (st["active"], st["total"]) == (2, 3)
    idle.close()
    busy.close()


def test_at_the_session_cap_new_clients_are_dropped_and_counted(run):
    d = run({"udp_session_timeout_ms": 1_000}, udp_sessions_max=3)
    held = [client() for _ in range(3)]
    for c in held:
        roundtrip(c, d)
    late = client()
    late.settimeout(0.5)
    late.sendto(b"anyone?", (VIP, d.port))
    with pytest.raises(TimeoutError):
        late.recvfrom(65535)
    st = frontend_stats(d)
    assert (st["active"], st["capped"]) == (3, 1)
    for c in held:                          # the open sessions still carry datagrams
        roundtrip(c, d)
    wait_for(lambda: frontend_stats(d)["active"] == 0, timeout=5, what="sessions to expire")
    late.settimeout(3)
    roundtrip(late, d)                      # room again: the dropped client is served
    for c in [*held, late]:
        c.close()


@pytest.mark.parametrize("frontend,backend,path", [
    ({"protocol": "udp"}, {"protocol": "tcp", "proxy_protocol": "v1"}, "lbs[0].frontends[0].protocol"),
    ({}, {"protocol": "udp", "proxy_protocol": "v2"}, "lbs[0].backends[0].proxy_protocol"),
])
def test_proxy_protocol_over_udp_is_refused(frontend, backend, path):
    doc = {"lbs": [{"name": "u", "vip": VIP, "backends": [{"name": "pool", **backend}],
                    "frontends": [{"name": "f", "port": 53, "backend": "pool", **frontend}]}]}
    with pytest.raises(configfile.ConfigError) as err:
        configfile.parse(doc)
    assert [p for p, _ in err.value.problems] == [path]


def test_a_frontend_no_data_plane_claims_fails_the_apply(tmp_path):
    """No valid config has one today (validation refuses UDP with PROXY protocol first):
    the daemon's own check is the net under that."""
    backend = BackendSpec(id=1, uuid="b", name="pool", protocol=Protocol.UDP, proxy_protocol=ProxyProtocol.V2)
    orphan = FrontendSpec(id=7, uuid="f", name="orphan", lb_id=3, address=VIP, port=53,
                          protocol=Protocol.UDP, backend=backend)
    served = FrontendSpec(id=8, uuid="g", name="served", lb_id=3, address=VIP, port=54,
                          protocol=Protocol.UDP, backend=BackendSpec(id=2, uuid="c", name="ok"))
    daemon = InProcessDaemon(str(tmp_path / "lbfast.json"), str(tmp_path / "s"), str(tmp_path / "p"))
    with pytest.raises(configfile.ConfigError) as err:
        daemon._check_claimed([served, orphan])
    assert err.value.problems == [("frontend 'orphan' (lb 3, udp port 53)", "no data plane serves it")]


def test_a_reload_keeps_the_socket_and_its_sessions(run):
    d = run()
    c = client()
    before = roundtrip(c, d)
    cfg = orjson.loads(d.path.read_bytes())
    cfg["lbs"][0]["backends"][0]["udp_session_timeout_ms"] = 20_000     # the backend changes
    d.write(cfg)
    d.reload()
    assert [roundtrip(c, d, b"after") for _ in range(3)] == [before] * 3
    assert frontend_stats(d)["total"] == 1
    c.close()


def test_shutdown_sessions_moves_a_down_servers_clients_on(run, servers):
    d = run({"health_check": http_check(servers), "on_marked_down_action": "shutdown_sessions",
             "algorithm": "first"})
    wait_for(lambda: health(d) == {"a": "UP", "b": "UP"}, what="both servers up")
    c = client()
    assert roundtrip(c, d) == "a"
    servers.health("a", "down")
    try:
        wait_for(lambda: frontend_stats(d)["active"] == 0, timeout=5, what="a's session shut down")
        assert roundtrip(c, d) == "b"       # the same client address:port, a new session
    finally:
        servers.health("a", "up")
    c.close()


def test_a_closed_server_port_ends_the_session_and_counts_a_failure(tmp_path, servers):
    """ICMP port unreachable comes back on the session's connected socket: the session ends,
    the server's failure is counted and the client's next datagram goes elsewhere."""
    closed = "127.0.0.25"                   # nothing listens there
    port = free_udp_port(VIP)
    d = Daemon(tmp_path, {"dataplane": {"mode": "userspace"}, "lbs": [{"name": "u", "vip": VIP,
               "backends": [{"name": "pool", "protocol": "udp", "forward_port": servers.udp,
                             "servers": [{"address": closed}, {"address": SERVERS["a"]}]}],
               "frontends": [{"name": "f", "port": port, "backend": "pool"}]}]})
    d.port = port
    try:
        c = client()
        c.settimeout(0.5)
        answers = []
        for _ in range(3):                  # the first datagram goes to the closed port, unanswered
            try:
                answers.append(roundtrip(c, d))
            except TimeoutError:
                pass
        assert answers and set(answers) == {"a"}
        failed = {s["key"].partition(":")[0]: s["failed"] for s in d.stats()["backends"]["1"]}
        assert failed == {closed: 1, SERVERS["a"]: 0}
        c.close()
    finally:
        d.close()
