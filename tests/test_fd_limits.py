"""Descriptors: a flood of connections to a userspace L4 frontend, up to the daemon's
open-files limit (lowered to 256 for the test), leaves every health check of the same
process working (servers stay UP, checks keep running) and the control socket answering
`lbfast status`; the listener pauses while the reserve is short and accepts again once the
flood is gone. The daemon raises its soft limit to the hard one at start and logs it."""
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lbrun import LBFAST, Backends, Daemon, free_port, wait_for

LIMIT = 256
FLOOD = 400         # more than the daemon has descriptors for
SUSTAIN_S = 2.0     # then a new connection every 2 ms: ten check intervals


def low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT // 2, LIMIT))    # soft raised at start


@pytest.fixture
def setup(tmp_path):
    backends = Backends(["a", "b"])
    echo_port, web_port = free_port(), free_port()
    check = {"interval_ms": 200, "timeout_ms": 500, "attempts": 1, "rise": 1}     # one failure: DOWN
    config = {"dataplane": {"mode": "userspace"}, "lbs": [{
        "name": "t", "vip": "127.0.0.1",
        "backends": [
            {"name": "echo", "health_check": {"type": "tcp", **check},
             "servers": [{"address": "127.0.0.1", "port": backends.echo[n]} for n in "ab"]},
            {"name": "web", "health_check": {"type": "http", "http_uri": "/health", **check},
             "servers": [{"address": "127.0.0.1", "port": backends.http[n]} for n in "ab"]}],
        "frontends": [{"name": "echo", "port": echo_port, "backend": "echo"},
                      {"name": "web", "port": web_port, "backend": "web"}]}]}
    daemon = Daemon(tmp_path, config, preexec_fn=low_limit)
    try:
        wait_for(lambda: all_servers(daemon, lambda s: s.get("health") == "UP"), what="servers up")
        yield daemon, echo_port
    finally:
        daemon.close()
        backends.close()


def all_servers(daemon: Daemon, predicate) -> bool:
    rows = [s for f in daemon.status()["frontends"] for s in f["servers"]]
    return len(rows) == 4 and all(predicate(s) for s in rows)


def echoes(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"ping")
            return s.recv(4) == b"ping"
    except OSError:
        return False


def test_a_flood_to_the_descriptor_limit_leaves_checks_and_control_working(setup):
    daemon, port = setup
    pid = daemon.proc.pid
    assert "open-files limit raised from 128 to 256" in daemon.logtext()
    flood = []

    def connect() -> None:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))       # the kernel completes it: the backlog holds the rest
        flood.append(s)
    try:
        for _ in range(FLOOD):
            connect()
        wait_for(lambda: "not accepting connections" in daemon.logtext(), timeout=10, what="reserve reached")
        in_use = len(os.listdir(f"/proc/{pid}/fd"))
        assert in_use > LIMIT * 3 // 4, in_use          # the flood did take the descriptors
        started = time.time()
        end = time.monotonic() + SUSTAIN_S
        while time.monotonic() < end:   # new connections keep coming: a freed descriptor goes at once
            connect()
            time.sleep(0.002)
        cli = subprocess.run([*LBFAST, "status", "--socket", daemon.socket], capture_output=True,
                             text=True, timeout=20, cwd=Path(__file__).parent.parent)
        assert cli.returncode == 0, cli.stderr
        assert "echo" in cli.stdout and "web" in cli.stdout
        assert all_servers(daemon, lambda s: s["health"] == "UP" and s["last_ok"] and s["last_check"] > started)
        assert "DOWN" not in daemon.logtext().split("not accepting connections", 1)[1]
    finally:
        for s in flood:
            s.close()
    wait_for(lambda: echoes(port), timeout=10, what="accepting again")
    assert "file descriptors free again: accepting connections" in daemon.logtext()


def test_the_test_process_can_hold_the_flood():
    """The flood's client side needs its own descriptors (guards the test, not lbfast)."""
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > FLOOD + 100 or sys.platform != "linux"
