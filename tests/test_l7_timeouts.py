"""Every timeout: a slowloris head gets 408 at the head deadline however it trickles, an
idle keep-alive client is closed after timeout_client, a slow server gets the client a
504 after timeout_server, an unanswered connect a 503 after timeout_connect."""
import socket
import time

import pytest

from lbfast.l7 import L7Limits
from tests.l7_harness import Backends, L7Runner, backend, free_port, frontend, read_response


@pytest.fixture(scope="module")
def setup():
    b = Backends(1)
    r = L7Runner(workers=1, limits=L7Limits(head_timeout_ms=1000))
    yield r, b
    r.close()
    b.close()


def test_slowloris_head_deadline(setup):
    r, b = setup
    port = free_port()
    r.apply(frontend(port, backend(b.servers), timeout_client_ms=5000))
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        out = b""
        try:
            for c in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"x" * 100:
                s.sendall(bytes([c]))
                time.sleep(0.1)             # each byte well inside timeout_client
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while chunk := s.recv(4096):
                out += chunk
        except ConnectionResetError:
            pass
    took = time.monotonic() - start
    assert out.startswith(b"HTTP/1.1 408"), out
    assert 0.9 < took < 3


def test_idle_keepalive_client_closed(setup):
    r, b = setup
    port = free_port()
    r.apply(frontend(port, backend(b.servers), timeout_client_ms=500))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        f = s.makefile("rb")
        assert read_response(f)[0] == 200
        start = time.monotonic()
        assert f.read(1) == b""
        assert 0.4 < time.monotonic() - start < 2


def test_server_timeout_504(setup):
    r, b = setup
    port = free_port()
    r.apply(frontend(port, backend(b.servers, timeout_server_ms=300)))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        start = time.monotonic()
        s.sendall(b"GET /delay/3000 HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = read_response(s.makefile("rb"))
    assert status == 504 and b"504" in body
    assert 0.25 < time.monotonic() - start < 2


def test_connect_timeout_503():
    # A listener whose accept queue is full drops further SYNs: connect() hangs.
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(full.getsockname())
        fillers.append(c)
    time.sleep(0.2)
    r = L7Runner(workers=1)
    try:
        port = free_port()
        r.apply(frontend(port, backend([full.getsockname()], timeout_connect_ms=300, retries=1)))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            start = time.monotonic()
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            status, _, _ = read_response(s.makefile("rb"))
        assert status == 503
        # retries go to other servers (as in the L4 proxy): the only one is tried once
        assert 0.25 < time.monotonic() - start < 2
        assert r.stats()["backends"]["1"][0]["failed"] == 1
    finally:
        r.close()
        for c in fillers:
            c.close()
        full.close()
