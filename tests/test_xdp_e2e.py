"""The XDP data plane end to end: the program attached in native mode to the LB
namespace's veths of a testbed, real TCP (HTTP) and UDP from the client namespace to the
VIP, real servers behind. The program's own counters show the traffic went through XDP
(the VIP is also local on the LB, so without XDP the kernel would refuse it)."""
from __future__ import annotations

import errno
import os
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from control.testbed import Testbed, ethtool_offload_off, gro_on
from lbfast import hashing, maglev
from lbfast.enums import (Algorithm, OnMarkedDown, Protocol, ServerMode, Stickiness,
                          XdpMode)
from lbfast.spec import BackendSpec, FrontendSpec, ServerSpec

pytestmark = pytest.mark.xdp

HTTP, ECHO, UDP = 80, 9000, 53
HTTP_ID, ECHO_ID, UDP_ID = 1, 2, 3
SECOND_CLIENT_IP = "10.200.0.3"


# ---------------------------------------------------------------------- set-up
def frontends(tb: Testbed, algorithm=Algorithm.ROUNDROBIN, weights=(1, 1),
              modes=(ServerMode.ACCEPT, ServerMode.ACCEPT), stickiness=Stickiness.NONE,
              throttle=0, v6_servers=False, servers=(0, 1)) -> list[FrontendSpec]:
    """HTTP (VIP:80 -> :8080), TCP echo (VIP:9000 -> :9000), UDP echo (VIP:53 -> :9001),
    each with its own backend over the testbed's servers."""
    def backend(bid: int, port: int) -> BackendSpec:
        srv = tuple(ServerSpec(id=10 * bid + i,
                               address=tb.backends[i].ip6 if v6_servers else tb.backends[i].ip,
                               port=port, weight=weights[i], mode=modes[i])
                    for i in servers)
        return BackendSpec(id=bid, uuid=f"b{bid}", name=f"b{bid}", algorithm=algorithm,
                           stickiness=stickiness, sticky_timeout_ms=60_000,
                           on_marked_down=OnMarkedDown.SHUTDOWN_SESSIONS, servers=srv)

    def frontend(fid: int, port: int, proto: Protocol, be: BackendSpec) -> FrontendSpec:
        return FrontendSpec(id=fid, uuid=f"f{fid}", name=f"f{fid}", lb_id=1, address=tb.vip,
                            port=port, protocol=proto, backend=be,
                            client_conn_throttle=throttle)

    return [frontend(HTTP_ID, HTTP, Protocol.TCP, backend(HTTP_ID, tb.http_port)),
            frontend(ECHO_ID, ECHO, Protocol.TCP, backend(ECHO_ID, tb.tcp_echo_port)),
            frontend(UDP_ID, UDP, Protocol.UDP, backend(UDP_ID, tb.udp_echo_port))]


def prepare_peers(tb: Testbed) -> None:
    """What XDP on veth needs from the peers: no tx checksum offload on senders (in
    either mode: the program updates checksums as full ones, and a sender's partial
    checksum is not one; small packets pass anyway, as veth trusts partial checksums, but
    segmented bulk data is dropped), and for native mode NAPI (GRO) on the veths that
    receive redirected frames."""
    for host in (tb.client, *tb.backends):
        gro_on(host, host.ifname)
        ethtool_offload_off(host, host.ifname)
    tb.client.run(["ip", "addr", "add", f"{SECOND_CLIENT_IP}/24", "dev", tb.client.ifname])


class LB:
    """A testbed with the XDP dataplane attached on all LB veths."""

    def __init__(self, tb: Testbed, mode: XdpMode = XdpMode.NATIVE):
        from lbfast.xdp import XdpDataplane

        self.tb = tb
        self.mode = mode
        self.pin_dir = f"/sys/fs/bpf/lbfast-e2e-{os.getpid()}-{id(tb)}"
        self.ifnames = [tb.lb_client_if, *tb.lb_backend_ifs]
        self.dp = tb.lb.in_ns(lambda: XdpDataplane(self.ifnames, mode, pin_dir=self.pin_dir))

    def reopen(self, detach: bool) -> None:
        from lbfast.xdp import XdpDataplane

        self.dp.close(detach=detach)
        self.dp = self.tb.lb.in_ns(
            lambda: XdpDataplane(self.ifnames, self.mode, pin_dir=self.pin_dir))

    def close(self) -> None:
        from lbfast.xdp import remove_pins

        self.dp.close()
        remove_pins(self.pin_dir)

    def stats(self) -> dict:
        return self.dp.stats()


