"""One grammar for every string the model accepts, whichever way it comes in: hostile
strings through every string field of the model (a ConfigError naming the field, or the
value kept unchanged), `lbfast check` and the CLI's object commands refusing each finding
of issue 12 with its field named, and both API dialects answering 400 in their own shape."""
import copy
import ipaddress
import os
import subprocess
import sys
import typing

import orjson
import pytest
import trustme
from hypothesis import HealthCheck as HypothesisHealthCheck, given, settings
from pydantic import AfterValidator, BaseModel

from control import config as configfile, grammar
from control.config import ConfigError
from control.model import Config
from tests.apihttp import ApiDaemon
from tests.hostile import hostile_text

_leaf = trustme.CA().issue_cert("www.example.com")
CHAIN = _leaf.cert_chain_pems[0].bytes().decode()
KEY = _leaf.private_key_pem.bytes().decode()


def base() -> dict:
    """A valid config holding one object of every model class, so that every string field
    has a place."""
    return {
        "api": {"listen": "127.0.0.1:8950", "token": "t0ken"},
        "ip_pool": ["127.0.0.64/26"],
        "dataplane": {"mode": "userspace", "interfaces": ["eth0"], "snat_addresses": ["10.0.0.250"],
                      "pin_dir": "/sys/fs/bpf/lbfast", "cookie_secret": "c" * 32},
        "ha": {"interface": "eth0", "peers": ["10.0.0.2"], "source_address": "10.0.0.1",
               "bgp": {"router_id": "10.0.0.1", "neighbors": [{"address": "10.0.0.3", "as": 65000}]}},
        "lbs": [{
            "name": "web", "description": "shop", "tags": ["a"], "vip": "127.0.0.65", "region": "local",
            "type": "LB-S", "organization_id": "org", "project_id": "proj",
            "backends": [{"name": "pool", "protocol": "http", "stickiness": "cookie", "sticky_cookie_name": "lb",
                          "health_check": {"type": "http", "http_method": "GET", "http_uri": "/health",
                                           "http_host": "example.com", "http_body": "ok", "sni": "example.com",
                                           "user": "postgres"},
                          "servers": [{"address": "10.0.0.11", "label": "one"}]}],
            "frontends": [{"name": "https", "port": 443, "backend": "pool", "certificates": ["cert"]}],
            "certificates": [{"name": "cert", "chain_pem": CHAIN, "key_pem": KEY}],
        }],
        "ips": [{"address": "127.0.0.66", "reverse": "lb.example.com", "tags": ["b"],
                 "organization_id": "org", "project_id": "proj",
                 "lb": "00000000-0000-4000-8000-000000000000"}],
        "access_log": {"path": "/var/log/lbfast/access.log"},
        "last_ids": {"lb": 1},
    }


# -- the model's string fields, found by walking the model --------------------------------
def _unwrap(annotation):
    """(base type, is_list, validators) of a field annotation."""
    validators, is_list = [], False
    while True:
        validators += [m.func for m in getattr(annotation, "__metadata__", ()) if isinstance(m, AfterValidator)]
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, __import__("types").UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        elif origin is list:
            annotation, is_list = typing.get_args(annotation)[0], True
        else:
            return annotation, is_list, validators


def string_fields(model=Config, path=()) -> list[tuple[tuple, bool, list]]:
    out = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        typ, is_list, validators = _unwrap(info.annotation)
        validators += [m.func for m in info.metadata if isinstance(m, AfterValidator)]
        if isinstance(typ, type) and issubclass(typ, BaseModel):
            out += string_fields(typ, path + ((key, 0) if is_list else (key,)))
        elif typ is str:
            out.append((path + (key,), is_list, validators))
        elif typing.get_origin(typ) is dict:
            out.append((path + (key,), "key", validators))
    return out


FIELDS = string_fields()
# names referred to from elsewhere: changed together, as a user renaming would
LINKED = {("lbs", 0, "backends", 0, "name"): ("lbs", 0, "frontends", 0, "backend"),
          ("lbs", 0, "certificates", 0, "name"): ("lbs", 0, "frontends", 0, "certificates", 0)}


