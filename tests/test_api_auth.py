"""The API is never anonymous: with no token configured the daemon generates one (0600,
beside the config, never logged) that the CLI finds; a wrong token is refused as wrong,
a non-ASCII one is a 401, never a 500; a loopback API refuses Hosts that are not
loopback (DNS rebinding); writes must be application/json. Each in the dialect's shape."""
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from control.api import auth
from tests.apihttp import SCW, ApiDaemon
from tests.lbrun import free_port

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = ApiDaemon(tmp_path_factory.mktemp("auth"), token="")     # nothing configured
    yield d
    d.close()


def lbfast_cli(*args, config: Path, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (auth.TOKEN_ENV, "LBFAST_API_URL")}
    if token:
        env[auth.TOKEN_ENV] = token
    return subprocess.run([sys.executable, "-m", "control.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)


def test_a_token_is_generated_private_and_never_logged(srv):
    path = auth.token_path(srv.config_path)
    st = path.stat()
    assert st.st_mode & 0o777 == 0o600 and st.st_uid == os.geteuid()
    token = path.read_text().strip()
    assert len(token) >= 32 and srv.api.token == token
    assert token not in srv.daemon.logtext()
    assert token not in srv.config_path.read_text()
    # anonymous requests are refused in every dialect; the token opens them
    assert srv.api.request("GET", "/v4/nodebalancers").status_code == 401
    assert srv.api.request("GET", SCW + "/lbs").status_code == 401
    assert srv.api.request("GET", "/lbfast/v1/config").status_code == 401
    assert srv.api.request("GET", "/metrics").status_code == 401
    assert srv.api.linode("GET", "/v4/nodebalancers").status_code == 200
    assert srv.api.scw("GET", "/lbs").status_code == 200


def test_the_cli_finds_the_generated_token(srv):
    made = lbfast_cli("lb", "create", "auth-cli", config=srv.config_path)
    assert made.returncode == 0, made.stderr
    assert "applied by the running daemon" in made.stderr
    assert [x["name"] for x in srv.api.ok(srv.api.scw("GET", "/lbs?name=auth-cli"))["lbs"]] == ["auth-cli"]
    assert lbfast_cli("lb", "delete", "auth-cli", config=srv.config_path).returncode == 0


def test_a_wrong_token_is_refused_not_missing(srv):
    api = srv.api
    r = api.linode("GET", "/v4/nodebalancers", token="wrong")
    assert r.status_code == 401 and "refused" in r.json()["errors"][0]["reason"]
    r = api.request("GET", "/v4/nodebalancers")
    assert r.status_code == 401 and "no API token" in r.json()["errors"][0]["reason"]
    r = api.scw("GET", "/lbs", token="wrong")       # Scaleway's SDKs: "API key does not exist"
    assert r.status_code == 401 and (r.json()["type"], r.json()["reason"]) == ("denied_authentication", "not_found")
    r = api.request("GET", SCW + "/lbs")              # "invalid API key format or empty value"
    assert r.status_code == 401 and r.json()["reason"] == "invalid_argument"
    r = api.request("GET", "/lbfast/v1/config", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "refused" in r.json()["error"]
    cli = lbfast_cli("lb", "list", config=srv.config_path, token="wrong")
    assert cli.returncode == 1 and "refused the token" in cli.stderr


def test_a_restart_keeps_the_token(tmp_path):
    d = ApiDaemon(tmp_path, token="")
    try:
        before = d.api.token
        d.restart()
        assert auth.token_path(d.config_path).read_text().strip() == before
        assert d.api.linode("GET", "/v4/nodebalancers").status_code == 200
    finally:
        d.close()


@pytest.mark.parametrize("planted", ["world-readable", "symlink"])
def test_a_token_file_others_can_read_is_refused(tmp_path, planted):
    path = tmp_path / "cfg.json"
    path.write_bytes(orjson.dumps({"api": {"listen": f"127.0.0.1:{free_port()}"}}))
    leaked = auth.token_path(path)
    if planted == "symlink":
        target = tmp_path / "elsewhere"
        target.write_text("readable-by-all\n")
        target.chmod(0o600)
        leaked.symlink_to(target)
    else:
        leaked.write_text("readable-by-all\n")
        leaked.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if k != auth.TOKEN_ENV}
    r = subprocess.run([sys.executable, "-m", "control.cli", "run", "--config", str(path),
                        "--socket", str(tmp_path / "s.sock"), "--pidfile", str(tmp_path / "p.pid")],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert r.returncode == 2 and "api.token" in r.stderr and str(leaked) in r.stderr, r.stderr
    assert "readable-by-all" not in r.stderr


@pytest.mark.parametrize("header", ["X-Auth-Token", "Authorization"])
def test_a_non_ascii_token_is_a_401_not_a_500(srv, header):
    value = "\xff\xfe" if header == "X-Auth-Token" else "Bearer \xff"
    for path, shape in ((SCW + "/lbs", "type"), ("/v4/nodebalancers", "errors"), ("/lbfast/v1/config", "error")):
        r = srv.api.request("GET", path, headers={header: value})
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert shape in r.json()
    assert "Traceback" not in srv.daemon.logtext()


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:80", "10.0.0.1", "[fe80::1]:1",
                                  "localhost.evil.example.com", "127.0.0.1.nip.io"])
def test_a_host_that_is_not_loopback_is_refused(srv, host):
    api = srv.api
    r = api.linode("GET", "/v4/nodebalancers", headers={"Host": host})
    assert r.status_code == 403 and "loopback" in r.json()["errors"][0]["reason"]
    r = api.request("GET", SCW + "/lbs", headers={"Host": host, "X-Auth-Token": api.token})
    assert r.status_code == 403 and r.json()["type"] == "permissions_denied"
    assert api.request("GET", "/healthz", headers={"Host": host}).status_code == 403


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8080", "127.0.0.1", "127.3.2.1:1", "[::1]:443", "[::1]"])
def test_loopback_hosts_are_served(srv, host):
    assert srv.api.linode("GET", "/v4/nodebalancers", headers={"Host": host}).status_code == 200


def test_writes_must_be_json(srv):
    api = srv.api
    body = orjson.dumps({"region": "local", "label": "not-json-nb"})
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Authorization": f"Bearer {api.token}", **({"Content-Type": content_type} if content_type else {})}
        r = api.request("POST", "/v4/nodebalancers", data=body, headers=headers)
        assert r.status_code == 415 and "application/json" in r.json()["errors"][0]["reason"]
    r = api.request("POST", SCW + "/lbs", data=orjson.dumps({"name": "not-json-lb", "description": ""}),
                    headers={"X-Auth-Token": api.token, "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["message"]
    r = api.request("PUT", "/lbfast/v1/config", data=srv.config_path.read_bytes(),
                    headers={"Authorization": f"Bearer {api.token}", "Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    # nothing was made; JSON with a charset is JSON
    assert api.ok(api.scw("GET", "/lbs?name=not-json-lb"))["total_count"] == 0
    assert not [n for n in api.ok(api.linode("GET", "/v4/nodebalancers"))["data"] if n["label"] == "not-json-nb"]
    r = api.request("POST", "/v4/nodebalancers", data=body,
                    headers={"Authorization": f"Bearer {api.token}", "Content-Type": "application/json; charset=utf-8"})
    nb = api.ok(r)
    api.ok(api.linode("DELETE", f"/v4/nodebalancers/{nb['id']}"))