@pytest.fixture(scope="module")
def lb():
    with Testbed(backends=2) as tb:
        tb.start_backend_servers()
        tb.add_vip_local()
        prepare_peers(tb)
        lb = LB(tb)
        try:
            yield lb
        finally:
            lb.close()


@pytest.fixture
def fresh(lb):
    """The shared LB back on the default configuration, all servers up."""
    lb.dp.apply(frontends(lb.tb))
    for bid in (HTTP_ID, ECHO_ID, UDP_ID):
        for b in lb.tb.backends:
            port = {HTTP_ID: lb.tb.http_port, ECHO_ID: lb.tb.tcp_echo_port,
                    UDP_ID: lb.tb.udp_echo_port}[bid]
            lb.dp.set_server_health(bid, f"{b.ip}:{port}", True)
    return lb


# ---------------------------------------------------------------------- clients
def read_response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response with Content-Length; returns the body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response headers")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return body


def http_get(addr: str, port: int = HTTP, source: str | None = None, timeout: float = 5.0,
             keep: socket.socket | None = None) -> str:
    """GET / on a new connection, or on `keep`; returns the server's name. A new
    connection is closed by the server first (the client waits for its FIN), so it is
    over, both ways, before the next one starts and no TIME_WAIT piles up here."""
    sock = keep or socket.create_connection((addr, port), timeout=timeout,
                                            source_address=(source, 0) if source else None)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\n"
                     + (b"" if keep else b"Connection: close\r\n") + b"\r\n")
        name = read_response(sock).decode()
        if keep is None and sock.recv(1):
            raise ConnectionError("data after the response")
        return name
    finally:
        if keep is None:
            sock.close()


def many_gets(tb: Testbed, n: int, concurrency: int = 8, source: str | None = None,
              ) -> tuple[Counter, list[str]]:
    """n one-connection requests from the client namespace, `concurrency` at a time."""
    per_worker = [n // concurrency + (1 if i < n % concurrency else 0)
                  for i in range(concurrency)]

    def worker(count: int) -> tuple[Counter, list[str]]:
        got, errors = Counter(), []
        for _ in range(count):
            try:
                got[http_get(tb.vip, source=source)] += 1
            except OSError as e:
                errors.append(repr(e))
        return got, errors

    total, errors = Counter(), []
    with ThreadPoolExecutor(concurrency) as pool:
        for got, errs in pool.map(lambda c: tb.client.in_ns(worker, c), per_worker):
            total += got
            errors += errs
    return total, errors


def keepalive(tb: Testbed, port: int = HTTP) -> tuple[socket.socket, str]:
    """A keep-alive HTTP connection from the client namespace and its server's name."""
    sock = tb.client.connect(tb.vip, port, timeout=5)
    return sock, http_get(tb.vip, keep=sock)


def echo_bulk(tb: Testbed, megabytes: int) -> int:
    """`megabytes` MB through the TCP echo frontend and back on one connection; returns
    the bytes that came back (all of them, or the test fails by timeout)."""
    total = megabytes << 20

    def run() -> int:
        with socket.create_connection((tb.vip, ECHO), timeout=10) as s:
            got = 0

            def reader() -> None:
                nonlocal got
                while got < total:
                    data = s.recv(1 << 20)
                    if not data:
                        return
                    got += len(data)

            t = threading.Thread(target=reader)
            t.start()
            chunk = b"x" * (1 << 20)
            for _ in range(megabytes):
                s.sendall(chunk)
            t.join(30)
            return got
    return tb.client.in_ns(run)


def delta(after: dict, before: dict, *path) -> int:
    a, b = after, before
    for p in path:
        a, b = a[p], b.get(p, {}) if isinstance(b, dict) else 0
    return a - (b or 0)


def within(count: int, expected: float, tolerance: float = 0.10) -> bool:
    return abs(count - expected) <= tolerance * expected


