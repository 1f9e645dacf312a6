"""The lbfast CLI: offline config editing with tables and --json, `check` like haproxy -c,
and status/stats/reload against a running daemon."""
import re
import subprocess
import sys

import click
import orjson
import pytest
from click.testing import CliRunner

from control.cli import cli
from tests.lbrun import Backends, Daemon, ask, free_port


@pytest.fixture
def lbfast(tmp_path):
    path = tmp_path / "lbfast.json"
    runner = CliRunner()

    def invoke(*args, ok=True):
        result = runner.invoke(cli, [*args, "--config", str(path)] if args[0] not in ("status", "stats", "reload") else list(args))
        if ok:
            assert result.exit_code == 0, result.output
        return result
    invoke.path = path
    return invoke


def build(lbfast):
    lbfast("lb", "create", "web", "--vip", "127.0.0.12", "--description", "shop", "--tags", "a", "--tags", "b")
    lbfast("backend", "create", "web", "app", "--forward-port", "8080", "--algorithm", "leastconn",
           "--check-type", "http", "--check-http-uri", "/health", "--check-attempts", "5")
    lbfast("server", "create", "web", "app", "10.0.0.11", "--weight", "3", "--label", "one")
    lbfast("server", "create", "web", "app", "2001:db8::12", "--port", "8081", "--mode", "backup")
    lbfast("frontend", "create", "web", "http", "--port", "80", "--backend", "app")


def test_create_list_show_as_tables_and_json(lbfast):
    build(lbfast)
    out = lbfast("lb", "list").output
    assert out.splitlines()[0].split() == ["ID", "NAME", "VIP", "FRONTENDS", "BACKENDS", "THROTTLE"]
    assert "web" in out and "127.0.0.12" in out
    rows = orjson.loads(lbfast("server", "list", "web", "app", "--json").output)
    assert [(r["address"], r["port"], r["weight"], r["mode"]) for r in rows] == [
        ("10.0.0.11", 8080, 3, "accept"), ("2001:db8::12", 8081, 100, "backup")]
    backend = orjson.loads(lbfast("backend", "show", "web", "app", "--json").output)
    assert backend["health_check"]["type"] == "http" and backend["health_check"]["attempts"] == 5
    assert "leastconn" in lbfast("backend", "list", "web").output
    lb = orjson.loads(lbfast("lb", "show", "web", "--json").output)
    assert lb["tags"] == ["a", "b"] and lb["description"] == "shop"
    assert "80" in lbfast("frontend", "list", "web").output
    # servers are found by address:port, label or id
    assert orjson.loads(lbfast("server", "show", "web", "app", "[2001:db8::12]:8081", "--json").output)["mode"] == "backup"
    assert orjson.loads(lbfast("server", "show", "web", "app", "one", "--json").output)["weight"] == 3


def test_update_and_health_check_merge(lbfast):
    build(lbfast)
    lbfast("backend", "update", "web", "app", "--check-timeout-ms", "1500")
    hc = orjson.loads(lbfast("backend", "show", "web", "app", "--json").output)["health_check"]
    assert hc["timeout_ms"] == 1500 and hc["http_uri"] == "/health"     # other fields kept
    lbfast("backend", "update", "web", "app", "--name", "shop")
    assert orjson.loads(lbfast("frontend", "show", "web", "http", "--json").output)["backend"] == "shop"


def test_bad_input_names_the_field_and_changes_nothing(lbfast):
    build(lbfast)
    before = lbfast.path.read_bytes()
    r = lbfast("server", "update", "web", "app", "10.0.0.11", "--weight", "0", ok=False)
    assert r.exit_code == 2 and "lbs[0].backends[0].servers[0].weight: must be 1..255" in r.output
    r = lbfast("frontend", "create", "web", "dup", "--port", "80", "--backend", "app", ok=False)
    assert r.exit_code == 2 and "lbs[0].frontends[1].port" in r.output
    r = lbfast("backend", "delete", "web", "app", ok=False)
    assert r.exit_code == 2 and "used by frontend" in r.output
    r = lbfast("server", "show", "web", "app", "10.9.9.9", ok=False)
    assert r.exit_code == 3 and "no server" in r.output
    assert lbfast.path.read_bytes() == before


def test_delete(lbfast):
    build(lbfast)
    lbfast("server", "delete", "web", "app", "10.0.0.11")
    assert len(orjson.loads(lbfast("server", "list", "web", "app", "--json").output)) == 1
    lbfast("frontend", "delete", "web", "http")
    lbfast("backend", "delete", "web", "app")
    lbfast("lb", "delete", "web")
    assert orjson.loads(lbfast("lb", "list", "--json").output) == []


