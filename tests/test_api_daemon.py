"""The API as part of the daemon: one model behind both dialects and the CLI, changes that
survive a restart, 50 parallel creates with nothing lost or doubled, SIGHUP and API
changes in one queue, /healthz, /metrics, /openapi.json, and the token rules."""
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from control import config as configfile
from tests.apihttp import TOKEN, ApiDaemon, private_pool
from tests.lbrun import free_port

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = ApiDaemon(tmp_path_factory.mktemp("daemon"), pool=private_pool().replace(".64/26", ".0/24"))
    yield d
    d.close()


@pytest.fixture(scope="module")
def api(srv):
    return srv.api


def lbfast(*args, config: Path, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LBFAST_API_TOKEN", "LBFAST_API_URL")}
    if token:
        env["LBFAST_API_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "control.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)


# -- one model, three doors -----------------------------------------------------------------
def test_linode_nodebalancer_is_a_scaleway_lb_and_a_cli_lb(api, srv):
    nb = api.ok(api.linode("POST", "/v4/nodebalancers", {"region": "local", "label": "cross-nb", "configs": [
        {"port": 19180, "protocol": "tcp", "algorithm": "leastconn",
         "nodes": [{"address": "127.0.0.1:9201", "label": "n-1"}, {"address": "127.0.0.2:9201", "label": "n-2"}]}]}))
    lbs = api.ok(api.scw("GET", "/lbs?name=cross-nb"))["lbs"]
    assert len(lbs) == 1
    lb = lbs[0]
    assert (lb["frontend_count"], lb["backend_count"]) == (1, 1)
    assert lb["ip"][0]["ip_address"] == nb["ipv4"]
    [backend] = api.ok(api.scw("GET", f"/lbs/{lb['id']}/backends"))["backends"]
    assert backend["pool"] == ["127.0.0.1", "127.0.0.2"] and backend["forward_port_algorithm"] == "leastconn"
    [front] = api.ok(api.scw("GET", f"/lbs/{lb['id']}/frontends"))["frontends"]
    assert front["inbound_port"] == 19180 and front["backend"]["id"] == backend["id"]

    out = lbfast("lb", "list", "--json", config=srv.config_path)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in orjson.loads(out.stdout)}
    assert rows["cross-nb"]["id"] == nb["id"] and rows["cross-nb"]["uuid"] == lb["id"]
    assert rows["cross-nb"]["vip"] == nb["ipv4"]

    # and back: a Scaleway change shows in the Linode dialect
    api.ok(api.scw("PUT", f"/backends/{backend['id']}", {"forward_port_algorithm": "roundrobin",
                                                         "sticky_sessions": "table"}))
    [cfg] = api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}/configs"))["data"]
    assert (cfg["algorithm"], cfg["stickiness"]) == ("roundrobin", "table")
    api.ok(api.linode("DELETE", f"/v4/nodebalancers/{nb['id']}"))
    assert api.ok(api.scw("GET", "/lbs?name=cross-nb"))["total_count"] == 0


def test_scaleway_lb_is_a_nodebalancer(api):
    lb = api.ok(api.scw("POST", "/lbs", {"name": "cross-scw", "description": ""}))
    b = api.ok(api.scw("POST", f"/lbs/{lb['id']}/backends", {
        "name": "app", "forward_protocol": "tcp", "forward_port": 9301, "server_ip": ["127.0.0.5"]}))
    api.ok(api.scw("POST", f"/lbs/{lb['id']}/frontends", {"name": "f", "inbound_port": 19181, "backend_id": b["id"]}))
    nbs = [n for n in api.ok(api.linode("GET", "/v4/nodebalancers"))["data"] if n["label"] == "cross-scw"]
    assert len(nbs) == 1
    [cfg] = api.ok(api.linode("GET", f"/v4/nodebalancers/{nbs[0]['id']}/configs"))["data"]
    assert (cfg["port"], cfg["protocol"]) == (19181, "tcp")
    [node] = api.ok(api.linode("GET", f"/v4/nodebalancers/{nbs[0]['id']}/configs/{cfg['id']}/nodes"))["data"]
    assert node["address"] == "127.0.0.5:9301"
    assert api.scw("DELETE", f"/lbs/{lb['id']}?release_ip=true").status_code == 204


