"""Health checks driving the userspace data planes with real traffic: a killed server
leaves rotation within interval x attempts + timeout, shutdown_sessions cuts its sessions,
it returns after rise, backups serve when every accept server is down, and a reload
keeps check state."""
import socket
import time
from collections import Counter

import pytest

from tests.lbrun import Backends, Daemon, ask, free_port, wait_for

VIP = "127.0.0.13"


def config(backends, port, names, check=None, **backend):
    check = check or {"type": "http", "http_uri": "/health", "interval_ms": 300, "timeout_ms": 200,
                      "attempts": 2, "rise": 2}
    servers = [{"address": "127.0.0.1", "port": backends.http[n], "label": n} for n in names]
    return {"lbs": [{"name": "t", "vip": VIP,
                     "backends": [{"name": "pool", "forward_port": 1, "health_check": check,
                                   "servers": servers, **backend}],
                     "frontends": [{"name": "f", "port": port, "backend": "pool"}]}]}


def states(d) -> dict:
    return {s["label"] if "label" in s else s["key"]: s.get("health")
            for s in d.status()["frontends"][0]["servers"]}


def health_by_port(d, backends) -> dict:
    by_key = {s["key"]: s.get("health") for s in d.status()["frontends"][0]["servers"]}
    return {n: by_key.get(f"127.0.0.1:{p}") for n, p in backends.http.items()}


def post(port: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        while s.recv(4096):
            pass


@pytest.fixture
def backends():
    b = Backends(["a", "b", "c"])
    yield b
    b.close()


@pytest.mark.parametrize("protocol", ["tcp", "http"])     # userspace L4 and the L7 proxy
def test_failed_server_leaves_rotation_and_comes_back(backends, tmp_path, protocol):
    port = free_port(VIP)
    d = Daemon(tmp_path, config(backends, port, ["a", "b"], protocol=protocol))
    try:
        wait_for(lambda: health_by_port(d, backends)["a"] == "UP" and health_by_port(d, backends)["b"] == "UP",
                 what="servers up")
        assert set(Counter(ask(VIP, port) for _ in range(20))) == {"a", "b"}
        post(backends.http["a"], "/health/down")        # the check fails, traffic still works
        t0 = time.monotonic()
        wait_for(lambda: health_by_port(d, backends)["a"] == "DOWN", timeout=5, what="a down")
        assert time.monotonic() - t0 < 0.3 * 2 + 0.2 + 0.5     # interval x attempts + timeout (+ slack)
        assert Counter(ask(VIP, port) for _ in range(20)) == {"b": 20}
        post(backends.http["a"], "/health/up")
        wait_for(lambda: health_by_port(d, backends)["a"] == "UP", timeout=5, what="a up again")
        assert set(Counter(ask(VIP, port) for _ in range(20))) == {"a", "b"}
        row = [s for s in d.status()["frontends"][0]["servers"] if s["key"].endswith(str(backends.http["a"]))][0]
        assert row["last_ok"] is True and "200" in row["last_reason"] and row["changed_at"] > 0
        assert "DOWN" in d.logtext() and "UP" in d.logtext()
    finally:
        d.close()


def test_backup_serves_when_all_accept_servers_are_down(backends, tmp_path):
    port = free_port(VIP)
    cfg = config(backends, port, ["a", "b", "c"])
    cfg["lbs"][0]["backends"][0]["servers"][2]["mode"] = "backup"
    d = Daemon(tmp_path, cfg)
    try:
        wait_for(lambda: all(v == "UP" for v in health_by_port(d, backends).values()), what="all up")
        assert set(Counter(ask(VIP, port) for _ in range(20))) == {"a", "b"}
        post(backends.http["a"], "/health/down")
        post(backends.http["b"], "/health/down")
        wait_for(lambda: health_by_port(d, backends)["b"] == "DOWN" and health_by_port(d, backends)["a"] == "DOWN",
                 timeout=5, what="accept servers down")
        assert Counter(ask(VIP, port) for _ in range(10)) == {"c": 10}
    finally:
        post(backends.http["a"], "/health/up")
        post(backends.http["b"], "/health/up")
        d.close()


@pytest.mark.parametrize("action", ["shutdown_sessions", "none"])
def test_marked_down_action(backends, tmp_path, action):
    """The check (HTTP on the server's http port) fails while the session's own server
    (its echo port) keeps running: only shutdown_sessions cuts the session."""
    port = free_port(VIP)
    check = {"type": "http", "http_uri": "/health", "port": backends.http["a"], "interval_ms": 300,
             "timeout_ms": 200, "attempts": 1, "rise": 1}
    cfg = config(backends, port, ["a"], check=check, on_marked_down_action=action)
    cfg["lbs"][0]["backends"][0]["servers"] = [{"address": "127.0.0.1", "port": backends.echo["a"]}]
    d = Daemon(tmp_path, cfg)
    try:
        wait_for(lambda: d.status()["frontends"][0]["servers"][0].get("health") == "UP", what="up")
        s = socket.create_connection((VIP, port))
        s.sendall(b"x")
        assert s.recv(1) == b"x"
        post(backends.http["a"], "/health/down")
        wait_for(lambda: d.status()["frontends"][0]["servers"][0].get("health") == "DOWN", timeout=5,
                 what="down")
        time.sleep(0.2)
        s.settimeout(2)
        try:
            s.sendall(b"y")
            alive = s.recv(1) == b"y"
        except OSError:
            alive = False
        assert alive == (action == "none")
        s.close()
    finally:
        post(backends.http["a"], "/health/up")
        d.close()


def test_reload_keeps_check_state(backends, tmp_path):
    port = free_port(VIP)
    check = {"type": "http", "http_uri": "/health", "interval_ms": 400, "timeout_ms": 200,
             "attempts": 1, "rise": 1}
    d = Daemon(tmp_path, config(backends, port, ["a", "b"], check=check))
    try:
        post(backends.http["b"], "/health/down")
        wait_for(lambda: health_by_port(d, backends)["a"] == "UP" and health_by_port(d, backends)["b"] == "DOWN",
                 what="a up, b down")
        before = {s["key"]: (s["health"], s["changed_at"]) for s in d.status()["frontends"][0]["servers"]}
        for i in range(3):          # reloads that add a server and change other backend fields
            cfg = config(backends, port, ["a", "b", "c"][: 2 + i % 2], check=check,
                         timeout_server_ms=1000 + i)
            d.write(cfg)
            d.reload()
            after = {s["key"]: (s["health"], s["changed_at"]) for s in d.status()["frontends"][0]["servers"]}
            for key, state in before.items():
                assert after[key] == state      # no flap to UP, no re-check from scratch
        assert Counter(ask(VIP, port) for _ in range(10))["b"] == 0
    finally:
        post(backends.http["b"], "/health/up")
        d.close()