# ---------------------------------------------------------------------- the tests
def test_http_and_udp_reach_both_servers_through_xdp(fresh):
    tb, before = fresh.tb, fresh.stats()
    got, errors = many_gets(tb, 200)
    assert not errors
    # one rotation for all CPUs; two CPUs taking a new flow at the same instant may
    # take the same step, so close to even rather than exactly
    assert set(got) == {"b0", "b1"} and within(got["b0"], 100) and within(got["b1"], 100)

    def udp_roundtrips() -> Counter:
        names = Counter()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            for i in range(20):
                s.sendto(f"ping{i}".encode(), (tb.vip, UDP))   # one port: one flow
                name, _, payload = s.recvfrom(2048)[0].decode().partition(":")
                assert payload == f"ping{i}"
                names[name] += 1
        return names

    assert sum(tb.client.in_ns(udp_roundtrips).values()) == 20
    assert len(tb.client.in_ns(udp_roundtrips)) == 1, "one UDP flow stays on one server"

    after = fresh.stats()
    assert delta(after, before, "frontends", HTTP_ID, "new_connections") == 200
    for i, b in enumerate(tb.backends):
        key = f"{b.ip}:{tb.http_port}"
        assert delta(after, before, "servers", HTTP_ID, key, "new_connections") == got[f"b{i}"]
        assert delta(after, before, "servers", HTTP_ID, key, "packets_out") >= 3 * got[f"b{i}"]
    assert delta(after, before, "frontends", UDP_ID, "packets_in") == 40
    assert delta(after, before, "frontends", UDP_ID, "packets_out") == 40
    assert fresh.dp.attached == {i: XdpMode.NATIVE for i in fresh.ifnames}


def test_bulk_data_both_ways_on_one_connection(fresh):
    """50 MB to a server and back: full-size segments, the client's and the server's
    windows, all through the program (the servers' counters carry the bytes)."""
    before = fresh.stats()
    assert echo_bulk(fresh.tb, 50) == 50 << 20
    after = fresh.stats()
    assert delta(after, before, "frontends", ECHO_ID, "bytes_in") >= 50 << 20
    assert delta(after, before, "frontends", ECHO_ID, "bytes_out") >= 50 << 20


def test_open_connection_counts_follow_opens_and_closes(fresh):
    """The program's open-connection counts (leastconn's input) go up with held
    connections and back to zero, also after closes from both ends at once."""
    tb = fresh.tb

    def open_count() -> int:
        servers = fresh.stats()["servers"][HTTP_ID].values()
        return sum(s["active_connections"] for s in servers)

    held = [keepalive(tb)[0] for _ in range(5)]
    assert open_count() == 5
    for sock in held:
        sock.close()

    def close_at_once(n: int) -> None:
        """Close right after the body: the client's FIN races the server's."""
        for _ in range(n):
            with socket.create_connection((tb.vip, HTTP), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
                read_response(s)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: tb.client.in_ns(close_at_once, n), [100] * 4))
    deadline = time.monotonic() + 3
    while open_count() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_count() == 0


@pytest.mark.parametrize("algorithm,weights,expect", [
    (Algorithm.ROUNDROBIN, (3, 1), {"b0": 1500, "b1": 500}),
    (Algorithm.LEASTCONN, (1, 1), {"b0": 1000, "b1": 1000}),
    (Algorithm.FIRST, (1, 1), {"b0": 2000}),
    (Algorithm.SOURCE, (1, 1), None),
], ids=["roundrobin-3to1", "leastconn", "first", "source"])
def test_distribution_over_2000_connections(fresh, algorithm, weights, expect):
    tb = fresh.tb
    fresh.dp.apply(frontends(tb, algorithm=algorithm, weights=weights))
    # leastconn one connection at a time: with overlapping ones it rightly favours the
    # server that answers faster, which says nothing about an even split
    got, errors = many_gets(tb, 2000, concurrency=1 if algorithm == Algorithm.LEASTCONN else 8)
    assert not errors
    if expect is None:      # every connection of the one client on its Maglev server
        keys = [f"{b.ip}:{tb.http_port}" for b in tb.backends]
        table = maglev.build_table(keys, [1, 1])
        expect = {f"b{table[hashing.source_slot(tb.client.ip, len(table))]}": 2000}
    assert set(got) == set(expect)
    for name, count in expect.items():
        assert within(got[name], count), (got, expect)


