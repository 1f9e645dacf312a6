"""max_connections per frontend (Scaleway's backend field) through a real daemon: beyond the
cap a connection waits timeout_queue for a slot; it is served when one frees up, else it
gets 503 (http) or is closed (tcp)."""
import socket
import time

import pytest

from tests.lbrun import Backends, Daemon, free_port

QUEUE_MS = 400


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    backends = Backends(["a"])
    tcp_port, http_port = free_port(), free_port()
    capped = {"max_connections": 2, "timeout_queue_ms": QUEUE_MS}
    config = {"dataplane": {"mode": "userspace", "workers": 1}, "lbs": [{
        "name": "t", "vip": "127.0.0.1",
        "backends": [
            {"name": "echo", "servers": [{"address": "127.0.0.1", "port": backends.echo["a"]}], **capped},
            {"name": "web", "protocol": "http", **capped,
             "servers": [{"address": "127.0.0.1", "port": backends.http["a"]}]}],
        "frontends": [{"name": "echo", "port": tcp_port, "backend": "echo"},
                      {"name": "web", "port": http_port, "backend": "web"}]}]}
    daemon = Daemon(tmp_path_factory.mktemp("maxconn"), config)
    yield tcp_port, http_port
    daemon.close()
    backends.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=3)


def echo(s: socket.socket, timeout: float = 3) -> bytes:
    s.settimeout(timeout)
    s.sendall(b"ping")
    try:
        return s.recv(4)
    except TimeoutError:
        return b"(nothing)"
    except ConnectionResetError:
        return b""


def test_tcp_beyond_the_cap_waits_for_a_slot_then_is_closed(setup):
    port, _ = setup
    first, second = connect(port), connect(port)
    assert echo(first) == echo(second) == b"ping"
    waiting = connect(port)
    assert echo(waiting, timeout=0.2) == b"(nothing)"      # queued: not served yet
    first.close()
    waiting.settimeout(3)
    assert waiting.recv(4) == b"ping"                       # the freed slot is its
    late = connect(port)
    t0 = time.monotonic()
    assert echo(late) == b""                                # closed after timeout_queue
    assert QUEUE_MS / 1000 * 0.8 < time.monotonic() - t0 < 2.5
    for s in (second, waiting, late):
        s.close()


def request(s: socket.socket) -> bytes:
    """One keep-alive GET; the server's body is its name, "a"."""
    s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    data = b""
    while not data.endswith(b"\r\n\r\na"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_http_beyond_the_cap_waits_for_a_slot_then_gets_503(setup):
    _, port = setup
    held = [connect(port), connect(port)]
    for s in held:
        assert request(s).startswith(b"HTTP/1.1 200")      # keep-alive: both slots stay taken
    late = connect(port)
    t0 = time.monotonic()
    late.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    answer = late.recv(65536)
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert QUEUE_MS / 1000 * 0.8 < time.monotonic() - t0 < 2.5
    queued = connect(port)
    queued.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    time.sleep(0.15)
    held.pop().close()
    assert queued.recv(65536).startswith(b"HTTP/1.1 200")  # served once a slot freed
    for s in (*held, queued, late):
        s.close()
