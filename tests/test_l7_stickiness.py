"""Cookie stickiness: an opaque signed cookie pins each client to a server over 1,000
requests; a forged cookie is ignored; when the pinned server goes down the client moves
and its cookie is replaced. Table stickiness pins by source address."""
import http.client
import re

import pytest

from lbfast.enums import Algorithm, Stickiness
from lbfast.l7._cookie import server_token
from tests.l7_harness import Backends, L7Runner, backend, free_port, frontend


@pytest.fixture(scope="module")
def servers():
    b = Backends(3)
    yield b
    b.close()


@pytest.fixture
def runner():
    r = L7Runner(workers=2)
    yield r
    r.close()


def get(conn, cookie=None):
    conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
    resp = conn.getresponse()
    return resp.read().decode(), resp.getheader("Set-Cookie")


def cookie_value(set_cookie: str) -> str:
    m = re.match(r"SRV=([^;]+); Path=/; HttpOnly", set_cookie)
    assert m, set_cookie
    return m.group(1)


def test_cookie_pins_each_client_over_1000_requests(servers, runner):
    port = free_port()
    runner.apply(frontend(port, backend(servers.servers, stickiness=Stickiness.COOKIE,
                                        sticky_cookie_name="SRV")))
    clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(8)]
    jar = [None] * len(clients)
    pinned = [None] * len(clients)
    for i in range(1000):
        k = i % len(clients)
        name, set_cookie = get(clients[k], jar[k])
        if jar[k] is None:
            assert set_cookie is not None
            value = cookie_value(set_cookie)
            assert "127.0.0.1" not in value and str(servers.ports[0]) not in value
            jar[k] = f"other=1; SRV={value}; x=y"
            pinned[k] = name
        else:
            assert set_cookie is None, "a valid cookie is not replaced"
            assert name == pinned[k]
    assert len(set(pinned)) == 3            # the first choices still follow round robin
    for c in clients:
        c.close()


def test_forged_cookie_is_ignored(servers, runner):
    port = free_port()
    runner.apply(frontend(port, backend(servers.servers, stickiness=Stickiness.COOKIE,
                                        sticky_cookie_name="SRV")))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    forged = [server_token(b"another-secret", 1, servers.key(0)).decode(), "127.0.0.1:%d" % servers.ports[0],
              "AAAAAAAAAAAAAAAA", ""]
    names = set()
    for f in forged * 3:
        name, set_cookie = get(c, f"SRV={f}")
        assert set_cookie is not None and cookie_value(set_cookie) != f
        names.add(name)
    assert len(names) > 1       # not routed by the forged value: the algorithm decides
    real = server_token(b"test-secret", 1, servers.key(2)).decode()
    assert get(c, f"SRV={real}") == ("b2", None)


def test_cookie_falls_over_when_server_goes_down(servers, runner):
    port = free_port()
    runner.apply(frontend(port, backend(servers.servers, stickiness=Stickiness.COOKIE,
                                        sticky_cookie_name="SRV")))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    name, set_cookie = get(c)
    cookie = f"SRV={cookie_value(set_cookie)}"
    index = int(name[1:])
    for _ in range(5):
        assert get(c, cookie) == (name, None)
    runner.set_health(1, servers.key(index), False)
    moved, new_cookie = get(c, cookie)
    assert moved != name and new_cookie is not None
    cookie2 = f"SRV={cookie_value(new_cookie)}"
    for _ in range(5):
        assert get(c, cookie2) == (moved, None)
    runner.set_health(1, servers.key(index), True)
    assert get(c, cookie) == (name, None)       # the old cookie is good again once it is back


def test_table_stickiness_and_weights(servers, runner):
    port = free_port()
    runner.apply(frontend(port, backend(servers.servers, stickiness=Stickiness.TABLE)))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    names = {get(c)[0] for _ in range(30)}
    assert len(names) == 1                  # one source address: one server
    port2 = free_port()
    be = backend(servers.servers, backend_id=2, algorithm=Algorithm.ROUNDROBIN)
    be = be.__class__(**{**{f: getattr(be, f) for f in be.__slots__},
                         "servers": tuple(s.__class__(s.id, s.address, s.port, weight=w)
                                          for s, w in zip(be.servers, (3, 1, 0 or 1)))})
    runner.apply(frontend(port, backend(servers.servers, stickiness=Stickiness.TABLE)),
                 frontend(port2, be, frontend_id=2))
    c2 = http.client.HTTPConnection("127.0.0.1", port2, timeout=5)
    counts = {}
    for _ in range(50):
        n = get(c2)[0]
        counts[n] = counts.get(n, 0) + 1
    assert counts["b0"] == 30 and counts["b1"] == 10 and counts["b2"] == 10
