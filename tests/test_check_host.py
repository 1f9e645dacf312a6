"""`lbfast check` reports what `lbfast run` would refuse on this host although the file is
valid: XDP mode with no or unknown interfaces, a public API without a token, a VIP that is
neither local nor routable (checked in a namespace with only loopback)."""
import os
import subprocess
import uuid

import orjson
import pytest

from tests.lbrun import LBFAST


def check(tmp_path, doc: dict, wrap: list[str] = (), env: dict | None = None) -> subprocess.CompletedProcess:
    path = tmp_path / "lbfast.json"
    path.write_bytes(orjson.dumps(doc))
    return subprocess.run([*wrap, *LBFAST, "check", "--config", str(path)], capture_output=True, text=True,
                          env={**os.environ, "LBFAST_API_TOKEN": "", **(env or {})})


def test_a_runnable_config_passes(tmp_path):
    done = check(tmp_path, {"api": {"listen": "127.0.0.1:8950"}, "lbs": [{"name": "t", "vip": "127.0.0.17"}]})
    assert done.returncode == 0 and "valid, 1 load balancer" in done.stdout


def test_xdp_interfaces(tmp_path):
    done = check(tmp_path, {"dataplane": {"mode": "xdp"}})
    assert done.returncode == 2
    assert "dataplane.interfaces: dataplane.mode xdp needs at least one interface" in done.stderr
    done = check(tmp_path, {"dataplane": {"mode": "xdp", "interfaces": ["lo", "nosuch0"]}})
    assert done.returncode == 2 and "dataplane.interfaces: no interface named 'nosuch0' on this host" in done.stderr
    assert "'lo'" not in done.stderr


def test_public_api_needs_a_token(tmp_path):
    doc = {"api": {"listen": "0.0.0.0:8950"}}
    done = check(tmp_path, doc)
    assert done.returncode == 2 and "api.token: required to serve the API on 0.0.0.0:8950" in done.stderr
    assert check(tmp_path, doc, env={"LBFAST_API_TOKEN": "s3cret"}).returncode == 0


@pytest.mark.netns
def test_unreachable_vip(tmp_path):
    ns = f"lbfcheck{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        done = check(tmp_path, {"lbs": [{"name": "t", "vip": "203.0.113.7"}, {"name": "u", "vip": "127.0.0.17"}]},
                     wrap=["ip", "netns", "exec", ns])
        assert done.returncode == 2
        assert "lbs[0].vip: 203.0.113.7 is neither an address of this host nor routable from it" in done.stderr
        assert "lbs[1]" not in done.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
