"""Chunked bodies both ways: a chunked upload reaches the server whole (re-chunked), a
chunked or close-delimited response reaches an HTTP/1.1 client chunked."""
import hashlib
import socket
import threading

import pytest

from tests.l7_harness import Backends, L7Runner, Recorder, backend, free_port, frontend, read_response


@pytest.fixture(scope="module")
def runner():
    r = L7Runner(workers=1)
    yield r
    r.close()


def test_chunked_upload(runner):
    import json
    b = Backends(1)
    port = free_port()
    runner.apply(frontend(port, backend(b.servers)))
    parts = [bytes([i]) * (1000 * i + 1) for i in range(1, 40)]
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\nX-Trailer: 1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /sink HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(body), 777):      # odd slices: chunk lines split across reads
            s.sendall(body[i:i + 777])
        status, _, got = read_response(s.makefile("rb"))
    whole = b"".join(parts)
    assert status == 200
    assert json.loads(got) == {"length": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    b.close()


def test_chunked_and_close_delimited_responses(runner):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    rec = Recorder(respond=lambda buf: chunked if b"\r\n\r\n" in buf else None)
    port = free_port()
    runner.apply(frontend(port, backend([("127.0.0.1", rec.port)])))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        for _ in range(3):
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            status, headers, body = read_response(f)
            assert (status, headers["transfer-encoding"], body) == (200, "chunked", b"hello world")
    rec.close()

    def close_delimited(conn_sock):
        conn, _ = conn_sock.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        conn.close()
    srv = socket.create_server(("127.0.0.1", 0))
    threading.Thread(target=close_delimited, args=(srv,), daemon=True).start()
    port2 = free_port()
    runner.apply(frontend(port2, backend([("127.0.0.1", srv.getsockname()[1])], backend_id=2), frontend_id=2))
    with socket.create_connection(("127.0.0.1", port2), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        status, headers, body = read_response(s.makefile("rb"))
        assert (status, headers.get("transfer-encoding"), body) == (200, "chunked", b"until the end")
    srv.close()