def test_cli_object_commands_go_through_the_api(api, srv):
    path = srv.config_path
    made = lbfast("lb", "create", "cli-made", "--client-conn-throttle", "3", "--json", config=path)
    assert made.returncode == 0, made.stderr
    assert "applied by the running daemon" in made.stderr
    shown = orjson.loads(made.stdout)
    assert shown["client_conn_throttle"] == 3
    # the daemon has it at once (no reload), in both dialects
    assert [x["name"] for x in api.ok(api.scw("GET", "/lbs?name=cli-made"))["lbs"]] == ["cli-made"]
    for args in (("backend", "create", "cli-made", "pool", "--forward-port", "9401"),
                 ("server", "create", "cli-made", "pool", "127.0.0.7", "--weight", "9"),
                 ("frontend", "create", "cli-made", "web", "--port", "19182", "--backend", "pool")):
        r = lbfast(*args, config=path)
        assert r.returncode == 0, r.stderr
    nb = next(n for n in api.ok(api.linode("GET", "/v4/nodebalancers"))["data"] if n["label"] == "cli-made")
    [cfg] = api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}/configs"))["data"]
    [node] = api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}/configs/{cfg['id']}/nodes"))["data"]
    assert (cfg["port"], node["address"], node["weight"]) == (19182, "127.0.0.7:9401", 9)
    # a refused change names the field and changes nothing
    bad = lbfast("server", "create", "cli-made", "pool", "127.0.0.8", "--weight", "999", config=path)
    assert bad.returncode == 2 and "weight" in bad.stderr
    missing = lbfast("lb", "show", "no-such-lb", config=path)
    assert missing.returncode == 3
    # same output through the API as from the file
    via_api = lbfast("lb", "show", "cli-made", "--json", config=path)
    copy = path.parent / "copy.json"
    copy.write_bytes(path.read_bytes())
    via_file = lbfast("lb", "show", "cli-made", "--json", config=copy)
    assert via_api.returncode == via_file.returncode == 0
    assert via_api.stdout == via_file.stdout
    # without the token the CLI says so rather than editing the file behind the daemon's back
    denied = lbfast("lb", "list", config=path, token=None)
    assert denied.returncode == 1 and "LBFAST_API_TOKEN" in denied.stderr
    assert lbfast("lb", "delete", "cli-made", config=path).returncode == 0
    assert api.ok(api.scw("GET", "/lbs?name=cli-made"))["total_count"] == 0


# -- concurrency and persistence ----------------------------------------------------------------
def test_fifty_parallel_creates(api, srv):
    def create(i):
        if i % 2:
            r = api.linode("POST", "/v4/nodebalancers", {"region": "local", "label": f"par-{i:02d}"})
        else:
            r = api.scw("POST", "/lbs", {"name": f"par-{i:02d}", "description": ""})
        return r.status_code, r.json()

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(create, range(50)))
    assert [s for s, _ in results] == [200] * 50
    listed = api.ok(api.linode("GET", "/v4/nodebalancers?page_size=500"))["data"]
    mine = [n for n in listed if n["label"].startswith("par-")]
    assert sorted(n["label"] for n in mine) == [f"par-{i:02d}" for i in range(50)]
    assert len({n["id"] for n in mine}) == 50 and len({n["ipv4"] for n in mine}) == 50
    cfg = configfile.load(srv.config_path)          # the file is valid and has them all
    assert sorted(lb.name for lb in cfg.lbs if lb.name.startswith("par-")) == [f"par-{i:02d}" for i in range(50)]

    with ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(lambda n: api.linode("DELETE", f"/v4/nodebalancers/{n['id']}").status_code, mine))
    assert codes == [200] * 50
    assert not [lb for lb in configfile.load(srv.config_path).lbs if lb.name.startswith("par-")]


def test_sighup_and_api_changes_queue_up(api, srv):
    """Reloads re-read the file while API changes are committed: none is lost."""
    def create(i):
        return api.scw("POST", "/lbs", {"name": f"hup-{i:02d}", "description": ""}).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(create, i) for i in range(20)]
        for _ in range(10):
            os.kill(srv.daemon.proc.pid, signal.SIGHUP)
            time.sleep(0.02)
        assert [f.result() for f in futures] == [200] * 20
    names = sorted(x["name"] for x in api.ok(api.scw("GET", "/lbs?name=hup-&page_size=100"))["lbs"])
    assert names == [f"hup-{i:02d}" for i in range(20)]
    assert sorted(lb.name for lb in configfile.load(srv.config_path).lbs if lb.name.startswith("hup-")) == names
    for x in api.ok(api.scw("GET", "/lbs?name=hup-&page_size=100"))["lbs"]:
        assert api.scw("DELETE", f"/lbs/{x['id']}?release_ip=true").status_code == 204


