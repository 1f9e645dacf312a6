"""Error pages and passive checks: 503 with no usable server, 502 for a server that closes
or answers garbage, and the passive hook on 5xx and failed connects."""

import pytest

from lbfast.enums import CheckType
from lbfast.spec import HealthCheckSpec
from tests.l7_harness import Backends, L7Runner, Recorder, backend, free_port, frontend, raw_exchange
from tests.lbrun import wait_for

PASSIVE = HealthCheckSpec(type=CheckType.HTTP, passive=True)


@pytest.fixture
def runner():
    r = L7Runner(workers=1)
    yield r
    r.close()


def test_503_when_no_server_is_up(runner):
    b = Backends(1)
    port = free_port()
    runner.apply(frontend(port, backend(b.servers)))
    runner.set_health(1, b.key(0), False)
    out = raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 503 ") and b"No server is available" in out
    runner.set_health(1, b.key(0), True)
    assert raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
    b.close()


def test_502_for_closing_and_garbage_servers(runner):
    closing = Recorder(respond=lambda buf: b"")
    garbage = Recorder(respond=lambda buf: b"NOT HTTP AT ALL\r\n\r\n")
    p1, p2 = free_port(), free_port()
    runner.apply(frontend(p1, backend([("127.0.0.1", closing.port)])),
                 frontend(p2, backend([("127.0.0.1", garbage.port)], backend_id=2), frontend_id=2))
    assert raw_exchange(p1, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 502 ")
    assert raw_exchange(p2, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").startswith(b"HTTP/1.1 502 ")
    closing.close()
    garbage.close()


def test_passive_hook_on_5xx_and_failed_connect(runner):
    b = Backends(1)
    dead = free_port()          # nothing listens there: connection refused
    port = free_port()
    runner.apply(frontend(port, backend(b.servers + [("127.0.0.1", dead)], health_check=PASSIVE)))
    for _ in range(4):
        out = raw_exchange(port, b"GET /status/500 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 500")      # the dead server is skipped by retries
    wanted = {(b.key(0), "HTTP 500"), (f"127.0.0.1:{dead}", "connect failed")}
    wait_for(lambda: wanted <= {(k, r.split(":")[0]) for _, k, r in runner.passive}, timeout=5,
             what=f"passive reports {wanted}, got {runner.passive}")


def test_no_passive_hook_without_check_passive(runner):
    b = Backends(1)
    port = free_port()
    checked = free_port()
    runner.apply(frontend(port, backend(b.servers)),
                 frontend(checked, backend(b.servers, backend_id=2, health_check=PASSIVE), frontend_id=2))
    out = raw_exchange(port, b"GET /status/503 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 503")
    # The worker reports in order: once the report of a later 503 on the checked backend
    # is in, any report of the unchecked one would be in too.
    raw_exchange(checked, b"GET /status/503 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    wait_for(lambda: runner.passive, timeout=5, what="the checked backend's passive report")
    assert [(bid, key) for bid, key, _ in runner.passive] == [(2, b.key(0))]
    b.close()
