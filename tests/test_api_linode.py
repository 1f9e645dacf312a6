"""The Linode NodeBalancers v4 dialect against a running daemon: every endpoint, the wire
conventions (ids, ip:port, <REDACTED>, pages, X-Filter, {} on delete), every enum and
range refused with its field named, and nothing changed by a refused request."""
import os
import stat

import pytest
import trustme

from tests.apihttp import ApiDaemon

NB = "/v4/nodebalancers"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = ApiDaemon(tmp_path_factory.mktemp("linode"))
    yield d
    d.close()


@pytest.fixture(scope="module")
def api(srv):
    return srv.api


@pytest.fixture
def nb(api):
    """A fresh nodebalancer with one tcp config and two nodes; deleted afterwards."""
    body = api.ok(api.linode("POST", NB, {"region": "local", "configs": [{
        "port": 18080, "protocol": "tcp", "nodes": [
            {"address": "127.0.0.1:9101", "label": "node-a"},
            {"address": "127.0.0.1:9102", "label": "node-b", "weight": 5, "mode": "backup"}]}]}))
    yield body
    api.linode("DELETE", f"{NB}/{body['id']}")


def first_config(api, nb) -> dict:
    return api.ok(api.linode("GET", f"{NB}/{nb['id']}/configs"))["data"][0]


# -- nodebalancers --------------------------------------------------------------------------
def test_nodebalancer_create_view_update_delete(api):
    created = api.ok(api.linode("POST", NB, {"region": "local", "label": "shop-lb", "tags": ["a"],
                                             "client_conn_throttle": 5}))
    assert isinstance(created["id"], int)
    assert created["label"] == "shop-lb" and created["region"] == "local" and created["tags"] == ["a"]
    assert isinstance(created["ipv4"], str) and created["ipv4"].startswith("127.")
    assert created["hostname"] and created["client_conn_throttle"] == 5
    assert set(created["transfer"]) == {"in", "out", "total"}
    assert len(created["created"]) == 19 and "T" in created["created"]        # YYYY-MM-DDTHH:MM:SS
    path = f"{NB}/{created['id']}"
    assert api.ok(api.linode("GET", path)) == created

    # whatever the server returns may be sent back on PUT
    back = dict(created, label="shop-lb2", tags=["a", "b"], client_conn_throttle=0)
    updated = api.ok(api.linode("PUT", path, back))
    assert (updated["label"], updated["tags"], updated["client_conn_throttle"]) == ("shop-lb2", ["a", "b"], 0)
    assert updated["ipv4"] == created["ipv4"]
    assert api.ok(api.linode("PUT", path, {"label": "shop-lb3"}))["tags"] == ["a", "b"]   # partial

    assert api.ok(api.linode("DELETE", path)) == {}
    r = api.linode("GET", path)
    assert r.status_code == 404 and r.json()["errors"][0]["reason"]


def test_label_defaults_and_is_unique(api):
    a = api.ok(api.linode("POST", NB, {"region": "local"}))
    assert a["label"].startswith("balancer")
    r = api.linode("POST", NB, {"region": "local", "label": a["label"]})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "label"
    api.ok(api.linode("DELETE", f"{NB}/{a['id']}"))


def test_create_with_configs_and_nodes(api, nb):
    configs = api.ok(api.linode("GET", f"{NB}/{nb['id']}/configs"))
    assert configs["results"] == 1 and configs["pages"] == 1
    cfg = configs["data"][0]
    assert (cfg["port"], cfg["protocol"], cfg["nodebalancer_id"]) == (18080, "tcp", nb["id"])
    assert cfg["nodes_status"] == {"up": 2, "down": 0}         # check "none": nodes count as up
    nodes = api.ok(api.linode("GET", f"{NB}/{nb['id']}/configs/{cfg['id']}/nodes"))["data"]
    assert [(n["address"], n["label"], n["weight"], n["mode"]) for n in nodes] == [
        ("127.0.0.1:9101", "node-a", 100, "accept"), ("127.0.0.1:9102", "node-b", 5, "backup")]
    assert all(n["config_id"] == cfg["id"] and n["nodebalancer_id"] == nb["id"] for n in nodes)
    assert [n["status"] for n in nodes] == ["UP", "UP"]


def test_stats_shape(api, nb):
    stats = api.ok(api.linode("GET", f"{NB}/{nb['id']}/stats"))
    assert stats["title"]
    assert set(stats["data"]) == {"connections", "traffic"} and set(stats["data"]["traffic"]) == {"in", "out"}
    for series in (stats["data"]["connections"], stats["data"]["traffic"]["in"], stats["data"]["traffic"]["out"]):
        assert series and all(len(p) == 2 and p[0] > 1e12 for p in series)    # [ms timestamp, value]