def test_state_survives_a_restart(api, srv):
    nb = api.ok(api.linode("POST", "/v4/nodebalancers", {"region": "local", "label": "keep-nb", "configs": [
        {"port": 19183, "protocol": "tcp", "check": "connection", "check_interval": 7,
         "nodes": [{"address": "127.0.0.1:9501", "label": "keep-node", "weight": 3}]}]}))
    lb = api.ok(api.scw("POST", "/lbs", {"name": "keep-scw", "description": "kept", "tags": ["x"]}))
    b = api.ok(api.scw("POST", f"/lbs/{lb['id']}/backends", {
        "forward_protocol": "tcp", "forward_port": 9502, "server_ip": ["127.0.0.9"], "timeout_server": "12s",
        "health_check": {"check_delay": "4s", "http_config": {"uri": "/up", "method": "GET"}}}))
    ip = api.ok(api.scw("POST", "/ips", {"reverse": "kept.example.com"}))
    before = {
        "nb": api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}")),
        "configs": api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}/configs")),
        "lb": api.ok(api.scw("GET", f"/lbs/{lb['id']}")),
        "backend": api.ok(api.scw("GET", f"/backends/{b['id']}")),
        "ip": api.ok(api.scw("GET", f"/ips/{ip['id']}")),
    }
    srv.restart()
    after = {
        "nb": api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}")),
        "configs": api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}/configs")),
        "lb": api.ok(api.scw("GET", f"/lbs/{lb['id']}")),
        "backend": api.ok(api.scw("GET", f"/backends/{b['id']}")),
        "ip": api.ok(api.scw("GET", f"/ips/{ip['id']}")),
    }
    for cfg in (before["configs"], after["configs"]):          # health is run time state
        for c in cfg["data"]:
            c.pop("nodes_status")
    assert after == before
    # the listener is back on the VIP
    import socket
    socket.create_connection((nb["ipv4"], 19183), timeout=2).close()
    api.ok(api.linode("DELETE", f"/v4/nodebalancers/{nb['id']}"))
    assert api.scw("DELETE", f"/lbs/{lb['id']}?release_ip=true").status_code == 204
    assert api.scw("DELETE", f"/ips/{ip['id']}").status_code == 204


# -- plain endpoints ----------------------------------------------------------------------------
def test_healthz_and_openapi_need_no_token(api):
    r = api.request("GET", "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    doc = api.request("GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert {"/v4/nodebalancers", "/v4/nodebalancers/{nodeBalancerId}/configs/{configId}/rebuild",
            "/lb/v1/regions/{region}/lbs", "/lb/v1/zones/{zone}/backends/{backend_id}/healthcheck",
            "/lb/v1/zones/{zone}/lbs/{lb_id}/backend-stats"} <= set(paths)
    ops = [(m, p) for p, item in paths.items() for m in item]
    assert len(ops) == len(set(ops)) > 80
    config = paths["/v4/nodebalancers/{nodeBalancerId}/configs"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]["properties"]
    # enums and ranges come from the model through the field tables
    assert config["stickiness"]["enum"] == ["none", "table", "http_cookie"]
    assert (config["check_timeout"]["minimum"], config["check_timeout"]["maximum"]) == (1, 30)
    assert (config["port"]["minimum"], config["port"]["maximum"]) == (1, 65535)
    backend = paths["/lb/v1/zones/{zone}/lbs/{lb_id}/backends"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert set(backend["required"]) == {"forward_protocol", "forward_port"}
    assert "proxy_protocol_v2" in backend["properties"]["proxy_protocol"]["enum"]
    assert doc["components"]["securitySchemes"]["scalewayToken"]["name"] == "X-Auth-Token"


def test_metrics(api):
    nb = api.ok(api.linode("POST", "/v4/nodebalancers", {"region": "local", "label": "metric-nb", "configs": [
        {"port": 19184, "protocol": "tcp", "nodes": [{"address": "127.0.0.1:9601", "label": "m-node"}]}]}))
    assert api.request("GET", "/metrics").status_code == 401
    r = api.request("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    for family in ("lbfast_frontend_connections_active", "lbfast_frontend_connections_total",
                   "lbfast_frontend_bytes_in_total", "lbfast_server_up", "lbfast_server_connections_total",
                   "lbfast_reloads_total", "lbfast_api_changes_total"):
        assert f"# TYPE {family} " in text, family
    assert f'lbfast_frontend_connections_total{{lb="metric-nb",frontend="port-19184",listen="{nb["ipv4"]}:19184"' in text
    assert 'lbfast_server_connections_total{lb="metric-nb",backend="port-19184",server="127.0.0.1:9601"' in text
    changes = next(int(line.split()[-1]) for line in text.splitlines() if line.startswith("lbfast_api_changes_total"))
    assert changes >= 1
    api.ok(api.linode("DELETE", f"/v4/nodebalancers/{nb['id']}"))


# -- tokens -------------------------------------------------------------------------------------
def test_no_token_no_api_beyond_loopback(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_bytes(orjson.dumps({"api": {"listen": f"0.0.0.0:{free_port()}"}}))
    env = {k: v for k, v in os.environ.items() if k != "LBFAST_API_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "control.cli", "run", "--config", str(path),
                        "--socket", str(tmp_path / "s.sock"), "--pidfile", str(tmp_path / "p.pid")],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 2 and "api.token" in r.stderr


def test_token_from_the_config_file(tmp_path):
    d = ApiDaemon(tmp_path, token="", file_token="from-the-file")
    try:
        assert d.api.linode("GET", "/v4/nodebalancers").status_code == 200
        assert d.api.linode("GET", "/v4/nodebalancers", token="other").status_code == 401
        assert d.api.request("GET", "/v4/nodebalancers").status_code == 401
    finally:
        d.close()
