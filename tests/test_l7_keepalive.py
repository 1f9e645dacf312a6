"""Keep-alive on both sides: one client connection carries many requests, the proxy reuses
a few pooled server connections, and pipelined requests are answered in order."""
import http.client
import json
import socket

import pytest

from tests.l7_harness import Backends, L7Runner, backend, free_port, frontend, read_response


@pytest.fixture(scope="module")
def setup():
    b = Backends(2)
    r = L7Runner(workers=1)
    port = free_port()
    r.apply(frontend(port, backend(b.servers)))
    yield r, b, port
    r.close()
    b.close()


def test_one_client_connection_many_requests_few_server_connections(setup):
    r, b, port = setup
    before = r.stats()["connections"]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    seen = []
    for _ in range(100):
        c.request("GET", "/")
        resp = c.getresponse()
        body = resp.read()
        assert resp.status == 200
        seen.append(body.decode())
    c.close()
    assert set(seen) == {"b0", "b1"}            # round robin over both
    after = r.stats()
    conns = after["connections"]
    assert conns["opened"] - before["opened"] <= 2     # one per server, then reused
    assert conns["reused"] - before["reused"] >= 98
    assert after["frontends"][0]["requests"] >= 100


def test_pipelined_requests_answered_in_order(setup):
    r, b, port = setup
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        # Slow requests ahead of fast ones: each answer must still come back in request order
        # (a /delay answer is a server name, a /headers answer echoes its request's X-Seq).
        s.sendall(b"GET /delay/200 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Seq: 1\r\n\r\n"
                  b"GET /delay/100 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Seq: 3\r\n\r\n")
        f = s.makefile("rb")
        answers = [read_response(f) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200] * 4
    bodies = [body for _, _, body in answers]
    assert bodies[0] in (b"b0", b"b1") and bodies[2] in (b"b0", b"b1")
    assert [json.loads(bodies[i])["x-seq"] for i in (1, 3)] == ["1", "3"]


def test_http10_client_gets_close_or_keepalive(setup):
    r, b, port = setup
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        f = s.makefile("rb")
        status, headers, _ = read_response(f)
        assert status == 200 and headers.get("connection") == "keep-alive"
        s.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert read_response(f)[0] == 200


def test_forwarded_headers_and_hop_by_hop_removed(setup):
    import json
    r, b, port = setup
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/headers", headers={"Connection": "keep-alive, X-Secret", "X-Secret": "1",
                                          "Keep-Alive": "timeout=5", "X-Forwarded-For": "1.1.1.1",
                                          "X-Forwarded-Proto": "gopher", "TE": "trailers"})
    got = json.loads(c.getresponse().read())
    assert "x-secret" not in got and "keep-alive" not in got and "te" not in got
    assert got["x-forwarded-for"] == "1.1.1.1, 127.0.0.1"
    assert got["x-forwarded-proto"] == "http" and got["x-forwarded-port"] == str(port)
    assert got["forwarded"] == "for=127.0.0.1;proto=http"