# -- configs --------------------------------------------------------------------------------
def test_config_create_defaults_update_and_delete(api, nb):
    base = f"{NB}/{nb['id']}/configs"
    cfg = api.ok(api.linode("POST", base, {"port": 18081}))
    assert (cfg["protocol"], cfg["algorithm"], cfg["stickiness"], cfg["check"]) == ("http", "roundrobin", "none", "none")
    assert cfg["ssl_cert"] is None and cfg["ssl_key"] is None
    path = f"{base}/{cfg['id']}"
    changes = {"algorithm": "source", "stickiness": "http_cookie", "check": "http_body", "check_path": "/health",
               "check_body": "ok", "check_interval": 10, "check_timeout": 4, "check_attempts": 5,
               "check_passive": True, "cipher_suite": "legacy", "proxy_protocol": "v2", "udp_check_port": 80}
    updated = api.ok(api.linode("PUT", path, changes))
    for key, value in changes.items():
        if key != "udp_check_port":
            assert updated[key] == value, key
    # the whole object sent back (with ssl_* null and read-only fields) is accepted
    assert api.ok(api.linode("PUT", path, updated)) == updated
    assert api.ok(api.linode("GET", path)) == updated
    # a config is one frontend with its own backend: the model shows both
    cfg_file = next(lb for lb in api_file(api)["lbs"] if lb["id"] == nb["id"])
    assert {"port-18081"} <= {f["name"] for f in cfg_file["frontends"]} & {b["name"] for b in cfg_file["backends"]}

    moved = api.ok(api.linode("PUT", path, {"port": 18082}))
    assert moved["port"] == 18082 and moved["id"] == cfg["id"]
    assert api.ok(api.linode("DELETE", path)) == {}
    assert api.linode("GET", path).status_code == 404
    after = next(lb for lb in api_file(api)["lbs"] if lb["id"] == nb["id"])
    assert [b["name"] for b in after["backends"]] == ["port-18080"]          # its backend went with it


def api_file(api) -> dict:
    return api.ok(api.linode("GET", "/lbfast/v1/config"))


