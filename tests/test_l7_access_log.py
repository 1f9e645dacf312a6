"""Access logs of an http frontend, written by real L7 workers: every field of the httplog
line for a normal request, a 502, a 504 and a client abort; the JSON format parses to the
same fields; SIGUSR1 reopens the file (logrotate); frontends without access_log write none."""
import json
import os
import re
import signal
import socket
import struct
import time

import pytest

from lbfast.enums import AccessLogFormat
from lbfast.spec import AccessLogSpec
from tests.apihttp import ApiDaemon
from tests.l7_harness import L7Runner, Recorder, backend, free_port, frontend
from tests.lbrun import wait_for

LINE = re.compile(r'^(?P<client_ip>[\d.]+):(?P<client_port>\d+) \[(?P<date>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\] '
                  r'(?P<frontend>\S+) (?P<backend>\S+)/(?P<server>\S+) '
                  r'(?P<Tq>-?\d+)/(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tr>-?\d+)/(?P<Ta>-?\d+) '
                  r'(?P<status>-?\d+) (?P<bytes_out>\d+) (?P<bytes_in>\d+) (?P<termination>\S\S) "(?P<request>[^"]*)"$')
REQUEST = b"GET /path?q=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
INTS = ("client_port", "Tq", "Tw", "Tc", "Tr", "Ta", "status", "bytes_out", "bytes_in")


@pytest.fixture(scope="module")
def runner():
    r = L7Runner(workers=1)
    yield r
    r.close()


def never_answers(buf: bytes) -> None:
    return None


def closes_at_head(buf: bytes) -> bytes | None:
    return b"" if b"\r\n\r\n" in buf else None


def serve(runner, path, respond=None, fmt=AccessLogFormat.HTTPLOG, **backend_kw):
    """A recording backend behind a fresh frontend that logs to `path`."""
    rec = Recorder(respond)
    port = free_port()
    runner.apply(frontend(port, backend([("127.0.0.1", rec.port)], **backend_kw),
                          access_log=AccessLogSpec(str(path), fmt)))
    return rec, port


