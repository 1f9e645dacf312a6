"""Access log of a userspace L4 frontend: one tcplog-like line per connection (client,
frontend, backend/server, Tw/Tc/Tt, bytes both ways, termination), SC with no server when
none answers, and SIGUSR1 to the daemon reopens the file."""
import os
import re
import signal
import socket
import time

from tests.lbrun import Backends, Daemon, free_port, wait_for

VIP = "127.0.0.15"
LINE = re.compile(r'^(?P<client>[\d.]+:\d+) \[[^\]]+\] (?P<frontend>\S+) (?P<backend>\S+)/(?P<server>\S+) '
                  r'(?P<Tw>-?\d+)/(?P<Tc>-?\d+)/(?P<Tt>-?\d+) (?P<bytes_out>\d+) (?P<bytes_in>\d+) (?P<termination>\S\S)$')


def config(log, servers) -> dict:
    return {"dataplane": {"mode": "userspace"}, "access_log": {"path": str(log)},
            "lbs": [{"name": "t", "vip": VIP,
                     "backends": [{"name": "pool", "forward_port": 1, "servers": servers}],
                     "frontends": [{"name": "f", "port": free_port(VIP), "backend": "pool", "access_log": True}]}]}


def echo(port: int, payload: bytes) -> tuple[str, bytes]:
    with socket.create_connection((VIP, port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return "%s:%d" % s.getsockname(), data


def logged(path, n: int = 1) -> list[dict]:
    def read():
        got = path.read_text().splitlines() if path.exists() else []
        return got if len(got) >= n else None
    out = []
    for line in wait_for(read, timeout=5, what=f"{n} lines in {path}"):
        m = LINE.match(line)
        assert m, line
        out.append(m.groupdict())
    return out


def test_a_line_per_connection(tmp_path):
    log = tmp_path / "access.log"
    backends = Backends(["a"])
    cfg = config(log, [{"address": "127.0.0.1", "port": backends.echo["a"]}])
    port = cfg["lbs"][0]["frontends"][0]["port"]
    d = Daemon(tmp_path, cfg)
    try:
        client, data = echo(port, b"hello")
        assert data == b"hello"
        (f,) = logged(log)
        assert (f["client"], f["frontend"], f["backend"]) == (client, "f", "pool")
        assert f["server"] == f"127.0.0.1:{backends.echo['a']}"
        assert (f["Tw"], f["bytes_out"], f["bytes_in"], f["termination"]) == ("0", "5", "5", "--")
        assert 0 <= int(f["Tc"]) <= int(f["Tt"]) < 2000
        log.rename(tmp_path / "access.log.1")
        os.kill(d.proc.pid, signal.SIGUSR1)
        time.sleep(0.2)
        echo(port, b"again")
        assert logged(log)[0]["bytes_in"] == "5" and len(logged(tmp_path / "access.log.1")) == 1
    finally:
        d.close()
        backends.close()


def test_no_server_answers(tmp_path):
    log = tmp_path / "access.log"
    cfg = config(log, [{"address": "127.0.0.1", "port": free_port()}])
    port = cfg["lbs"][0]["frontends"][0]["port"]
    d = Daemon(tmp_path, cfg)
    try:
        _, data = echo(port, b"x")
        assert data == b""
        (f,) = logged(log)
        assert (f["server"], f["Tc"], f["bytes_out"], f["termination"]) == ("<NOSRV>", "-1", "0", "SC")
    finally:
        d.close()
