"""Passive checks as the products define them, through a real daemon, a real L7 frontend and
a real server that answers what it is asked: a failure is a 5xx other than 501 and 505,
`attempts` of them in a row take the server down (a good answer in between starts the
count over), and nothing a client does (a slow upload outlasting timeout_server, an
aborted upload) counts against the server."""
import socket
import time

import pytest

from tests.lbrun import Backends, Daemon, free_port, wait_for

ATTEMPTS = 3
CASES = ("not_failures", "consecutive", "client_faults")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    backends = Backends(["s"])
    port = backends.http["s"]
    ports = {case: free_port() for case in CASES}
    # one backend per case over the same server: each has its own check state
    check = {"type": "http", "http_uri": "/health", "interval_ms": 60_000, "attempts": ATTEMPTS,
             "rise": 2, "passive": True}
    config = {"dataplane": {"mode": "userspace", "workers": 1}, "lbs": [{
        "name": "t", "vip": "127.0.0.1",
        "backends": [{"name": case, "protocol": "http", "forward_port": port, "timeout_server_ms": 300,
                      "health_check": check, "servers": [{"address": "127.0.0.1"}]} for case in CASES],
        "frontends": [{"name": case, "port": ports[case], "backend": case} for case in CASES]}]}
    daemon = Daemon(tmp_path_factory.mktemp("passive"), config)
    try:
        for case in CASES:
            wait_for(lambda: health(daemon, case) == "UP", what=f"{case}: first check")
        yield daemon, ports
    finally:
        daemon.close()
        backends.close()


def server_row(daemon: Daemon, frontend: str) -> dict:
    row = next(f for f in daemon.status()["frontends"] if f["frontend"] == frontend)
    return row["servers"][0] if row["servers"] else {}     # L7 rows come with the workers' stats


def health(daemon: Daemon, frontend: str) -> str | None:
    return server_row(daemon, frontend).get("health")


def status_of(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def settle(daemon: Daemon) -> None:
    """Passive events travel worker -> daemon asynchronously: a status round trip later
    plus a little time, they have arrived."""
    time.sleep(0.3)
    daemon.status()


def test_501_and_505_are_answers_not_failures(setup):
    daemon, ports = setup
    for code in (501, 505) * (2 * ATTEMPTS):
        assert status_of(ports["not_failures"], f"/status/{code}") == code
    settle(daemon)
    assert health(daemon, "not_failures") == "UP"


def test_attempts_5xx_in_a_row_take_the_server_down(setup):
    daemon, ports = setup
    port = ports["consecutive"]
    for _ in range(3):          # attempts - 1 failures, then a good answer: never down
        for _ in range(ATTEMPTS - 1):
            assert status_of(port, "/status/500") == 500
        settle(daemon)
        assert status_of(port, "/") == 200
    settle(daemon)
    assert health(daemon, "consecutive") == "UP"
    for _ in range(ATTEMPTS):
        assert status_of(port, "/status/500") == 500
    wait_for(lambda: health(daemon, "consecutive") == "DOWN", timeout=5, what="passive down")
    assert status_of(port, "/") == 503      # the pool is empty until rise active checks pass
    assert server_row(daemon, "consecutive")["change_reason"] == f"passive: {ATTEMPTS} failures in a row, the last: HTTP 500"


def slow_upload(port: int, abort: bool) -> bytes:
    """A POST whose body is still arriving when timeout_server (300 ms) ends; or, with
    `abort`, a client that gives up halfway through its body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /sink HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100)
        if abort:
            time.sleep(0.1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return b""
        for _ in range(5):                  # still sending, slowly, as timeout_server runs
            time.sleep(0.05)
            s.sendall(b"x" * 10)
        data = b""                          # then the body is still unfinished when the 504 comes
        while chunk := s.recv(65536):
            data += chunk
        return data


def test_slow_uploads_and_client_aborts_are_not_the_servers_fault(setup):
    daemon, ports = setup
    port = ports["client_faults"]
    for _ in range(ATTEMPTS + 1):
        assert slow_upload(port, abort=False).startswith(b"HTTP/1.1 504 ")
    for _ in range(ATTEMPTS + 1):
        slow_upload(port, abort=True)
    settle(daemon)
    assert health(daemon, "client_faults") == "UP"
    assert status_of(port, "/") == 200