def dotted(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))


def put(doc: dict, path: tuple, value) -> None:
    for p in path[:-1]:
        doc = doc[p]
    doc[path[-1]] = value


def take(doc, path: tuple):
    for p in path:
        doc = doc[p]
    return doc


def canonical(value: str, validators: list) -> str:
    """What an address field keeps: Python's own canonical text (plus a scope id)."""
    if grammar.ip_network in validators:
        return str(ipaddress.ip_network(value, strict=False))
    if grammar.ip_address in validators or grammar.unscoped_ip_address in validators:
        addr, sep, scope = value.partition("%")
        return str(ipaddress.ip_address(addr)) + sep + scope
    return value


def test_every_string_field_of_the_model_is_covered():
    paths = {dotted(p) for p, _, _ in FIELDS}
    assert len(FIELDS) >= 40
    for path, _, _ in FIELDS:           # each field has its object in base()
        take(base(), path[:-1])
    assert {"ha.peers", "lbs[0].vip", "lbs[0].backends[0].servers[0].address", "dataplane.pin_dir",
            "lbs[0].backends[0].sticky_cookie_name", "lbs[0].backends[0].health_check.user",
            "ha.bgp.neighbors[0].address", "last_ids", "lbs[0].certificates[0].key_pem"} <= paths


@pytest.mark.parametrize("path, is_list, validators", FIELDS, ids=[dotted(p) for p, _, _ in FIELDS])
@settings(max_examples=40, deadline=None, suppress_health_check=[HypothesisHealthCheck.too_slow])
@given(value=hostile_text)
def test_hostile_strings_through_every_string_field(path, is_list, validators, value):
    doc = base()
    stored = {value: 1} if is_list == "key" else [value] if is_list else value
    put(doc, path, stored)
    if path in LINKED:
        put(doc, LINKED[path], value)
    where = dotted(path)
    try:
        configfile.parse(copy.deepcopy(doc))
    except ConfigError as e:
        named = [p for p, _ in e.problems if p == where or p.startswith((where + "[", where + "."))]
        assert named, (where, e.problems)
        assert all(len(m) < 400 for _, m in e.problems)     # a refused 70 KB value is not echoed whole
        return
    if is_list == "key" and value.startswith("#"):
        return                          # a comment key: dropped, as the file format says
    # accepted: never a control character (PEM keeps its line breaks) nor a lone surrogate,
    # the model keeps the value as given (addresses: in canonical form), and the file it
    # writes reads back to the same value
    allowed = "\t\r\n" if path[-1] in ("chain_pem", "key_pem") else ""
    assert not any(c < " " and c not in allowed or "\x7f" <= c <= "\x9f" or "\ud800" <= c <= "\udfff"
                   for c in value), (where, value)
    kept = Config.model_validate(doc).model_dump(mode="json", by_alias=True)
    expect = canonical(value, validators)
    got = take(kept, path)
    again = take(configfile.parse(configfile.dump(Config.model_validate(doc))).model_dump(mode="json", by_alias=True),
                 path)
    if is_list == "key":                # finish() adds the kinds it counts
        assert expect in got and expect in again
        return
    assert got == ([expect] if is_list else expect)
    assert again == got


