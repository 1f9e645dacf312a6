"""A frontend that cannot listen stops `lbfast run` with a line naming the frontend and the
address, and the usual fix: a port in use, a port below 1024 without CAP_NET_BIND_SERVICE."""
import socket
import subprocess

import orjson
import pytest

from tests.lbrun import LBFAST, free_port

VIP = "127.0.0.16"


def run_lbfast(tmp_path, port: int, protocol: str, wrap: list[str] = ()) -> subprocess.CompletedProcess:
    config = tmp_path / "lbfast.json"
    config.write_bytes(orjson.dumps({"dataplane": {"mode": "userspace", "workers": 1}, "lbs": [{
        "name": "t", "vip": VIP,
        "backends": [{"name": "pool", "protocol": protocol, "forward_port": 1, "servers": [{"address": "127.0.0.1"}]}],
        "frontends": [{"name": "web", "port": port, "backend": "pool"}]}]}))
    return subprocess.run([*wrap, *LBFAST, "run", "--config", str(config), "--socket", str(tmp_path / "sock"),
                           "--pidfile", str(tmp_path / "pid")], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("protocol", ["tcp", "http"])
def test_port_in_use(tmp_path, protocol):
    port = free_port(VIP)
    with socket.create_server((VIP, port)):
        done = run_lbfast(tmp_path, port, protocol)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: frontend web cannot listen on {VIP}:{port}: Address already in use "
        f"(another program listens there: ss -ltnp 'sport = :{port}')")


def test_privileged_port_without_the_capability(tmp_path):
    drop = ["setpriv", "--bounding-set", "-net_bind_service", "--inh-caps", "-net_bind_service", "--"]
    done = run_lbfast(tmp_path, 80, "tcp", drop)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: frontend web cannot listen on {VIP}:80: Permission denied (ports below 1024 need root "
        f"or CAP_NET_BIND_SERVICE; or use a port >= 1024)")