def exchange(port: int, abort_after_s: float | None = None) -> tuple[int, bytes]:
    """(client port, every byte received) of one request on its own connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(REQUEST)
        if abort_after_s is not None:        # a reset: the client gave up on the request
            time.sleep(abort_after_s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return s.getsockname()[1], b""
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return s.getsockname()[1], data


def lines(path, n: int = 1, timeout: float = 5.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(got := path.read_text().splitlines()) >= n:
            return got
        time.sleep(0.05)
    raise TimeoutError(f"{path}: fewer than {n} lines")


def parsed(line: str) -> dict:
    m = LINE.match(line)
    assert m, line
    f = m.groupdict()
    for key in INTS:
        f[key] = int(f[key])
    return f


def common(f: dict, client_port: int, server_port: int) -> None:
    assert (f["client_ip"], f["client_port"]) == ("127.0.0.1", client_port)
    assert (f["frontend"], f["backend"], f["server"]) == ("frontend1", "backend1", f"127.0.0.1:{server_port}")
    assert f["bytes_in"] == len(REQUEST)
    assert f["request"] == "GET /path?q=1 HTTP/1.1"
    assert f["Tq"] >= 0 and f["Tw"] >= 0 and f["Tc"] >= 0


def test_normal_request(runner, tmp_path):
    log = tmp_path / "access.log"
    rec, port = serve(runner, log)
    before = time.time()
    client_port, data = exchange(port)
    f = parsed(lines(log)[0])
    common(f, client_port, rec.port)
    assert data.startswith(b"HTTP/1.1 200") and f["status"] == 200
    assert f["bytes_out"] == len(data)
    assert f["termination"] == "--"
    assert 0 <= f["Tr"] <= f["Ta"] < 2000
    assert f["Tq"] + f["Tw"] + f["Tc"] + f["Tr"] <= f["Ta"] + 2      # each rounded to the ms
    logged = time.mktime(time.strptime(f["date"][:-4], "%d/%b/%Y:%H:%M:%S"))
    assert before - 1 <= logged <= time.time()
    rec.close()


def test_server_closes_before_answering_502(runner, tmp_path):
    log = tmp_path / "access.log"
    rec, port = serve(runner, log, closes_at_head, retries=0)
    client_port, data = exchange(port)
    f = parsed(lines(log)[0])
    common(f, client_port, rec.port)
    assert data.startswith(b"HTTP/1.1 502") and f["status"] == 502
    assert (f["bytes_out"], f["termination"], f["Tr"]) == (len(data), "SH", -1)
    rec.close()


def test_server_timeout_504(runner, tmp_path):
    log = tmp_path / "access.log"
    rec, port = serve(runner, log, never_answers, timeout_server_ms=300)
    client_port, data = exchange(port)
    f = parsed(lines(log)[0])
    common(f, client_port, rec.port)
    assert data.startswith(b"HTTP/1.1 504") and f["status"] == 504
    assert (f["bytes_out"], f["termination"], f["Tr"]) == (len(data), "sH", -1)
    assert 250 <= f["Ta"] < 1500
    rec.close()


def test_client_abort(runner, tmp_path):
    log = tmp_path / "access.log"
    rec, port = serve(runner, log, never_answers)
    client_port, _ = exchange(port, abort_after_s=0.3)
    f = parsed(lines(log)[0])
    common(f, client_port, rec.port)
    assert (f["status"], f["bytes_out"], f["termination"], f["Tr"]) == (-1, 0, "CH", -1)
    assert 250 <= f["Ta"] < 1500
    rec.close()


def test_json_format(runner, tmp_path):
    log = tmp_path / "access.json"
    rec, port = serve(runner, log, fmt=AccessLogFormat.JSON)
    client_port, data = exchange(port)
    f = json.loads(lines(log)[0])
    assert f["date"].endswith("Z") and time.strptime(f["date"][:-5], "%Y-%m-%dT%H:%M:%S")
    del f["date"]
    assert set(f) == set(LINE.groupindex) - {"date"}
    common(f, client_port, rec.port)
    assert (f["status"], f["bytes_out"], f["termination"]) == (200, len(data), "--")
    rec.close()


def test_sigusr1_reopens_and_off_writes_nothing(runner, tmp_path):
    log = tmp_path / "access.log"
    rec, port = serve(runner, log)
    exchange(port)
    lines(log)
    log.rename(tmp_path / "access.log.1")
    for pid in runner.worker_pids():
        os.kill(pid, signal.SIGUSR1)
    time.sleep(0.2)
    exchange(port)
    assert len(lines(log)) == 1 and len(lines(tmp_path / "access.log.1")) == 1
    quiet = free_port()
    runner.apply(frontend(quiet, backend([("127.0.0.1", rec.port)])))
    exchange(quiet)
    time.sleep(0.5)
    assert len(lines(log)) == 1
    rec.close()


def test_scaleway_enable_access_logs_reaches_the_workers(tmp_path):
    """Scaleway's enable_access_logs is the frontend's access_log; config access_log says where."""
    log = tmp_path / "access.log"
    rec = Recorder()
    srv = ApiDaemon(tmp_path, config={"access_log": {"path": str(log), "format": "json"}})
    try:
        api = srv.api
        lb = api.ok(api.scw("POST", "/lbs", {"name": "lb", "description": "", "project_id": "p", "tags": []}))
        be = api.ok(api.scw("POST", f"/lbs/{lb['id']}/backends", {
            "name": "web", "forward_protocol": "http", "forward_port": rec.port,
            "forward_port_algorithm": "roundrobin", "sticky_sessions": "none", "sticky_sessions_cookie_name": "",
            "server_ip": ["127.0.0.1"], "health_check": {"port": rec.port, "check_delay": "1s",
                                                         "check_timeout": "500ms", "check_max_retries": 3,
                                                         "tcp_config": {}}}))
        port = free_port()
        fe = api.ok(api.scw("POST", f"/lbs/{lb['id']}/frontends", {
            "name": "front", "inbound_port": port, "backend_id": be["id"], "enable_access_logs": True}))
        assert fe["enable_access_logs"] is True
        assert srv.file()["lbs"][0]["frontends"][0]["access_log"] is True
        vip = lb["ip"][0]["ip_address"]
        wait_for(lambda: ask(vip, port) == "ok", what="the frontend")
        # before the server's first check passes: 503, no server, ended at connect by the LB side
        logged = wait_for(lambda: [json.loads(x) for x in lines(log) if '"status":200' in x], what="a 200 line")
        f = logged[0]
        assert (f["frontend"], f["backend"], f["server"]) == ("front", "web", f"127.0.0.1:{rec.port}")
        for f in (json.loads(x) for x in lines(log) if '"status":503' in x):
            assert (f["server"], f["termination"], f["Tc"], f["Tr"]) == ("<NOSRV>", "SC", -1, -1)
    finally:
        srv.close()
        rec.close()


def ask(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(REQUEST)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return ""
    return data.rpartition(b"\r\n\r\n")[2].decode() if data.startswith(b"HTTP/1.1 200") else ""