# -- each finding of issue 12, refused by `lbfast check` with its field named ----------------
FINDINGS = {
    "ha.peers[0]": "fe80::1%x\n}\nvrrp_script evil {\n script \"touch /tmp/pwned\"\n}",
    "ha.source_address": "10.0.0.1%eth0",
    "ha.bgp.neighbors[0].address": "fe80::1%x\";\n}",
    "lbs[0].vip": "fe80::5%eth0",
    "lbs[0].backends[0].servers[0].address": "fe80::1%eth0\n}",
    "ips[0].address": "10.0.0.9%x",
    "ip_pool[0]": "fe80::%eth0/64",
    "dataplane.snat_addresses[0]": "fe80::9%a{",
    "dataplane.pin_dir": "/sys/fs/bpf/../../somewhere",
    "dataplane.interfaces[0]": "eth0\n",
    "lbs[0].backends[0].sticky_cookie_name": "lb\r\nSet-Cookie: x=1",
    "lbs[0].backends[0].health_check.http_uri": "/health HTTP/1.1\r\nX: y",
    "lbs[0].backends[0].health_check.http_host": "example.com\r\nX: y",
    "lbs[0].backends[0].health_check.http_method": "GET /",
    "lbs[0].backends[0].health_check.user": "postgres\x00options\x00-c x",
    "lbs[0].backends[0].health_check.sni": "a b",
    "lbs[0].name": "web\n",
    "lbs[0].description": "shop\x1b[2J",
    "lbs[0].tags[0]": "a\u202e",
    "lbs[0].backends[0].servers[0].label": "one\t",
    "ha.interface": "eth0 }",
    "api.token": "t0ken\r\nX: y",
}


def findings_doc() -> dict:
    doc = base()
    doc["lbs"][0]["backends"][0]["servers"] = [{"address": "10.0.0.11", "label": "one"}]
    for where, value in FINDINGS.items():
        path = tuple(int(p) if p.isdigit() else p
                     for p in where.replace("[", ".").replace("]", "").split("."))
        put(doc, path, value)
    return doc


def lbfast(*args, input_bytes=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "control.cli", *args], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.getcwd()}, input=input_bytes)


def test_lbfast_check_names_every_hostile_field(tmp_path):
    path = tmp_path / "lbfast.json"
    path.write_bytes(orjson.dumps(findings_doc()))
    r = lbfast("check", "--config", str(path), "--json")
    assert r.returncode == 2, r.stderr
    report = orjson.loads(r.stdout)
    assert report["valid"] is False
    named = {e["field"] for e in report["errors"]}
    assert set(FINDINGS) <= named, set(FINDINGS) - named
    r = lbfast("check", "--config", str(path))             # the human form names them too
    assert r.returncode == 2 and b"Traceback" not in r.stderr
    for where in FINDINGS:
        assert f"{where}: ".encode() in r.stderr


def test_lbfast_check_pin_dir_must_stay_inside_bpffs(tmp_path):
    path = tmp_path / "lbfast.json"
    for pin_dir, fragment in (("/sys/fs/bpf/../../somewhere", b"not a normal path"),
                              ("/sys/fs/bpf", b"not inside /sys/fs/bpf"),
                              ("/sys/fs/bpf/x\";\n#define X", b"not a path of"),
                              ("/sys/fs/bpfx/y", b"not inside /sys/fs/bpf")):
        path.write_bytes(orjson.dumps({"dataplane": {"pin_dir": pin_dir}}))
        r = lbfast("check", "--config", str(path))
        assert r.returncode == 2 and b"dataplane.pin_dir: " in r.stderr and fragment in r.stderr, r.stderr
    path.write_bytes(orjson.dumps({"dataplane": {"pin_dir": "/sys/fs/bpf/lbfast-test"}}))
    assert lbfast("check", "--config", str(path)).returncode == 0


def test_cli_object_commands_get_the_same_grammar(tmp_path):
    path = str(tmp_path / "lbfast.json")
    assert lbfast("lb", "create", "web", "--vip", "127.0.0.12", "--config", path).returncode == 0
    assert lbfast("backend", "create", "web", "app", "--protocol", "http", "--config", path).returncode == 0
    before = open(path, "rb").read()
    for args, field in (
            (["backend", "update", "web", "app", "--sticky-cookie-name", "a;b"], "sticky_cookie_name"),
            (["backend", "update", "web", "app", "--check-http-uri", "/x\r\nHost: y"], "health_check.http_uri"),
            (["server", "create", "web", "app", "fe80::1%x\n}"], "servers[0].address"),
            (["lb", "update", "web", "--description", "a\nb"], "lbs[0].description"),
            # an argument that is not UTF-8 reaches Python as a lone surrogate
            ([b"lb", b"create", b"caf\xe9"], "lbs[1].name")):
        r = lbfast(*args, "--config", path)
        assert r.returncode == 2, (args, r.stderr)
        assert field.encode() in r.stderr and b"Traceback" not in r.stderr, r.stderr
    assert open(path, "rb").read() == before


