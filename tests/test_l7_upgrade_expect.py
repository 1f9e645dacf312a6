"""Expect: 100-continue passes through (the server's 100 reaches the client before the body
is sent), and Connection: upgrade turns into a WebSocket tunnel that echoes, then closes
after timeout_tunnel of silence."""
import base64
import hashlib
import os
import socket
import threading
import time

import pytest

from tests.l7_harness import L7Runner, backend, free_port, frontend, read_response

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"


class ThreadServer:
    def __init__(self, handler):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.heads: list[bytes] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        try:
            conn.settimeout(10)
            f = conn.makefile("rb")
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = f.readline()
                    if not line:
                        return
                    head += line
                self.heads.append(head)
                if not self.handler(conn, f, head):
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.sock.close()


def expect_handler(conn, f, head):
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    if b"100-continue" in head.lower():
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = f.read(length)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return True


def ws_handler(conn, f, head):
    key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
           if line.lower().startswith(b"sec-websocket-key:")][0]
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    while True:
        hdr = f.read(2)
        if len(hdr) < 2:
            return False
        n = hdr[1] & 0x7F
        mask = f.read(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(f.read(n)))
        conn.sendall(bytes([0x81, len(payload)]) + payload)


@pytest.fixture(scope="module")
def runner():
    r = L7Runner(workers=1)
    yield r
    r.close()


def test_expect_100_continue(runner):
    srv = ThreadServer(expect_handler)
    port = free_port()
    runner.apply(frontend(port, backend([("127.0.0.1", srv.port)])))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        f = s.makefile("rb")
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert f.readline() == b"\r\n"
        s.sendall(b"hello")
        status, _, body = read_response(f)
        assert (status, body) == (200, b"hello")
    assert b"expect: 100-continue" in srv.heads[-1].lower()
    srv.close()


def ws_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_websocket_echo_through_tunnel_and_tunnel_timeout(runner):
    srv = ThreadServer(ws_handler)
    port = free_port()
    runner.apply(frontend(port, backend([("127.0.0.1", srv.port)], timeout_tunnel_ms=800,
                                        timeout_server_ms=200)))
    key = base64.b64encode(os.urandom(16))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        f = s.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.1 101")
        head = b""
        while (line := f.readline()) != b"\r\n":
            head += line
        assert base64.b64encode(hashlib.sha1(key + WS_GUID).digest()) in head
        for i in range(20):
            msg = b"message %d" % i
            s.sendall(ws_frame(msg))
            assert f.read(2 + len(msg)) == bytes([0x81, len(msg)]) + msg
        time.sleep(0.4)         # longer than timeout_server: the tunnel has its own timeout
        s.sendall(ws_frame(b"still here"))
        assert f.read(12)[2:] == b"still here"
        start = time.monotonic()
        assert f.read(1) == b""             # closed by timeout_tunnel
        assert 0.5 < time.monotonic() - start < 3
    srv.close()
