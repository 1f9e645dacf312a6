"""Real traffic through load balancers made with the API: the README's set-up (API token,
ip_pool 127.0.0.64/26, nothing else), two real backend servers, requests through the VIP
reaching both; stickiness switched through the API (in either dialect) while a
long-lived connection keeps working; the counters the API reports are the real ones."""
import socket
import time

import pytest

from tests.apihttp import POOL, TOKEN, ApiDaemon
from tests.lbrun import Backends, ask, free_port, wait_for


@pytest.fixture(scope="module")
def backends():
    b = Backends(["a", "b"])
    yield b
    b.close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = ApiDaemon(tmp_path_factory.mktemp("traffic"), pool=POOL)
    yield d
    d.close()


class KeepAlive:
    """One HTTP/1.1 connection used for many requests."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=5)
        self.buf = b""

    def get(self, path: str = "/") -> tuple[int, dict, bytes]:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", 0))
        while len(self.buf) < length:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body

    def close(self):
        self.sock.close()


def names(vip: str, port: int, n: int = 12) -> list[str]:
    return [ask(vip, port) for _ in range(n)]


def test_traffic_and_stickiness_switch(srv, backends):
    api = srv.api
    port = free_port()
    nb = api.ok(api.linode("POST", "/v4/nodebalancers", {"region": "local", "label": "traffic", "configs": [
        {"port": port, "protocol": "tcp", "algorithm": "roundrobin", "stickiness": "none", "check": "none",
         "nodes": [{"address": f"127.0.0.1:{backends.http['a']}", "label": "back-a"},
                   {"address": f"127.0.0.1:{backends.http['b']}", "label": "back-b"}]}]}))
    vip = nb["ipv4"]
    assert vip.startswith("127.0.0.")
    wait_for(lambda: ask(vip, port) in ("a", "b"), what="the frontend on the VIP")
    assert set(names(vip, port)) == {"a", "b"}                     # both servers get requests

    long = KeepAlive(vip, port)
    status, headers, first = long.get()
    assert status == 200
    pinned = first.decode()
    # table stickiness, through the Linode dialect: new connections from this client stick
    [cfg] = api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}/configs"))["data"]
    api.ok(api.linode("PUT", f"/v4/nodebalancers/{nb['id']}/configs/{cfg['id']}", {"stickiness": "table"}))
    assert len(set(names(vip, port))) == 1
    assert long.get()[2].decode() == pinned                        # the open connection kept going
    # and off again, through the Scaleway dialect
    lb = api.ok(api.scw("GET", "/lbs?name=traffic"))["lbs"][0]
    [backend] = api.ok(api.scw("GET", f"/lbs/{lb['id']}/backends"))["backends"]
    assert backend["sticky_sessions"] == "table"
    api.ok(api.scw("PUT", f"/backends/{backend['id']}", {"sticky_sessions": "none"}))
    assert set(names(vip, port)) == {"a", "b"}
    for _ in range(3):
        assert long.get()[2].decode() == pinned
    long.close()

    # what the API reports is what went through
    nb_now = api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}"))
    assert nb_now["transfer"]["in"] > 0 and nb_now["transfer"]["out"] > 0
    assert nb_now["transfer"]["total"] == pytest.approx(nb_now["transfer"]["in"] + nb_now["transfer"]["out"], abs=1e-5)
    stats = api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}/stats"))["data"]
    assert any(v > 0 for _, v in stats["connections"]) and any(v > 0 for _, v in stats["traffic"]["out"])
    nodes = api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}/configs/{cfg['id']}/nodes"))["data"]
    assert [n["status"] for n in nodes] == ["UP", "UP"]
    rows = api.ok(api.scw("GET", f"/lbs/{lb['id']}/backend-stats"))["backend_servers_stats"]
    assert [r["server_state"] for r in rows] == ["running", "running"]
    metrics = api.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    line = next(x for x in metrics.splitlines()
                if x.startswith("lbfast_frontend_connections_total{") and f'listen="{vip}:{port}"' in x)
    assert int(line.split()[-1]) >= 3 * 12 + 1

    api.ok(api.linode("DELETE", f"/v4/nodebalancers/{nb['id']}"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection((vip, port), timeout=0.5).close()
        except OSError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the listener stayed after the nodebalancer was deleted")


def test_http_cookie_stickiness_through_the_l7_proxy(srv, backends):
    """An http config: cookie stickiness switched on through the API, the L7 proxy sets the
    cookie and a client sending it back stays on one server."""
    api = srv.api
    port = free_port()
    nb = api.ok(api.linode("POST", "/v4/nodebalancers", {"region": "local", "label": "cookies", "configs": [
        {"port": port, "protocol": "http", "stickiness": "none", "check": "none",
         "nodes": [{"address": f"127.0.0.1:{backends.http['a']}", "label": "back-a"},
                   {"address": f"127.0.0.1:{backends.http['b']}", "label": "back-b"}]}]}))
    vip = nb["ipv4"]
    wait_for(lambda: _try(lambda: ask(vip, port)) in ("a", "b"), what="the http frontend")
    assert set(names(vip, port)) == {"a", "b"}
    [cfg] = api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}/configs"))["data"]
    api.ok(api.linode("PUT", f"/v4/nodebalancers/{nb['id']}/configs/{cfg['id']}", {"stickiness": "http_cookie"}))
    conn = KeepAlive(vip, port)
    _, headers, body = conn.get()
    conn.close()
    cookie = headers.get("set-cookie", "").split(";", 1)[0]
    assert cookie, headers
    seen = set()
    for _ in range(8):
        with socket.create_connection((vip, port), timeout=5) as s:
            s.sendall(f"GET / HTTP/1.1\r\nHost: t\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        seen.add(data.rpartition(b"\r\n\r\n")[2].decode())
    assert seen == {body.decode()}
    api.ok(api.linode("DELETE", f"/v4/nodebalancers/{nb['id']}"))


def _try(fn):
    try:
        return fn()
    except OSError:
        return None
