"""Cookie stickiness that survives: the cookie secret is made at first start and written to
the config file (0600), so a restart of the daemon, and a second daemon taking over the same
file (an HA failover), keep every client's cookie pointing at the same server. The cookie's
Max-Age follows the backend's sticky_timeout_ms; without one it is a session cookie."""
import http.client
import os
import re
import stat

import orjson
import pytest

from tests.lbrun import Backends, Daemon, free_port

NAMES = ["a", "b", "c"]
CLIENTS = 9


@pytest.fixture(scope="module")
def backends():
    b = Backends(NAMES)
    yield b
    b.close()


def config(backends: Backends, port: int, session_port: int) -> dict:
    servers = [{"address": "127.0.0.1", "port": backends.http[n]} for n in NAMES]
    sticky = {"protocol": "http", "stickiness": "cookie", "sticky_cookie_name": "SRV", "servers": servers}
    return {"dataplane": {"mode": "userspace", "workers": 2}, "lbs": [{
        "name": "t", "vip": "127.0.0.1",
        "backends": [{"name": "timed", "sticky_timeout_ms": 120_000, **sticky},
                     {"name": "session", **sticky}],
        "frontends": [{"name": "timed", "port": port, "backend": "timed"},
                      {"name": "session", "port": session_port, "backend": "session"}]}]}


def get(port: int, cookie: str | None = None) -> tuple[str, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Cookie": cookie} if cookie else {})
        resp = conn.getresponse()
        return resp.read().decode(), resp.getheader("Set-Cookie")
    finally:
        conn.close()


def check_pinned(port: int, jar: list[tuple[str, str]]) -> None:
    for cookie, server in jar:
        name, set_cookie = get(port, cookie)
        assert (name, set_cookie) == (server, None), "the cookie still names its server"


def test_restart_and_failover_keep_cookie_clients_on_their_servers(backends, tmp_path):
    port, session_port = free_port(), free_port()
    (tmp_path / "a").mkdir()
    a = Daemon(tmp_path / "a", config(backends, port, session_port))
    path = a.path
    try:
        saved = orjson.loads(path.read_bytes())
        secret = saved["dataplane"]["cookie_secret"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        jar = []
        for _ in range(CLIENTS):
            server, set_cookie = get(port)
            m = re.fullmatch(r"SRV=([A-Za-z0-9_=-]+); Path=/; HttpOnly; Max-Age=120", set_cookie)
            assert m, set_cookie
            jar.append((f"SRV={m.group(1)}", server))
        assert {s for _, s in jar} == set(NAMES)
        _, session_cookie = get(session_port)
        assert "Max-Age" not in session_cookie and "Expires" not in session_cookie
        check_pinned(port, jar)
    finally:
        a.close()

    restarted = Daemon(tmp_path / "a", None, path=path)         # the same host, restarted
    try:
        check_pinned(port, jar)
    finally:
        restarted.close()

    (tmp_path / "b").mkdir()
    b = Daemon(tmp_path / "b", None, path=path)      # the HA peer takes over the shared file
    try:
        check_pinned(port, jar)
        assert orjson.loads(path.read_bytes())["dataplane"]["cookie_secret"] == secret
    finally:
        b.close()


def test_a_bad_cookie_secret_is_refused_naming_the_field(backends, tmp_path):
    doc = config(backends, free_port(), free_port())
    doc["dataplane"]["cookie_secret"] = "short"
    from control import config as configfile
    with pytest.raises(configfile.ConfigError) as e:
        configfile.parse(orjson.dumps(doc))
    assert e.value.problems[0][0] == "dataplane.cookie_secret"