def test_leastconn_prefers_the_server_with_fewer_open_connections(fresh):
    tb = fresh.tb
    fresh.dp.apply(frontends(tb, algorithm=Algorithm.LEASTCONN))
    fresh.dp.set_server_health(HTTP_ID, f"{tb.backends[1].ip}:{tb.http_port}", False)
    held = [keepalive(tb) for _ in range(6)]           # six open connections, all on b0
    try:
        assert {name for _, name in held} == {"b0"}
        fresh.dp.set_server_health(HTTP_ID, f"{tb.backends[1].ip}:{tb.http_port}", True)
        got, errors = many_gets(tb, 200, concurrency=4)
        assert not errors
        assert got["b1"] >= 0.8 * 200, got
    finally:
        for sock, _ in held:
            sock.close()


def test_table_stickiness_keeps_each_source_on_one_server(fresh):
    tb = fresh.tb
    fresh.dp.apply(frontends(tb, stickiness=Stickiness.TABLE))
    for source in (tb.client.ip, SECOND_CLIENT_IP):
        got, errors = many_gets(tb, 50, concurrency=2, source=source)
        assert not errors and len(got) == 1, (source, got)
    fresh.dp.apply(frontends(tb))                      # stickiness off: rotation again
    got, _ = many_gets(tb, 50, concurrency=2)
    assert len(got) == 2


def test_drain_keeps_established_flows_and_takes_no_new_ones(fresh):
    tb = fresh.tb
    sock, name = keepalive(tb)
    try:
        i = int(name[1])
        modes = [ServerMode.ACCEPT, ServerMode.ACCEPT]
        modes[i] = ServerMode.DRAIN
        fresh.dp.apply(frontends(tb, modes=tuple(modes)))
        for _ in range(5):
            assert http_get(tb.vip, keep=sock) == name      # the old flow keeps going
        got, errors = many_gets(tb, 40, concurrency=2)
        assert not errors and got == {f"b{1 - i}": 40}
    finally:
        sock.close()


def one_on_each_server(tb: Testbed) -> dict[str, socket.socket]:
    """Keep-alive connections until both servers have one (other tests' flows moved the
    rotation, and concurrent new flows may share a step); extra ones are closed."""
    held: dict[str, socket.socket] = {}
    for _ in range(20):
        sock, name = keepalive(tb)
        if name in held:
            sock.close()
        else:
            held[name] = sock
        if len(held) == 2:
            return held
    raise AssertionError(f"20 connections and only {set(held)} used")


def test_shutdown_sessions_resets_the_flows_of_a_down_server(fresh):
    tb = fresh.tb
    held = one_on_each_server(tb)
    (name, sock), (other_name, other) = held.items()
    try:
        server = f"{tb.backends[int(name[1])].ip}:{tb.http_port}"
        fresh.dp.set_server_health(HTTP_ID, server, False)
        assert fresh.dp.purge_server(HTTP_ID, server) == 1

        def wait_for_reset() -> str:
            sock.settimeout(5)          # an idle client: the reset must reach it unasked
            try:
                data = sock.recv(100)
            except ConnectionResetError:
                return "reset"
            except socket.timeout:
                return "hang"
            return f"data {data!r}"
        t0 = time.monotonic()
        assert wait_for_reset() == "reset"
        assert time.monotonic() - t0 < 2
        assert http_get(tb.vip, keep=other) == other_name   # the other server's flow lives
        assert fresh.stats()["reasons"]["tx_reset"] >= 1
    finally:
        sock.close()
        other.close()


