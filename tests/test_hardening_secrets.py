"""Secrets never leave: no CLI output (tables, --json, offline on the file or through a
running daemon) and no API view shows a private key, and a refused key is not quoted back
in the error. The file keeps the key: only output is redacted."""
import os
import subprocess
import sys

import orjson
import pytest
import trustme

from control.config import REDACTED
from tests.apihttp import ApiDaemon

_leaf = trustme.CA().issue_cert("www.example.com")
CHAIN = _leaf.cert_chain_pems[0].bytes().decode()
KEY = _leaf.private_key_pem.bytes().decode()
KEY_BODY = KEY.splitlines()[1]          # a line of the key's base64: must appear in no output


def tls_lb(**vip) -> dict:
    return {"name": "web", **vip,
            "backends": [{"name": "pool", "protocol": "http", "servers": [{"address": "127.0.0.1", "port": 9}]}],
            "frontends": [{"name": "https", "port": 18443, "backend": "pool", "certificates": ["cert"]}],
            "certificates": [{"name": "cert", "chain_pem": CHAIN, "key_pem": KEY}]}


def lbfast(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "control.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.getcwd(), **(env or {})})


def assert_no_key(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stderr
    assert "PRIVATE KEY" not in r.stdout + r.stderr and KEY_BODY not in r.stdout + r.stderr


# every CLI command that prints an object holding a certificate, or the objects around it
SHOWING = [
    ("lb", "show", "web", "--json"), ("lb", "show", "web"), ("lb", "list", "--json"),
    ("frontend", "show", "web", "https", "--json"), ("backend", "show", "web", "pool", "--json"),
    ("check", "--json"), ("check",),
]


def test_cli_never_prints_a_private_key_from_the_file(tmp_path):
    path = tmp_path / "lbfast.json"
    path.write_bytes(orjson.dumps({"ip_pool": ["127.0.0.64/26"], "lbs": [tls_lb(vip="127.0.0.65")]}))
    shown = lbfast("lb", "show", "web", "--json", "--config", str(path))
    assert_no_key(shown)
    cert = orjson.loads(shown.stdout)["certificates"][0]
    assert cert["key_pem"] == REDACTED and cert["chain_pem"] == CHAIN
    for args in SHOWING:
        assert_no_key(lbfast(*args, "--config", str(path)))
    # an edit prints the object: redacted; the file keeps the key
    assert_no_key(lbfast("lb", "update", "web", "--description", "shop", "--json", "--config", str(path)))
    assert orjson.loads(path.read_bytes())["lbs"][0]["certificates"][0]["key_pem"] == KEY


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = ApiDaemon(tmp_path_factory.mktemp("secrets"), config={"lbs": [tls_lb()]})
    yield d
    d.close()


def test_cli_through_a_running_daemon_never_prints_a_private_key(srv):
    env = {"LBFAST_API_TOKEN": srv.token}
    shown = lbfast("lb", "show", "web", "--json", "--config", str(srv.config_path), env=env)
    assert_no_key(shown)
    assert orjson.loads(shown.stdout)["certificates"][0]["key_pem"] == REDACTED
    for args in SHOWING[:5]:
        assert_no_key(lbfast(*args, "--config", str(srv.config_path), env=env))
    assert_no_key(lbfast("status", "--json", "--socket", srv.daemon.socket))


def test_api_views_never_show_a_private_key(srv):
    api = srv.api
    lb = next(x for x in api.ok(api.scw("GET", "/lbs"))["lbs"] if x["name"] == "web")
    bodies = [api.scw("GET", f"/lbs/{lb['id']}/certificates"), api.scw("GET", f"/lbs/{lb['id']}/frontends"),
              api.linode("GET", "/v4/nodebalancers")]
    nb = next(x for x in bodies[-1].json()["data"] if x["label"] == "web")
    configs = api.linode("GET", f"/v4/nodebalancers/{nb['id']}/configs")
    bodies.append(configs)
    for r in bodies:
        assert r.status_code == 200 and "PRIVATE KEY" not in r.text and KEY_BODY not in r.text, r.text
    https = next(c for c in configs.json()["data"] if c["protocol"] == "https")
    assert https["ssl_key"] == REDACTED


def test_a_refused_key_is_not_quoted_back(srv):
    api = srv.api
    bad_key = KEY.replace("\n", "\n\x1b", 1)         # a control character inside the armour
    lb = next(x for x in api.ok(api.scw("GET", "/lbs"))["lbs"] if x["name"] == "web")
    r = api.scw("POST", f"/lbs/{lb['id']}/certificates",
                {"name": "bad", "custom_certificate": {"certificate_chain": CHAIN + bad_key}})
    assert r.status_code == 400, r.text
    assert KEY_BODY not in r.text and "PRIVATE KEY" not in r.text, r.text
    nb = next(x for x in api.ok(api.linode("GET", "/v4/nodebalancers"))["data"] if x["label"] == "web")
    cfg = next(c for c in api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}/configs"))["data"]
               if c["protocol"] == "https")
    r = api.linode("PUT", f"/v4/nodebalancers/{nb['id']}/configs/{cfg['id']}", {"ssl_key": bad_key})
    assert r.status_code == 400 and [e["field"] for e in r.json()["errors"]] == ["ssl_key"], r.text
    assert KEY_BODY not in r.text and "PRIVATE KEY" not in r.text, r.text
    assert srv.file()["lbs"][0]["certificates"][0]["key_pem"] == KEY
    assert "PRIVATE KEY" not in srv.daemon.logtext()


def test_lbfast_check_does_not_quote_a_refused_key_or_token(tmp_path):
    path = tmp_path / "lbfast.json"
    lb = tls_lb(vip="127.0.0.65")
    lb["certificates"][0]["key_pem"] = KEY.replace("\n", "\n\x1b", 1)
    path.write_bytes(orjson.dumps({"api": {"token": "s3cret-token\n"}, "lbs": [lb]}))
    r = lbfast("check", "--config", str(path))
    assert r.returncode == 2
    assert "lbs[0].certificates[0].key_pem: " in r.stderr and "api.token: " in r.stderr, r.stderr
    assert "PRIVATE KEY" not in r.stderr and "s3cret" not in r.stderr, r.stderr
