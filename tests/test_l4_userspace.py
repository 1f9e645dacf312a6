"""The userspace L4 proxy with real traffic on loopback: every algorithm, weights, node
modes, table stickiness, connect failover, timeouts, half-close and large transfers."""
import socket
import threading
import time
from collections import Counter

import pytest

from lbfast import maglev
from lbfast.hashing import source_slot
from tests.lbrun import Backends, Daemon, ask, free_port, tcp_config

VIP = "127.0.0.10"


@pytest.fixture(scope="module")
def backends():
    b = Backends(["a", "b", "c"])
    yield b
    b.close()


@pytest.fixture
def run(tmp_path):
    daemons = []

    def start(servers, **backend):
        port = free_port(VIP)
        d = Daemon(tmp_path / f"d{len(daemons)}", tcp_config(VIP, port, servers, **backend))
        d.port = port
        daemons.append(d)
        return d
    (tmp_path / "d0").mkdir()
    for i in range(1, 4):
        (tmp_path / f"d{i}").mkdir()
    yield start
    for d in daemons:
        d.close()


def http(backends, name, **extra):
    return {"address": "127.0.0.1", "port": backends.http[name], **extra}


def spread(d, n, **kw) -> Counter:
    return Counter(ask(VIP, d.port, **kw) for _ in range(n))


def test_roundrobin_is_even(backends, run):
    d = run([http(backends, n) for n in "abc"])
    assert spread(d, 300) == {"a": 100, "b": 100, "c": 100}


def test_weights_three_to_one_over_2000_connections(backends, run):
    d = run([http(backends, "a", weight=3), http(backends, "b", weight=1)])
    got = spread(d, 2000)
    assert got["a"] / got["b"] == pytest.approx(3, rel=0.10)


def test_first_sends_everything_to_the_first_usable(backends, run):
    d = run([http(backends, "b"), http(backends, "a")], algorithm="first")
    assert spread(d, 20) == {"b": 20}


def test_leastconn_avoids_the_busy_server(backends, run):
    d = run([{"address": "127.0.0.1", "port": backends.echo[n]} for n in "ab"], algorithm="leastconn")
    held = [socket.create_connection((VIP, d.port)) for _ in range(2)]   # one on each
    for s in held:
        s.sendall(b"x")
        assert s.recv(1) == b"x"
    busy = socket.create_connection((VIP, d.port))           # a third: one server now has 2
    busy.sendall(b"x")
    busy.recv(1)
    counts = {s["key"]: s["active"] for s in d.stats()["backends"]["1"]}
    assert sorted(counts.values()) == [1, 2]
    idle_key = min(counts, key=counts.get)
    extra = socket.create_connection((VIP, d.port))         # goes to the less loaded server
    extra.sendall(b"y")
    extra.recv(1)
    now = {x["key"]: x["active"] for x in d.stats()["backends"]["1"]}
    assert now[idle_key] == counts[idle_key] + 1 and sorted(now.values()) == [2, 2]
    for s in [*held, busy, extra]:
        s.close()


def test_source_hash_follows_maglev(backends, run):
    servers = [http(backends, n) for n in "abc"]
    d = run(servers, algorithm="source")
    keys = [f"127.0.0.1:{s['port']}" for s in servers]
    table = maglev.build_table(keys, [100, 100, 100])
    names = dict(zip(keys, "abc"))
    seen = set()
    for i in range(2, 40):
        src = f"127.0.3.{i}"
        expected = names[keys[table[source_slot(src, len(table))]]]
        got = {ask(VIP, d.port, source=src) for _ in range(3)}
        assert got == {expected}
        seen.add(expected)
    assert seen == set("abc")


def test_reject_is_never_chosen(backends, run):
    d = run([http(backends, "a"), http(backends, "b", mode="reject")])
    assert spread(d, 30) == {"a": 30}


def test_backup_serves_only_when_no_accept_server_is_usable(backends, run):
    dead = free_port()
    d = run([http(backends, "a", mode="backup"), {"address": "127.0.0.1", "port": dead}])
    assert spread(d, 10) == {"a": 10}          # the accept server refuses: backup takes over
    d2 = run([http(backends, "a", mode="backup"), http(backends, "b")])
    assert spread(d2, 10) == {"b": 10}


def test_drain_keeps_existing_sessions_and_takes_no_new_ones(backends, run):
    servers = [{"address": "127.0.0.1", "port": backends.echo[n]} for n in "ab"]
    d = run(servers)
    held = [socket.create_connection((VIP, d.port)) for _ in range(2)]
    for s in held:
        s.sendall(b"1")
        assert s.recv(1) == b"1"
    cfg = tcp_config(VIP, d.port, [servers[0], dict(servers[1], mode="drain")])
    d.write(cfg)
    d.reload()
    for s in held:                              # both sessions, one on the draining server, go on
        s.sendall(b"2")
        assert s.recv(1) == b"2"
    drained_key = f"127.0.0.1:{backends.echo['b']}"
    before = {x["key"]: x["total"] for x in d.stats()["backends"]["1"]}
    for _ in range(10):
        with socket.create_connection((VIP, d.port)) as s:
            s.sendall(b"z")
            s.recv(1)
    after = {x["key"]: x["total"] for x in d.stats()["backends"]["1"]}
    assert after[drained_key] == before[drained_key]
    for s in held:
        s.close()