def test_client_conn_throttle_limits_new_connections_per_source(fresh):
    tb = fresh.tb
    fresh.dp.apply(frontends(tb, throttle=5))
    before = fresh.stats()

    def burst(source: str) -> int:
        """20 connection attempts at once; how many got through within 0.5 s (a
        dropped SYN is retried by the kernel only after a second)."""
        socks = []
        for _ in range(20):
            s = socket.socket()
            s.setblocking(False)
            s.bind((source, 0))
            s.connect_ex((tb.vip, HTTP))
            socks.append(s)
        time.sleep(0.5)
        ok = 0
        for s in socks:
            ok += s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and _connected(s)
            s.close()
        return ok

    first = tb.client.in_ns(burst, tb.client.ip)
    assert 4 <= first <= 7, first                  # the bucket holds one second's worth
    second = tb.client.in_ns(burst, SECOND_CLIENT_IP)
    assert 4 <= second <= 7, second                # another source has its own bucket
    dropped = delta(fresh.stats(), before, "reasons", "drop_throttled")
    assert dropped >= 2 * 13


def _connected(s: socket.socket) -> bool:
    try:
        s.getpeername()
        return True
    except OSError:
        return False


def test_a_closed_server_port_is_reported_to_the_udp_client(fresh):
    """A datagram to a server port nobody listens on: the server's kernel answers ICMP
    port unreachable to the SNAT address, the program sends it on to the client, whose
    connected socket reports the refusal at once instead of timing out."""
    tb, port, closed_port = fresh.tb, 5353, 9
    be = BackendSpec(id=4, uuid="b4", name="b4", servers=(
        ServerSpec(id=40, address=tb.backends[0].ip, port=closed_port),))
    fresh.dp.apply([*frontends(tb), FrontendSpec(id=4, uuid="f4", name="f4", lb_id=1,
                                                 address=tb.vip, port=port,
                                                 protocol=Protocol.UDP, backend=be)])
    fresh.dp.set_server_health(4, f"{tb.backends[0].ip}:{closed_port}", True)
    before = fresh.stats()

    def send_and_wait() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.connect((tb.vip, port))
            s.send(b"anyone?")
            try:
                s.recv(100)
            except ConnectionRefusedError:
                return "refused"
            except TimeoutError:
                return "timed out"
            return "answered"

    assert tb.client.in_ns(send_and_wait) == "refused"
    after = fresh.stats()
    assert after["reasons"]["tx_icmp"] - before["reasons"]["tx_icmp"] == 1
    assert delta(after, before, "frontends", 4, "packets_in") == 1


def test_a_client_on_a_host_port_cannot_block_the_hosts_own_connection(fresh):
    """A client flow from a port of the LB host's own range (lbfast.hostports) gets
    another SNAT port, so a connection of the host's (a health check) from that port to
    the same server still works. Were the port kept, the server would read the host's
    SYN as part of the client's flow and the host's connect would time out."""
    from lbfast.hostports import HOST_PORT_MIN, IP_LOCAL_PORT_RANGE

    tb, port = fresh.tb, HOST_PORT_MIN + 7
    client = tb.client.in_ns(lambda: socket.create_connection(
        (tb.vip, HTTP), timeout=5, source_address=(tb.client.ip, port)))
    try:
        name = http_get(tb.vip, keep=client)        # the client's flow stays open
        server = tb.backends[int(name[1:])]

        def host_get() -> str:
            with socket.socket() as s:
                s.settimeout(3)
                s.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE,
                             (port | port << 16).to_bytes(4, "little"))
                s.connect((server.ip, tb.http_port))
                assert s.getsockname()[1] == port
                return http_get(server.ip, keep=s)

        assert tb.lb.in_ns(host_get) == name
        assert http_get(tb.vip, keep=client) == name  # and the client's flow still works
    finally:
        client.close()


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_a_datagram_over_the_server_side_mtu_teaches_the_client_its_path_mtu(v6):
    """The LB-server link has MTU 1400: the program answers a full-size datagram (DF,
    as every IPv6 one) with fragmentation needed / packet too big, so the client's kernel
    learns 1400 for the VIP, refuses the next full-size send, and a smaller one goes
    through to the server and back."""
    from lbfast.xdp import XdpDataplane, remove_pins

    pin_dir = f"/sys/fs/bpf/lbfast-mtu-{os.getpid()}"
    with Testbed(backends=1) as tb:
        tb.start_backend_servers(("udp_echo",))
        tb.add_vip_local()
        prepare_peers(tb)
        tb.lb.run(["ip", "link", "set", "dev", tb.lb_backend_ifs[0], "mtu", "1400"])
        tb.backends[0].run(["ip", "link", "set", "dev", tb.backends[0].ifname, "mtu", "1400"])
        ifnames = [tb.lb_client_if, *tb.lb_backend_ifs]
        dp = tb.lb.in_ns(lambda: XdpDataplane(ifnames, pin_dir=pin_dir))
        try:
            udp = frontends(tb, v6_servers=v6, servers=(0,))[2]
            dp.apply([replace(udp, address=tb.vip6) if v6 else udp])
            family, level = ((socket.AF_INET6, socket.IPPROTO_IPV6) if v6
                             else (socket.AF_INET, socket.IPPROTO_IP))
            # linux/in.h, linux/in6.h (Python's socket module lacks them)
            mtu_discover, mtu_opt = (23, 24) if v6 else (10, 14)
            headers = (40 if v6 else 20) + 8

            def client() -> tuple[int, bool, bytes]:
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.settimeout(2)
                    s.setsockopt(level, mtu_discover, 2)     # IP_PMTUDISC_DO: never fragment
                    s.connect((tb.vip6 if v6 else tb.vip, UDP))
                    s.send(b"x" * (1500 - headers))
                    time.sleep(0.2)                          # the ICMP answer arrives
                    learned = s.getsockopt(level, mtu_opt)
                    try:
                        s.send(b"x" * (1500 - headers))
                        refused = False
                    except OSError as e:
                        refused = e.errno == errno.EMSGSIZE
                    # the ICMP also left EMSGSIZE pending on the socket, for its next call
                    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) in (0, errno.EMSGSIZE)
                    s.send(b"y" * (1400 - headers - 10))    # the echo adds the server's name
                    return learned, refused, s.recv(2048)

            learned, refused, echoed = tb.client.in_ns(client)
            assert learned == 1400 and refused
            assert echoed.partition(b":")[2] == b"y" * (1400 - headers - 10), echoed[:80]
            assert dp.stats()["reasons"]["tx_too_big"] == 1
        finally:
            dp.close()
            remove_pins(pin_dir)