# -- the API: a 400 in the dialect's own shape, naming the wire field; nothing changed -----------
@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = ApiDaemon(tmp_path_factory.mktemp("grammar"))
    yield d
    d.close()


def test_scaleway_dialect_refuses_a_hostile_cookie_name_and_server(srv):
    api = srv.api
    lb = api.ok(api.scw("POST", "/lbs", {"name": "grammar-scw", "description": "", "project_id": "p"}))
    before = srv.file()
    r = api.scw("POST", f"/lbs/{lb['id']}/backends", {
        "name": "pool", "forward_protocol": "http", "forward_port": 80, "forward_port_algorithm": "roundrobin",
        "sticky_sessions": "cookie", "sticky_sessions_cookie_name": "sid\r\nSet-Cookie: x=1",
        "health_check": {"port": 80, "check_delay": "2s", "check_timeout": "1s", "check_max_retries": 2,
                         "tcp_config": {}},
        "server_ip": ["10.0.0.1"]})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["type"] == "invalid_arguments"
    assert [d["argument_name"] for d in body["details"]] == ["sticky_sessions_cookie_name"]
    r = api.scw("POST", f"/lbs/{lb['id']}/backends", {
        "name": "pool", "forward_protocol": "tcp", "forward_port": 80, "forward_port_algorithm": "roundrobin",
        "sticky_sessions": "none", "health_check": {"port": 80, "check_delay": "2s", "check_timeout": "1s",
                                                    "check_max_retries": 2, "tcp_config": {}},
        "server_ip": ["fe80::1%x\n}\nvrrp_script evil {"]})
    assert r.status_code == 400, r.text
    assert [d["argument_name"] for d in r.json()["details"]] == ["server_ip[0]"]
    assert srv.file() == before


def test_linode_dialect_refuses_a_hostile_check_path_and_node(srv):
    api = srv.api
    nb = api.ok(api.linode("POST", "/v4/nodebalancers", {"region": "local", "label": "grammar-lin"}))
    before = srv.file()
    r = api.linode("POST", f"/v4/nodebalancers/{nb['id']}/configs", {
        "port": 18081, "protocol": "http", "check": "http", "check_path": "/x HTTP/1.1\r\nHost: evil"})
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["check_path"]
    r = api.linode("POST", f"/v4/nodebalancers/{nb['id']}/configs", {
        "port": 18082, "protocol": "tcp",
        "nodes": [{"address": "[fe80::1%a\"}]:80", "label": "node-a"}]})
    assert r.status_code == 400, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["nodes[0].address"]
    r = api.linode("PUT", f"/v4/nodebalancers/{nb['id']}", {"tags": ["ok", "bad\ntag"]})
    assert r.status_code == 400 and [e["field"] for e in r.json()["errors"]] == ["tags[1]"], r.text
    assert srv.file() == before


def test_xdp_loader_refuses_a_pin_dir_that_a_link_leads_out_of_bpffs(tmp_path):
    """The model cannot see symbolic links: the loader resolves the path before it removes
    anything there."""
    from lbfast.xdp.loader import XdpError, prepare_pin_dir
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("x")
    link = f"{grammar.BPFFS}/lbfast-hardening-{os.getpid()}"
    os.symlink(victim, link)
    try:
        with pytest.raises(XdpError, match="resolves to"):
            prepare_pin_dir({"PIN_DIR": link})
        with pytest.raises(XdpError, match="resolves to"):
            prepare_pin_dir({"PIN_DIR": f"{link}/maps"})
    finally:
        os.unlink(link)
    assert os.listdir(victim) == ["keep"]