def test_table_stickiness_pins_a_source_until_timeout(backends, run):
    d = run([http(backends, n) for n in "abc"], stickiness="table", sticky_timeout_ms=800)
    pins = []
    for i in range(2, 8):
        src = f"127.0.4.{i}"
        answers = {ask(VIP, d.port, source=src) for _ in range(15)}
        assert len(answers) == 1
        pins += answers
    # Six new clients, six round-robin decisions (pinned hits take none): two per server.
    assert Counter(pins) == {"a": 2, "b": 2, "c": 2}
    first = pins[0]
    time.sleep(1.0)      # every entry expired
    # A new client takes the round robin's next turn, which is where the cycle began
    # (`first`); an expired 127.0.4.2 must then be decided again and land on the turn after.
    assert ask(VIP, d.port, source="127.0.4.8") == first
    again = {ask(VIP, d.port, source="127.0.4.2") for _ in range(5)}
    assert len(again) == 1 and again != {first}


def test_connect_failover_when_a_server_is_down(backends, run):
    dead = free_port()
    d = run([{"address": "127.0.0.1", "port": dead}, http(backends, "a"), http(backends, "b")])
    got = spread(d, 60)
    assert sum(got.values()) == 60 and set(got) == {"a", "b"}
    failed = {x["key"]: x["failed"] for x in d.stats()["backends"]["1"]}
    assert failed[f"127.0.0.1:{dead}"] > 0


def test_connect_timeout_moves_on_to_another_server(backends, run):
    # A listener that never accepts, with its backlog full: further SYNs are dropped.
    tarpit = socket.socket()
    tarpit.bind(("127.0.0.1", 0))
    tarpit.listen(0)
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(tarpit.getsockname())
        fillers.append(f)
    time.sleep(0.2)
    d = run([{"address": "127.0.0.1", "port": tarpit.getsockname()[1]}, http(backends, "a")],
            timeout_connect_ms=300, algorithm="first")
    t0 = time.monotonic()
    assert ask(VIP, d.port) == "a"
    assert 0.25 < time.monotonic() - t0 < 3
    for s in [tarpit, *fillers]:
        s.close()


def test_client_inactivity_timeout_closes_idle_sessions(backends, tmp_path):
    port = free_port(VIP)
    cfg = tcp_config(VIP, port, [{"address": "127.0.0.1", "port": backends.echo["a"]}])
    cfg["lbs"][0]["frontends"][0]["timeout_client_ms"] = 400
    d = Daemon(tmp_path, cfg)
    try:
        s = socket.create_connection((VIP, port))
        s.sendall(b"ping")
        assert s.recv(4) == b"ping"
        s.settimeout(5)
        t0 = time.monotonic()
        assert s.recv(1) == b""                 # closed by the proxy, not by us
        assert 0.3 < time.monotonic() - t0 < 2.5
        # an active session outlives the timeout
        s2 = socket.create_connection((VIP, port))
        for _ in range(8):
            s2.sendall(b"k")
            assert s2.recv(1) == b"k"
            time.sleep(0.15)
        s2.close()
    finally:
        d.close()


def test_server_timeout_closes_a_silent_server(backends, tmp_path):
    port = free_port(VIP)
    cfg = tcp_config(VIP, port, [{"address": "127.0.0.1", "port": backends.http["a"]}], timeout_server_ms=400)
    d = Daemon(tmp_path, cfg)
    try:
        with socket.create_connection((VIP, port)) as s:
            s.sendall(b"GET /delay/3000 HTTP/1.1\r\nHost: t\r\n\r\n")
            s.settimeout(5)
            t0 = time.monotonic()
            assert s.recv(100) == b""
            assert time.monotonic() - t0 < 2
    finally:
        d.close()


def test_half_close_passes_fin_and_keeps_the_other_way_open(backends, run):
    d = run([{"address": "127.0.0.1", "port": backends.echo["a"]}])
    with socket.create_connection((VIP, d.port)) as s:
        payload = b"half-close " * 10000
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        s.settimeout(5)
        while chunk := s.recv(65536):
            got += chunk
    assert got == payload          # all data back after our FIN, then the server's FIN


def read_response(s: socket.socket) -> tuple[bytes, int]:
    """Read an HTTP response head and count (not keep) the body bytes."""
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(65536)
    head, _, rest = head.partition(b"\r\n\r\n")
    length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1])
    got = len(rest)
    while got < length:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        got += len(chunk)
    return head, got


def test_100_mb_both_ways_with_flat_memory(backends, run):
    d = run([http(backends, "a")])
    with socket.create_connection((VIP, d.port)) as s:     # warm up allocations
        s.sendall(b"GET /bytes/1000000 HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(s)
    rss0 = d.rss_kb()
    peak = [rss0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak.append(d.rss_kb())
            time.sleep(0.05)
    t = threading.Thread(target=sample)
    t.start()
    try:
        size = 100_000_000
        with socket.create_connection((VIP, d.port)) as s:
            s.sendall(f"GET /bytes/{size} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            _, got = read_response(s)
            assert got == size
            # and 100 MB up
            import hashlib
            block = bytes(range(256)) * 4096
            digest = hashlib.sha256()
            s.sendall(f"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\n\r\n".encode())
            sent = 0
            while sent < size:
                chunk = block[: min(len(block), size - sent)]
                s.sendall(chunk)
                digest.update(chunk)
                sent += len(chunk)
            data = b""
            while not data.endswith(b"}"):
                data += s.recv(65536)
            assert digest.hexdigest().encode() in data and str(size).encode() in data
    finally:
        stop.set()
        t.join()
    assert max(peak) - rss0 < 30_000, f"RSS grew from {rss0} kB to {max(peak)} kB"


def test_stats_count_bytes_and_connections(backends, run):
    d = run([http(backends, "a")])
    for _ in range(5):
        ask(VIP, d.port)
    f = d.stats()["frontends"][0]
    assert f["total"] == 5 and f["bytes_in"] > 0 and f["bytes_out"] > 0 and f["active"] == 0