def test_ipv6_servers_behind_the_ipv4_vip(fresh):
    tb = fresh.tb
    fresh.dp.apply(frontends(tb, v6_servers=True))
    got, errors = many_gets(tb, 40, concurrency=2)
    assert not errors and set(got) == {"b0", "b1"} and sum(got.values()) == 40


def test_a_refused_apply_changes_nothing(fresh):
    from lbfast.xdp.snat import SnatError

    tb = fresh.tb
    before = fresh.stats()
    bad = frontends(tb)
    unroutable = ServerSpec(id=99, address="192.0.2.1", port=80)   # the LB has no route
    be = bad[0].backend
    bad[0] = replace(bad[0], backend=replace(be, servers=be.servers + (unroutable,)))
    with pytest.raises(SnatError, match="192.0.2.1"):
        fresh.dp.apply(bad)
    after = fresh.stats()
    assert after["servers"].keys() == before["servers"].keys()
    assert after["servers"][HTTP_ID].keys() == before["servers"][HTTP_ID].keys()
    got, errors = many_gets(tb, 10, concurrency=2)
    assert not errors and sum(got.values()) == 10


def test_established_flows_survive_a_restart_without_detach(fresh):
    tb = fresh.tb
    sock, name = keepalive(tb)
    try:
        counted = fresh.stats()["frontends"][HTTP_ID]["new_connections"]
        fresh.reopen(detach=False)          # like a daemon restart: pins and program stay
        # the new daemon found its frontends, slots and counters in the pinned maps
        assert fresh.stats()["frontends"][HTTP_ID]["new_connections"] >= counted
        assert http_get(tb.vip, keep=sock) == name
        fresh.dp.apply(frontends(tb))       # the new daemon's first apply changes nothing
        assert http_get(tb.vip, keep=sock) == name
        got, errors = many_gets(tb, 20, concurrency=2)
        assert not errors and sum(got.values()) == 20
        for ifname in fresh.ifnames:         # taken over: one program, ours, native
            assert attached_programs(tb, ifname) == ["lbfast_xdp"]
    finally:
        sock.close()


