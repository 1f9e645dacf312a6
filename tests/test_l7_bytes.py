"""A frontend's bytes_in/bytes_out are the HTTP bytes that cross the client connection,
heads and bodies both ways (chunk framing and the proxy's own error pages included), and
an https frontend counts them exactly as a plain one does."""
import socket
import ssl

import pytest
import trustme

from lbfast.enums import Protocol
from tests.l7_harness import L7Runner, Recorder, backend, free_port, frontend
from tests.test_l7_tls import cert_spec

BODY = b"x" * 100
# keep-alive GET, a POST with a body, then a chunked response that closes the connection
REQUESTS = (b"GET /length HTTP/1.1\r\nHost: t\r\n\r\n"
            + b"POST /length HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + BODY
            + b"GET /chunked HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
ERROR_REQUEST = b"GET /nobody HTTP/1.1\r\nHost: t\r\n\r\n"


def respond(buf: bytes) -> bytes | None:
    if b"\r\n\r\n" not in buf:
        return None
    head, _, rest = buf.partition(b"\r\n\r\n")
    if head.startswith(b"POST") and len(rest) < len(BODY):
        return None
    if b"/chunked" in head.split(b"\r\n", 1)[0]:
        return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Pad: abc\r\n\r\nhello"


@pytest.fixture(scope="module")
def setup():
    ca = trustme.CA()
    rec = Recorder(respond)
    dead = free_port()          # nothing listens: the proxy answers 503 itself
    r = L7Runner(workers=1)
    ports = [free_port() for _ in range(4)]
    certs = (cert_spec(ca, 1, "a.test"),)
    live, gone = backend([("127.0.0.1", rec.port)]), backend([("127.0.0.1", dead)], backend_id=2)
    r.apply(frontend(ports[0], live, frontend_id=1),
            frontend(ports[1], live, frontend_id=2, protocol=Protocol.HTTPS, certificates=certs),
            frontend(ports[2], gone, frontend_id=3),
            frontend(ports[3], gone, frontend_id=4, protocol=Protocol.HTTPS, certificates=certs))
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    yield r, ports, ctx
    r.close()
    rec.close()


def exchange(port: int, data: bytes, ctx: ssl.SSLContext | None) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        s = ctx.wrap_socket(raw, server_hostname="a.test") if ctx is not None else raw
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def counters(r: L7Runner, port: int) -> tuple[int, int]:
    f = next(f for f in r.stats()["frontends"] if f["port"] == port)
    return f["bytes_in"], f["bytes_out"]


@pytest.mark.parametrize("requests, plain_port, tls_port", [(REQUESTS, 0, 1), (ERROR_REQUEST, 2, 3)],
                         ids=["responses", "error-page"])
def test_plain_and_https_count_the_same_bytes(setup, requests, plain_port, tls_port):
    r, ports, ctx = setup
    plain = exchange(ports[plain_port], requests, None)
    tls = exchange(ports[tls_port], requests, ctx)
    assert plain == tls and plain.startswith(b"HTTP/1.1 ")
    expected = (len(requests), len(plain))
    assert counters(r, ports[plain_port]) == expected
    assert counters(r, ports[tls_port]) == expected