def test_check_exit_codes(lbfast, tmp_path):
    build(lbfast)
    r = lbfast("check")
    assert "valid, 1 load balancer(s), 1 frontend(s)" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"lbs": [{"name": "x", "vip": "127.0.0.1", "client_conn_throttle": 50}]}')
    r = CliRunner().invoke(cli, ["check", "--config", str(bad), "--json"])
    assert r.exit_code == 2
    assert orjson.loads(r.output)["errors"] == [{"field": "lbs[0].client_conn_throttle", "message": "must be 0..20"}]


def test_version():
    r = CliRunner().invoke(cli, ["--version"])
    assert (r.exit_code, r.output) == (0, "lbfast 0.1.0\n")


def test_help_everywhere():
    for args in (["--help"], ["lb", "--help"], ["server", "create", "--help"], ["run", "--help"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0 and "Usage:" in r.output

    def without_help(group, path):
        for name, command in group.commands.items():
            if not command.help:
                yield " ".join([*path, name])
            if isinstance(command, click.Group):
                yield from without_help(command, [*path, name])
    assert list(without_help(cli, [])) == []


def test_status_stats_reload_against_a_running_daemon(tmp_path):
    backends = Backends(["a"])
    port = free_port("127.0.0.12")
    cfg = {"lbs": [{"name": "web", "vip": "127.0.0.12",
                    "backends": [{"name": "app", "forward_port": backends.http["a"],
                                  "servers": [{"address": "127.0.0.1"}]}],
                    "frontends": [{"name": "http", "port": port, "backend": "app"}]}]}
    d = Daemon(tmp_path, cfg)
    try:
        assert ask("127.0.0.12", port) == "a"
        run = lambda *a: subprocess.run([sys.executable, "-m", "control.cli", *a, "--socket", d.socket],
                                        capture_output=True, text=True)
        st = run("status")
        assert st.returncode == 0 and "data plane: userspace" in st.stdout and "127.0.0.1:" in st.stdout
        js = orjson.loads(run("stats", "--json").stdout)
        assert js["frontends"][0]["total"] == 1
        table = run("stats").stdout        # backends by name, servers UP/DOWN
        assert re.search(rf"^app\s+127\.0\.0\.1:{backends.http['a']}\s+UP\s+0\s+1\s", table, re.M), table
        rl = run("reload")
        assert rl.returncode == 0 and "reloaded" in rl.stdout
        assert d.status()["reloads"] == 1
    finally:
        d.close()
        backends.close()
    gone = subprocess.run([sys.executable, "-m", "control.cli", "status", "--socket", d.socket],
                          capture_output=True, text=True)
    assert gone.returncode == 1 and "no lbfast daemon" in gone.stderr


def test_status_lists_a_frontend_without_servers(tmp_path):
    port = free_port("127.0.0.12")
    cfg = {"lbs": [{"name": "web", "vip": "127.0.0.12", "backends": [{"name": "empty", "forward_port": 80}],
                    "frontends": [{"name": "waiting", "port": port, "backend": "empty"}]}]}
    d = Daemon(tmp_path, cfg)
    try:
        out = subprocess.run([sys.executable, "-m", "control.cli", "status", "--socket", d.socket],
                             capture_output=True, text=True).stdout
        assert re.search(rf"^waiting\s+127\.0\.0\.12:{port}\s+tcp\s+roundrobin\s+\(no servers\)\s+-\s", out, re.M), out
    finally:
        d.close()


def test_sigterm_lets_open_sessions_finish(tmp_path):
    backends = Backends(["a"])
    port = free_port("127.0.0.12")
    cfg = {"lbs": [{"name": "web", "vip": "127.0.0.12",
                    "backends": [{"name": "app", "forward_port": backends.echo["a"],
                                  "servers": [{"address": "127.0.0.1"}]}],
                    "frontends": [{"name": "e", "port": port, "backend": "app"}]}]}
    d = Daemon(tmp_path, cfg)
    try:
        import socket
        import time
        s = socket.create_connection(("127.0.0.12", port))
        s.sendall(b"1")
        assert s.recv(1) == b"1"
        d.proc.terminate()
        time.sleep(0.5)
        with pytest.raises(OSError):            # no new connections...
            socket.create_connection(("127.0.0.12", port), timeout=1)
        s.sendall(b"2")                          # ...but the open session still works
        assert s.recv(1) == b"2"
        s.close()
        assert d.proc.wait(5) == 0
        assert not (tmp_path / "lbfast.pid").exists()
    finally:
        d.close()
        backends.close()