def test_twenty_applies_under_load_lose_no_connection(fresh):
    tb = fresh.tb
    stop = threading.Event()
    results: list[tuple[Counter, list[str]]] = []

    def load() -> None:
        while not stop.is_set() and len(results) < 100:   # bounded either way
            results.append(many_gets(tb, 40, concurrency=4))

    t = threading.Thread(target=load)
    t.start()
    variants = [
        dict(weights=(3, 1)), dict(weights=(1, 3)), dict(algorithm=Algorithm.LEASTCONN),
        dict(algorithm=Algorithm.SOURCE), dict(stickiness=Stickiness.TABLE),
        dict(modes=(ServerMode.ACCEPT, ServerMode.DRAIN)), dict(servers=(1,)),
        dict(servers=(0,)), dict(), dict(throttle=0, weights=(2, 1)),
    ]
    try:
        for i in range(20):
            time.sleep(0.1)
            fresh.dp.apply(frontends(tb, **variants[i % len(variants)]))
        time.sleep(0.3)
    finally:
        stop.set()
        t.join(timeout=60)
    total = sum((c for c, _ in results), Counter())
    errors = [e for _, errs in results for e in errs]
    assert not errors, errors[:5]
    assert sum(total.values()) >= 200


@pytest.mark.parametrize("mode", [XdpMode.GENERIC])
def test_generic_mode_and_detach_on_close(mode):
    with Testbed(backends=2) as tb:
        tb.start_backend_servers()
        tb.add_vip_local()
        prepare_peers(tb)
        lb = LB(tb, mode)
        try:
            assert lb.dp.attached == {i: mode for i in lb.ifnames}
            lb.dp.apply(frontends(tb))
            got, errors = many_gets(tb, 20, concurrency=2)
            assert not errors and set(got) == {"b0", "b1"} and sum(got.values()) == 20
            assert echo_bulk(tb, 50) == 50 << 20
        finally:
            lb.close()
        for ifname in lb.ifnames:
            assert attached_programs(tb, ifname) == []
        # with the program gone the VIP is the kernel's: it refuses the connection
        with pytest.raises(ConnectionRefusedError):
            tb.client.in_ns(http_get, tb.vip)


def test_snat_ports_of_client_closed_flows_come_back_soon():
    """A port whose flow the client closed first is free again after CT_CLOSED_S (the
    server holds no TIME_WAIT on it): a build with 8 SNAT ports serves 20 flows."""
    from lbfast.xdp import XdpDataplane, remove_pins

    pin_dir = f"/sys/fs/bpf/lbfast-ports-{os.getpid()}"
    with Testbed(backends=2) as tb:
        tb.start_backend_servers(("tcp_echo",))
        tb.add_vip_local()
        prepare_peers(tb)
        ifnames = [tb.lb_client_if, *tb.lb_backend_ifs]
        dp = tb.lb.in_ns(lambda: XdpDataplane(ifnames, pin_dir=pin_dir, constants={
            "SNAT_PORT_MIN": 10000, "SNAT_PORT_MAX": 10007, "CT_CLOSED_S": 1}))
        try:
            dp.apply(frontends(tb))

            def echo_and_close() -> None:
                with socket.create_connection((tb.vip, ECHO), timeout=3) as s:
                    s.sendall(b"ping")
                    assert s.recv(10) == b"ping"
                    # the client closes first: its FIN goes before the server's

            for _ in range(5):          # 4 flows a round: at most 2 per server and CPU
                for _ in range(4):
                    tb.client.in_ns(echo_and_close)
                time.sleep(1.3)
            assert dp.stats()["reasons"]["drop_no_snat_port"] == 0
        finally:
            dp.close()
            remove_pins(pin_dir)


def test_configured_snat_addresses_are_taken_in_turn():
    """With snat_addresses, flows leave from each of them (each a port range of its own)."""
    from lbfast.xdp import XdpDataplane, conntrack, remove_pins

    sources = ["10.200.9.1", "10.200.9.2"]
    pin_dir = f"/sys/fs/bpf/lbfast-snat-{os.getpid()}"
    with Testbed(backends=2) as tb:
        tb.start_backend_servers(("http",))
        tb.add_vip_local()
        prepare_peers(tb)
        for address in sources:        # on the LB's lo; the servers reach them via the LB
            tb.lb.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"])
        ifnames = [tb.lb_client_if, *tb.lb_backend_ifs]
        dp = tb.lb.in_ns(lambda: XdpDataplane(ifnames, pin_dir=pin_dir,
                                              snat_addresses=sources))
        try:
            dp.apply(frontends(tb))
            got, errors = many_gets(tb, 40, concurrency=2)
            assert not errors and sum(got.values()) == 40
            used = {nat.src.ip(nat.family) for _, _, flow, nat in conntrack.entries(dp.maps)
                    if not nat.flags & int(dp.consts["CT_F_REPLY"])}
            assert used == set(sources)
        finally:
            dp.close()
            remove_pins(pin_dir)


