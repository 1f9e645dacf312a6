"""Every refused reload or change is counted, logged with its reason, answered clearly, and
leaves the old state serving. The failure is a real limit of a real data plane: the XDP
program has MAX_BACKENDS (128) backend slots, and a config asking for 129 is refused by
its slot table, whether it comes by SIGHUP, the native config endpoint or a dialect."""
import os
from collections import Counter

import orjson
import pytest
import requests

from control.testbed import ethtool_offload_off, gro_on
from lbfast.xdp import remove_pins
from lbfast.xdp.consts import DEFAULTS
from tests.apihttp import TOKEN
from tests.lbrun import Daemon

pytestmark = pytest.mark.xdp
API_PORT = 8765


def fetch(tb) -> str:
    with tb.client.connect(tb.vip, 80) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.rpartition(b"\r\n\r\n")[2].decode()


def config(tb, pin_dir, backends: int = 1) -> dict:
    servers = [{"address": b.ip} for b in tb.backends]
    return {"api": {"listen": f"127.0.0.1:{API_PORT}"}, "ip_pool": ["10.99.0.0/28"],
            "dataplane": {"mode": "xdp", "pin_dir": pin_dir, "interfaces": [tb.lb_client_if, *tb.lb_backend_ifs]},
            "lbs": [{"name": "t", "vip": tb.vip,
                     "backends": [{"name": f"web{i}", "forward_port": 8080, "servers": servers}
                                  for i in range(backends)],
                     "frontends": [{"name": f"f{i}", "port": 80 if i == 0 else 10000 + i, "backend": f"web{i}"}
                                   for i in range(backends)]}]}


def call(tb, method: str, path: str, body: dict, headers: dict) -> requests.Response:
    """An API request from inside the LB's namespace, where the daemon listens."""
    return tb.lb.in_ns(lambda: requests.request(
        method, f"http://127.0.0.1:{API_PORT}{path}", data=orjson.dumps(body), timeout=60,
        headers={"Content-Type": "application/json", **headers}))


@pytest.fixture
def xdp_daemon(testbed, tmp_path):
    for host in (testbed.client, *testbed.backends):
        gro_on(host, host.ifname)
        ethtool_offload_off(host, host.ifname)
    pin_dir = f"/sys/fs/bpf/lbfast-reload-failures-{os.getpid()}"
    d = Daemon(tmp_path, config(testbed, pin_dir), wrap=["ip", "netns", "exec", testbed.lb.name],
               env={"LBFAST_API_TOKEN": TOKEN})
    try:
        yield testbed, pin_dir, d
    finally:
        d.close()
        remove_pins(pin_dir)


def still_serving(tb, d, failures: int) -> None:
    st = d.status()
    assert st["reload_failures"] == failures
    assert "backend slots" in st["last_error"]
    assert [f["frontend"] for f in st["frontends"]] == ["f0"]
    assert Counter(fetch(tb) for _ in range(20)) == {"b0": 10, "b1": 10}


def test_a_full_slot_table_is_refused_and_counted_everywhere(xdp_daemon):
    tb, pin_dir, d = xdp_daemon
    too_many = int(DEFAULTS["MAX_BACKENDS"]) + 1
    assert Counter(fetch(tb) for _ in range(20)) == {"b0": 10, "b1": 10}
    file_before = d.path.read_bytes()

    # SIGHUP: the file asks for one backend more than the program has slots
    d.write(config(tb, pin_dir, backends=too_many))
    d.sighup_and_wait()
    still_serving(tb, d, failures=1)
    assert "reload rejected, the running config stays" in d.logtext()
    d.path.write_bytes(file_before)

    # the native config endpoint: a clear 400, the file untouched
    r = call(tb, "PUT", "/lbfast/v1/config", config(tb, pin_dir, backends=too_many),
             {"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400, r.text
    assert "the data plane refused the change" in r.json()["error"] and "backend slots" in r.json()["error"]
    assert d.path.read_bytes() == file_before
    still_serving(tb, d, failures=2)

    # the Linode dialect: a nodebalancer with one config (frontend and backend) per port
    nodes = [{"address": f"{b.ip}:8080", "label": f"node-{j}"} for j, b in enumerate(tb.backends)]
    configs = [{"port": 20000 + i, "protocol": "tcp", "nodes": nodes} for i in range(too_many)]
    r = call(tb, "POST", "/v4/nodebalancers", {"region": "local", "label": "many-configs", "configs": configs},
             {"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400, r.text
    assert "backend slots" in r.json()["errors"][0]["reason"]
    assert d.path.read_bytes() == file_before
    still_serving(tb, d, failures=3)
    assert d.logtext().count("change rejected, the running config stays") == 2
    assert "Traceback" not in d.logtext()

    # and a good reload still goes in
    d.write(config(tb, pin_dir, backends=2))
    d.sighup_and_wait()
    st = d.status()
    assert (st["reloads"], st["reload_failures"], st["last_error"]) == (1, 3, "")