def test_https_config_keeps_key_secret(api, nb, srv):
    ca = trustme.CA()
    leaf = ca.issue_cert("shop.example.com")
    cert_pem = leaf.cert_chain_pems[0].bytes().decode()
    key_pem = leaf.private_key_pem.bytes().decode()
    base = f"{NB}/{nb['id']}/configs"
    r = api.linode("POST", base, {"port": 18443, "protocol": "https"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "ssl_cert"
    cfg = api.ok(api.linode("POST", base, {"port": 18443, "protocol": "https", "ssl_cert": cert_pem,
                                           "ssl_key": key_pem}))
    assert cfg["ssl_cert"] == cfg["ssl_key"] == "<REDACTED>"
    assert cfg["ssl_commonname"] == "shop.example.com"
    assert len(cfg["ssl_fingerprint"].split(":")) == 20           # SHA-1
    assert "PRIVATE KEY" not in api.linode("GET", f"{base}/{cfg['id']}").text
    # <REDACTED> sent back means unchanged
    again = api.ok(api.linode("PUT", f"{base}/{cfg['id']}", dict(cfg, algorithm="leastconn")))
    assert again["ssl_fingerprint"] == cfg["ssl_fingerprint"] and again["algorithm"] == "leastconn"
    other = trustme.CA().issue_cert("other.example.com")
    r = api.linode("PUT", f"{base}/{cfg['id']}", {"ssl_key": other.private_key_pem.bytes().decode()})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] in ("ssl_cert", "ssl_key")
    r = api.linode("PUT", f"{base}/{cfg['id']}", {"ssl_cert": "not a pem"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "ssl_cert"
    # the key is in the file, and the file is private
    assert key_pem.splitlines()[1] in srv.config_path.read_text()
    assert stat.S_IMODE(os.stat(srv.config_path).st_mode) == 0o600
    # back to plain tcp (the port moves from the L7 proxy to L4): the certificate goes
    plain = api.ok(api.linode("PUT", f"{base}/{cfg['id']}", {"protocol": "tcp", "ssl_cert": None, "ssl_key": None}))
    assert plain["protocol"] == "tcp" and plain["ssl_cert"] is None and plain["ssl_commonname"] is None
    lb = next(x for x in api_file(api)["lbs"] if x["id"] == nb["id"])
    assert lb.get("certificates", []) == []
    api.ok(api.linode("DELETE", f"{base}/{cfg['id']}"))


# -- nodes ----------------------------------------------------------------------------------
def test_node_create_view_update_delete(api, nb):
    cfg = first_config(api, nb)
    base = f"{NB}/{nb['id']}/configs/{cfg['id']}/nodes"
    node = api.ok(api.linode("POST", base, {"address": "127.0.0.2:9103", "label": "node-c", "weight": 7}))
    assert (node["address"], node["weight"], node["mode"]) == ("127.0.0.2:9103", 7, "accept")
    path = f"{base}/{node['id']}"
    assert api.ok(api.linode("GET", path)) == node
    updated = api.ok(api.linode("PUT", path, {"weight": 200, "mode": "drain", "address": "[::1]:9104"}))
    assert (updated["weight"], updated["mode"], updated["address"]) == (200, "drain", "[::1]:9104")
    assert api.ok(api.linode("PUT", path, updated))["label"] == "node-c"
    assert api.ok(api.linode("DELETE", path)) == {}
    assert api.linode("GET", path).status_code == 404


def test_rebuild_replaces_the_node_set(api, nb):
    cfg = first_config(api, nb)
    base = f"{NB}/{nb['id']}/configs/{cfg['id']}"
    nodes = api.ok(api.linode("GET", f"{base}/nodes"))["data"]
    keep, drop = nodes
    rebuilt = api.ok(api.linode("POST", f"{base}/rebuild", {
        "port": 18080, "protocol": "tcp", "algorithm": "leastconn",
        "nodes": [{"id": keep["id"], "address": keep["address"], "label": keep["label"], "weight": 9},
                  {"address": "127.0.0.3:9105", "label": "node-new"}]}))
    assert rebuilt["id"] == cfg["id"] and rebuilt["algorithm"] == "leastconn"
    after = api.ok(api.linode("GET", f"{base}/nodes"))["data"]
    assert [(n["id"] == keep["id"], n["address"], n["weight"]) for n in after] == [
        (True, keep["address"], 9), (False, "127.0.0.3:9105", 100)]
    assert drop["address"] not in [n["address"] for n in after]
    r = api.linode("POST", f"{base}/rebuild", {"nodes": [{"id": 999999, "address": "127.0.0.1:1", "label": "xyz"}]})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "nodes[0].id"


# -- lists ----------------------------------------------------------------------------------
def test_pages_keep_pages_and_results(api, nb):
    cfg = first_config(api, nb)
    base = f"{NB}/{nb['id']}/configs/{cfg['id']}/nodes"
    for i in range(3):
        api.ok(api.linode("POST", base, {"address": f"127.0.1.{i + 1}:80", "label": f"page-{i}"}))
    pages = [api.ok(api.linode("GET", f"{base}?page={p}&page_size=2")) for p in (1, 2, 3, 4)]
    assert [(p["page"], p["pages"], p["results"], len(p["data"])) for p in pages] == [
        (1, 3, 5, 2), (2, 3, 5, 2), (3, 3, 5, 1), (4, 3, 5, 0)]
    ids = [n["id"] for p in pages for n in p["data"]]
    assert len(ids) == len(set(ids)) == 5
    assert api.linode("GET", f"{base}?page=0").status_code == 400
    r = api.linode("GET", f"{base}?page_size=abc")
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "page_size"


def test_x_filter(api):
    made = [api.ok(api.linode("POST", NB, {"region": "local", "label": f"flt-{n}", "tags": tags}))
            for n, tags in (("a", ["red"]), ("b", ["blue"]), ("c", ["red", "blue"]))]
    try:
        def labels(flt):
            r = api.linode("GET", NB, headers={"X-Filter": flt})
            return [n["label"] for n in api.ok(r)["data"] if n["label"].startswith("flt-")]
        assert labels('{"label": "flt-b"}') == ["flt-b"]
        assert labels('{"tags": "red"}') == ["flt-a", "flt-c"]
        assert labels('{"+or": [{"label": "flt-a"}, {"label": "flt-b"}]}') == ["flt-a", "flt-b"]
        assert labels('{"label": {"+contains": "FLT-"}, "+order_by": "label", "+order": "desc"}') == [
            "flt-c", "flt-b", "flt-a"]
        for bad in ("{nope", '{"no_such_field": 1}', '{"+order_by": "label", "+order": "sideways"}'):
            r = api.linode("GET", NB, headers={"X-Filter": bad})
            assert r.status_code == 400 and r.json()["errors"][0]["field"] == "X-Filter", bad
    finally:
        for m in made:
            api.linode("DELETE", f"{NB}/{m['id']}")


# -- refusals -------------------------------------------------------------------------------
NB_BAD = [("client_conn_throttle", 21), ("client_conn_throttle", -1), ("client_conn_throttle", "5"),
          ("label", "ab"), ("label", "x" * 33), ("tags", "red"), ("client_udp_sess_throttle", 21)]
CONFIG_BAD = [("port", 0), ("port", 65536), ("protocol", "ftp"), ("algorithm", "random"),
              ("stickiness", "cookie"), ("check", "ping"), ("check_interval", 0), ("check_interval", 3601),
              ("check_timeout", 0), ("check_timeout", 31), ("check_attempts", 0), ("check_attempts", 31),
              ("check_passive", "yes"), ("cipher_suite", "modern"), ("proxy_protocol", "v3"),
              ("udp_check_port", 70000)]
NODE_BAD = [("weight", 0), ("weight", 256), ("mode", "active"), ("address", "nope"),
            ("address", "127.0.0.1:99999"), ("label", "ab")]


@pytest.mark.parametrize("field,value", NB_BAD)
def test_nodebalancer_field_refused(api, nb, field, value):
    before = api.ok(api.linode("GET", f"{NB}/{nb['id']}"))
    r = api.linode("PUT", f"{NB}/{nb['id']}", {field: value})
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"] == field and r.json()["errors"][0]["reason"]
    assert api.ok(api.linode("GET", f"{NB}/{nb['id']}")) == before


def test_nodebalancer_region_required(api):
    r = api.linode("POST", NB, {"label": "no-region"})
    assert r.status_code == 400 and r.json()["errors"] == [{"reason": "required", "field": "region"}]


@pytest.mark.parametrize("field,value", CONFIG_BAD)
def test_config_field_refused(api, nb, field, value):
    cfg = first_config(api, nb)
    path = f"{NB}/{nb['id']}/configs/{cfg['id']}"
    r = api.linode("PUT", path, {field: value})
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["field"] == field
    assert api.ok(api.linode("GET", path)) == cfg
    r = api.linode("POST", f"{NB}/{nb['id']}/configs", {"port": 18090, field: value})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == field
    assert api.ok(api.linode("GET", f"{NB}/{nb['id']}/configs"))["results"] == 1


@pytest.mark.parametrize("field,value", NODE_BAD)
def test_node_field_refused(api, nb, field, value):
    cfg = first_config(api, nb)
    base = f"{NB}/{nb['id']}/configs/{cfg['id']}/nodes"
    r = api.linode("POST", base, {"address": "127.0.0.9:80", "label": "node-x", field: value})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == field, r.text
    assert api.ok(api.linode("GET", base))["results"] == 2


def test_cross_checks_name_the_field(api, nb):
    base = f"{NB}/{nb['id']}/configs"
    r = api.linode("POST", base, {"port": 18080, "protocol": "tcp"})          # port taken
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "port"
    r = api.linode("POST", base, {"port": 18091, "protocol": "tcp", "stickiness": "http_cookie"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "stickiness"
    cfg = first_config(api, nb)
    r = api.linode("POST", f"{base}/{cfg['id']}/nodes", {"address": "127.0.0.1:9101", "label": "dup-node"})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "address"
    r = api.linode("POST", NB, data=b"{not json")
    assert r.status_code == 400 and r.json()["errors"][0]["reason"]


def test_tokens(api):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Auth-Token": api.token},
                    {"Authorization": api.token}):
        r = api.request("GET", NB, headers=headers)
        assert r.status_code == 401 and r.json()["errors"][0]["reason"], headers


@pytest.mark.parametrize("path", [f"{NB}/999999", f"{NB}/abc", f"{NB}/999999/configs", f"{NB}/999999/stats",
                                  f"{NB}/0/configs/1/nodes", "/v4/no-such-thing"])
def test_not_found(api, path):
    r = api.linode("GET", path)
    assert r.status_code == 404 and r.json()["errors"][0]["reason"]


def test_not_found_below_a_real_nodebalancer(api, nb):
    cfg = first_config(api, nb)
    for path in (f"{NB}/{nb['id']}/configs/999999", f"{NB}/{nb['id']}/configs/{cfg['id']}/nodes/999999"):
        for method in ("GET", "PUT", "DELETE"):
            r = api.linode(method, path, {} if method == "PUT" else None)
            assert r.status_code == 404, (method, path, r.text)