def test_a_foreign_xdp_program_is_refused_not_replaced():
    from lbfast.xdp import XdpDataplane, XdpError, loader
    from lbfast.xdp.probe import load_pass_program
    from lbfast.xdp.rtnetlink import Rtnetlink

    with Testbed(backends=0) as tb:
        fd = load_pass_program()                 # an XDP program that is not lbfast's
        try:
            with tb.lb.in_ns(Rtnetlink) as rtnl:
                rtnl.set_xdp(rtnl.link(tb.lb_client_if).index, fd, loader.XDP_FLAGS_SKB_MODE)
            with pytest.raises(XdpError, match="another XDP program"):
                tb.lb.in_ns(lambda: XdpDataplane([tb.lb_client_if],
                                                 pin_dir=f"/sys/fs/bpf/lbfast-foreign-{os.getpid()}"))
            assert attached_programs(tb, tb.lb_client_if) == ["lbfast_probe"]
        finally:
            os.close(fd)


def test_native_falls_back_to_generic_with_a_warning(caplog):
    """`lo` has no native XDP: the dataplane says so and runs in generic mode."""
    from lbfast.xdp import XdpDataplane, remove_pins

    pin_dir = f"/sys/fs/bpf/lbfast-fallback-{os.getpid()}"
    with Testbed(backends=0) as tb:
        with caplog.at_level("WARNING", logger="lbfast.xdp"):
            dp = tb.lb.in_ns(lambda: XdpDataplane(["lo"], XdpMode.NATIVE, pin_dir=pin_dir))
        try:
            assert dp.attached == {"lo": XdpMode.GENERIC}
            assert "falling back to generic" in caplog.text
            assert attached_programs(tb, "lo") == ["lbfast_xdp"]
        finally:
            dp.close()
            remove_pins(pin_dir)
        assert attached_programs(tb, "lo") == []


def test_native_on_veth_says_generic_is_faster(caplog):
    from lbfast.xdp import XdpDataplane, remove_pins

    pin_dir = f"/sys/fs/bpf/lbfast-vethhint-{os.getpid()}"
    with Testbed(backends=0) as tb:
        with caplog.at_level("WARNING", logger="lbfast.xdp"):
            dp = tb.lb.in_ns(lambda: XdpDataplane([tb.lb_client_if], XdpMode.NATIVE,
                                                  pin_dir=pin_dir))
        try:
            assert dp.attached == {tb.lb_client_if: XdpMode.NATIVE}
            assert f"native XDP on veth {tb.lb_client_if}" in caplog.text
            assert "xdp_mode generic is not, and is faster on veth" in caplog.text
        finally:
            dp.close()
            remove_pins(pin_dir)


def test_probe_answers_for_the_daemon_auto_mode():
    from lbfast.xdp import probe

    with Testbed(backends=1) as tb:
        ok, why = tb.lb.in_ns(probe, [tb.lb_client_if, *tb.lb_backend_ifs], XdpMode.NATIVE)
        assert ok, why
        ok, why = tb.lb.in_ns(probe, ["no-such-if"], XdpMode.NATIVE)
        assert not ok and "no-such-if" in why


def attached_programs(tb: Testbed, ifname: str) -> list[str]:
    """Names of the XDP programs on an LB interface (native and generic)."""
    from lbfast.xdp import loader
    from lbfast.xdp.rtnetlink import Rtnetlink

    with tb.lb.in_ns(Rtnetlink) as rtnl:
        state = loader.xdp_state(rtnl, ifname)
    return [loader.prog_name(i) for i in (state.drv_prog, state.skb_prog) if i]
