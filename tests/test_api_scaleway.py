"""The Scaleway Load Balancer v1 dialect against a running daemon, on the zoned and the
regional paths: load balancers, IPs, backends with their servers and health check,
frontends, certificates, backend stats; lists, filters, every enum and range refused
with its argument named, 401s and 404s in Scaleway's error shapes."""
import uuid

import pytest
import trustme

from tests.apihttp import SCW_REGION, ApiDaemon


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = ApiDaemon(tmp_path_factory.mktemp("scaleway"))
    yield d
    d.close()


@pytest.fixture(scope="module")
def api(srv):
    return srv.api


@pytest.fixture
def lb(api):
    body = api.ok(api.scw("POST", "/lbs", {"name": f"lb-{uuid.uuid4().hex[:6]}", "description": "test",
                                           "project_id": "p-1", "tags": ["t"]}))
    yield body
    api.scw("DELETE", f"/lbs/{body['id']}?release_ip=true")


@pytest.fixture
def backend(api, lb):
    return api.ok(api.scw("POST", f"/lbs/{lb['id']}/backends", {
        "name": "web", "forward_protocol": "tcp", "forward_port": 18180, "forward_port_algorithm": "roundrobin",
        "sticky_sessions": "none", "sticky_sessions_cookie_name": "", "server_ip": ["127.0.0.1", "127.0.0.2"],
        "health_check": {"port": 18180, "check_delay": "2s", "check_timeout": "500ms", "check_max_retries": 3,
                         "tcp_config": {}}}))


def certificate_chain() -> tuple[str, str]:
    leaf = trustme.CA().issue_cert("api.example.com", "www.example.com")
    chain = "".join(p.bytes().decode() for p in leaf.cert_chain_pems)
    return chain + leaf.private_key_pem.bytes().decode(), leaf.cert_chain_pems[0].bytes().decode()


# -- load balancers and IPs -------------------------------------------------------------------
def test_lb_create_get_update_delete(api):
    created = api.ok(api.scw("POST", "/lbs", {"name": "shop", "description": "d", "project_id": "proj",
                                              "tags": ["a"], "type": "LB-S"}))
    uuid.UUID(created["id"])
    assert created["status"] == "ready" and created["zone"] == "fr-par-1" and created["region"] == "fr-par"
    assert (created["organization_id"], created["project_id"]) == ("proj", "proj")
    assert created["instances"][0]["status"] == "ready" and created["instances"][0]["ip_address"]
    [ip] = created["ip"]
    assert ip["lb_id"] == created["id"] and ip["ip_address"] == created["instances"][0]["ip_address"]
    assert created["created_at"].endswith("Z") and "T" in created["created_at"]
    assert (created["frontend_count"], created["backend_count"]) == (0, 0)
    path = f"/lbs/{created['id']}"
    assert api.ok(api.scw("GET", path, {}))["name"] == "shop"          # a {} body on GET is ignored
    assert api.ok(api.scw("GET", path, prefix=SCW_REGION))["region"] == "fr-par"
    updated = api.ok(api.scw("PUT", path, {"name": "shop2", "description": "d2", "tags": ["b"]}))
    assert (updated["name"], updated["description"], updated["tags"]) == ("shop2", "d2", ["b"])
    r = api.scw("DELETE", path)
    assert r.status_code == 204 and not r.content
    r = api.scw("GET", path)
    assert r.status_code == 404
    assert r.json() | {"resource_id": created["id"]} == {"message": "resource is not found", "type": "not_found",
                                                          "resource": "lb", "resource_id": created["id"]}
    # the IP stays, detached, until released
    kept = api.ok(api.scw("GET", f"/ips/{ip['id']}"))
    assert kept["lb_id"] is None and kept["ip_address"] == ip["ip_address"]
    again = api.ok(api.scw("POST", "/lbs", {"name": "shop3", "description": "", "ip_id": ip["id"],
                                            "organization_id": "org"}))
    assert again["ip"][0]["id"] == ip["id"] and again["instances"][0]["ip_address"] == ip["ip_address"]
    assert api.scw("DELETE", f"/lbs/{again['id']}?release_ip=True").status_code == 204
    assert api.scw("GET", f"/ips/{ip['id']}").status_code == 404


def test_list_lbs_pages_order_and_filters(api):
    names = ["pg-c", "pg-a", "pg-b"]
    made = [api.ok(api.scw("POST", "/lbs", {"name": n, "description": "", "project_id": "proj-x"})) for n in names]
    orphan = api.ok(api.linode("POST", "/v4/nodebalancers", {"region": "local", "label": "pg-owner-less"}))
    try:
        def listed(query):
            return api.ok(api.scw("GET", f"/lbs?{query}"))
        first = listed("name=pg-&page_size=2&order_by=name_asc&project_id=proj-x&organization_id=org-x")
        assert first["total_count"] == 4 and [x["name"] for x in first["lbs"]] == ["pg-a", "pg-b"]
        second = listed("name=pg-&page_size=2&page=2&order_by=name_asc&project_id=proj-x")
        assert [x["name"] for x in second["lbs"]] == ["pg-c", "pg-owner-less"]
        assert listed("name=pg-&page=9")["lbs"] == [] and listed("name=pg-&page=9")["total_count"] == 4
        assert [x["name"] for x in listed("name=pg-&order_by=created_at_desc")["lbs"]][:3] == [
            "pg-owner-less", "pg-b", "pg-a"]
        assert listed("name=pg-&project_id=someone-else")["total_count"] == 1      # the owner-less one
        r = api.scw("GET", "/lbs?order_by=size")
        assert r.status_code == 400 and r.json()["details"][0]["argument_name"] == "order_by"
        assert r.json()["type"] == "invalid_arguments" and r.json()["message"]
        r = api.scw("GET", "/lbs?page_size=0")
        assert r.status_code == 400 and r.json()["details"][0]["argument_name"] == "page_size"
    finally:
        for m in made:
            api.scw("DELETE", f"/lbs/{m['id']}?release_ip=true")
        api.linode("DELETE", f"/v4/nodebalancers/{orphan['id']}")


def test_ips(api, lb):
    ip = api.ok(api.scw("POST", "/ips", {"project_id": "p-1", "reverse": "lb.example.com", "tags": ["x"]}))
    assert ip["lb_id"] is None and ip["reverse"] == "lb.example.com" and ip["ip_address"].startswith("127.")
    listed = api.ok(api.scw("GET", f"/ips?ip_address={ip['ip_address']}"))
    assert [x["id"] for x in listed["ips"]] == [ip["id"]] and listed["total_count"] == 1
    patched = api.ok(api.scw("PATCH", f"/ips/{ip['id']}", {"reverse": "other.example.com", "tags": ["y"]}))
    assert (patched["reverse"], patched["tags"]) == ("other.example.com", ["y"])
    # attach it to the load balancer: the load balancer's VIP moves there, its old IP stays detached
    old_ip = lb["ip"][0]
    attached = api.ok(api.scw("PATCH", f"/ips/{ip['id']}", {"lb_id": lb["id"]}))
    assert attached["lb_id"] == lb["id"]
    now = api.ok(api.scw("GET", f"/lbs/{lb['id']}"))
    assert now["ip"][0]["id"] == ip["id"] and now["instances"][0]["ip_address"] == ip["ip_address"]
    assert api.ok(api.scw("GET", f"/ips/{old_ip['id']}"))["lb_id"] is None
    r = api.scw("DELETE", f"/ips/{ip['id']}")
    assert r.status_code == 412 and r.json()["type"] == "precondition_failed"
    assert api.scw("DELETE", f"/ips/{old_ip['id']}").status_code == 204
    r = api.scw("PATCH", f"/ips/{ip['id']}", {"reverse": "x" * 256})
    assert r.status_code == 400 and r.json()["details"][0]["argument_name"] == "reverse"
    assert api.scw("GET", "/ips?ip_type=ipv7").status_code == 400


# -- backends --------------------------------------------------------------------------------
def test_backend_create_get_update_delete(api, lb, backend):
    assert backend["pool"] == ["127.0.0.1", "127.0.0.2"] and backend["lb"]["id"] == lb["id"]
    hc = backend["health_check"]
    assert (hc["check_delay"], hc["check_timeout"], hc["check_max_retries"]) == ("2s", "0.5s", 3)
    assert hc["tcp_config"] == {} and hc["http_config"] is None
    assert backend["proxy_protocol"] == "proxy_protocol_none" and backend["send_proxy_v2"] is False
    assert backend["on_marked_down_action"] == "on_marked_down_action_none"
    path = f"/backends/{backend['id']}"
    assert api.ok(api.scw("GET", path)) == backend
    # update_backend sends neither server_ip nor health_check: both stay
    updated = api.ok(api.scw("PUT", path, {
        "name": "web2", "forward_protocol": "tcp", "forward_port": 18181, "forward_port_algorithm": "leastconn",
        "sticky_sessions": "table", "sticky_sessions_cookie_name": "", "send_proxy_v2": True,
        "timeout_server": "30s", "timeout_connect": 2500, "timeout_tunnel": "1m30s",
        "on_marked_down_action": "shutdown_sessions", "max_retries": 2,
        "max_connections": 500, "timeout_queue": "3s"}))
    assert updated["pool"] == backend["pool"] and updated["health_check"] == hc
    assert (updated["name"], updated["forward_port"], updated["forward_port_algorithm"]) == ("web2", 18181, "leastconn")
    assert (updated["timeout_server"], updated["timeout_connect"], updated["timeout_tunnel"]) == ("30s", "2.5s", "90s")
    assert updated["proxy_protocol"] == "proxy_protocol_v2" and updated["sticky_sessions"] == "table"
    assert updated["on_marked_down_action"] == "shutdown_sessions" and updated["max_retries"] == 2
    assert (updated["max_connections"], updated["timeout_queue"]) == (500, "3s")    # stored, not ignored
    listed = api.ok(api.scw("GET", f"/lbs/{lb['id']}/backends"))
    assert listed["total_count"] == 1 and listed["backends"][0]["id"] == backend["id"]
    assert api.scw("DELETE", path).status_code == 204
    assert api.scw("GET", path).status_code == 404


def test_backend_servers(api, backend):
    path = f"/backends/{backend['id']}/servers"
    assert api.ok(api.scw("POST", path, {"server_ip": ["127.0.0.3", "127.0.0.1"]}))["pool"] == [
        "127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert api.ok(api.scw("DELETE", path, {"server_ip": ["127.0.0.2"]}))["pool"] == ["127.0.0.1", "127.0.0.3"]
    assert api.ok(api.scw("PUT", path, {"server_ip": ["::1", "127.0.0.3"]}))["pool"] == ["127.0.0.3", "::1"]
    r = api.scw("PUT", path, {"server_ip": ["127.0.0.1", "nope"]})
    assert r.status_code == 400 and r.json()["details"][0]["argument_name"] == "server_ip[1]"
    assert api.ok(api.scw("GET", f"/backends/{backend['id']}"))["pool"] == ["127.0.0.3", "::1"]


@pytest.mark.parametrize("check,config,model", [
    ("http_config", {"uri": "/health", "method": "HEAD", "code": 204, "host_header": "x.example"},
     {"http_uri": "/health", "http_method": "HEAD", "http_code": 204, "http_host": "x.example"}),
    ("https_config", {"uri": "/h", "method": "GET", "code": None, "host_header": "", "sni": "s.example"},
     {"http_uri": "/h", "sni": "s.example", "http_code": None}),
    ("mysql_config", {"user": "probe"}, {"user": "probe", "type": "mysql"}),
    ("pgsql_config", {"user": "probe"}, {"user": "probe", "type": "pgsql"}),
    ("redis_config", {}, {"type": "redis"}), ("ldap_config", {}, {"type": "ldap"}),
    ("tcp_config", {}, {"type": "tcp"}),
])
def test_health_check_types(api, srv, backend, check, config, model):
    hc = api.ok(api.scw("PUT", f"/backends/{backend['id']}/healthcheck", {
        "port": 18185, "check_delay": 3000, "check_timeout": "1.5s", "check_max_retries": 5,
        "check_send_proxy": True, check: config}))
    assert (hc["port"], hc["check_delay"], hc["check_timeout"], hc["check_max_retries"]) == (18185, "3s", "1.5s", 5)
    assert hc["check_send_proxy"] is True
    assert [k for k in hc if k.endswith("_config") and hc[k] is not None] == [check]
    stored = next(b for x in srv.file()["lbs"] for b in x["backends"] if b["uuid"] == backend["id"])["health_check"]
    assert {k: stored.get(k) for k in model} == model
    assert api.ok(api.scw("GET", f"/backends/{backend['id']}"))["health_check"] == hc


# -- frontends and certificates ------------------------------------------------------------------
def test_frontend_create_get_update_delete(api, lb, backend):
    created = api.ok(api.scw("POST", f"/lbs/{lb['id']}/frontends", {
        "name": "front", "inbound_port": 18280, "backend_id": backend["id"], "timeout_client": "45s",
        "enable_http3": False, "enable_access_logs": False}))
    assert created["backend"]["id"] == backend["id"] and created["lb"]["id"] == lb["id"]
    assert (created["inbound_port"], created["timeout_client"], created["certificate"]) == (18280, "45s", None)
    path = f"/frontends/{created['id']}"
    assert api.ok(api.scw("GET", path, prefix=SCW_REGION))["id"] == created["id"]
    updated = api.ok(api.scw("PUT", path, {"name": "front2", "inbound_port": 18281, "backend_id": backend["id"],
                                           "timeout_client": 1000, "certificate_ids": []}))
    assert (updated["name"], updated["inbound_port"], updated["timeout_client"]) == ("front2", 18281, "1s")
    listed = api.ok(api.scw("GET", f"/lbs/{lb['id']}/frontends"))
    assert [f["id"] for f in listed["frontends"]] == [created["id"]]
    assert api.ok(api.scw("GET", f"/lbs/{lb['id']}"))["frontend_count"] == 1
    r = api.scw("DELETE", f"/backends/{backend['id']}")            # in use
    assert r.status_code == 412 and r.json()["type"] == "precondition_failed"
    assert api.scw("DELETE", path).status_code == 204
    assert api.scw("GET", path).status_code == 404


def test_certificates(api, lb, backend):
    chain, leaf_pem = certificate_chain()
    made = api.ok(api.scw("POST", f"/lbs/{lb['id']}/certificates", {
        "name": "site", "custom_certificate": {"certificate_chain": chain}}))
    assert (made["type"], made["status"], made["name"]) == ("custom", "ready", "site")
    assert made["subject_alternative_name"] == ["api.example.com", "www.example.com"]
    assert len(made["fingerprint"].split(":")) == 20 and made["not_valid_after"].endswith("Z")
    assert "PRIVATE" not in api.scw("GET", f"/certificates/{made['id']}").text
    front = api.ok(api.scw("POST", f"/lbs/{lb['id']}/frontends", {
        "name": "tls", "inbound_port": 18443, "backend_id": backend["id"], "certificate_ids": [made["id"]]}))
    assert front["certificate_ids"] == [made["id"]] and front["certificate"]["id"] == made["id"]
    renamed = api.ok(api.scw("PUT", f"/certificates/{made['id']}", {"name": "site2"}))
    assert renamed["name"] == "site2"
    assert api.ok(api.scw("GET", f"/frontends/{front['id']}"))["certificate"]["name"] == "site2"
    r = api.scw("DELETE", f"/certificates/{made['id']}")
    assert r.status_code == 412
    listed = api.ok(api.scw("GET", f"/lbs/{lb['id']}/certificates"))
    assert [c["id"] for c in listed["certificates"]] == [made["id"]]
    for bad, arg in (({"name": "x", "letsencrypt": {"common_name": "a.example"}}, "letsencrypt"),
                     ({"name": "x", "custom_certificate": {"certificate_chain": leaf_pem}}, "custom_certificate"),
                     ({"name": "x", "custom_certificate": {"certificate_chain": "junk"}}, "custom_certificate")):
        r = api.scw("POST", f"/lbs/{lb['id']}/certificates", bad)
        assert r.status_code == 400 and r.json()["details"][0]["argument_name"].startswith(arg), r.text
    plain = api.ok(api.scw("PUT", f"/frontends/{front['id']}", {"certificate_ids": []}))
    assert plain["certificate"] is None and plain["certificate_ids"] == []
    assert api.scw("DELETE", f"/certificates/{made['id']}").status_code == 204


def test_backend_stats(api, lb, backend):
    for path in (f"/lbs/{lb['id']}/backend-stats", f"/lbs/{lb['id']}/stats"):
        stats = api.ok(api.scw("GET", path))
        assert stats["total_count"] == 2
        for row in stats["backend_servers_stats"]:
            assert row["backend_id"] == backend["id"] and row["ip"] in ("127.0.0.1", "127.0.0.2")
            assert row["server_state"] in ("stopped", "starting", "running", "stopping")
            assert row["last_health_check_status"] in ("unknown", "neutral", "failed", "passed", "condpass")
            uuid.UUID(row["instance_id"])
    other = api.ok(api.scw("GET", f"/lbs/{lb['id']}/backend-stats?backend_id={uuid.uuid4()}"))
    assert other == {"backend_servers_stats": [], "total_count": 0}
    types = api.ok(api.scw("GET", "/lb-types"))
    assert types["total_count"] == 1 and types["lb_types"][0]["name"] == "LB-S"


# -- refusals -------------------------------------------------------------------------------
BACKEND_BAD = [
    ("forward_protocol", "udp", "forward_protocol"), ("forward_port", 0, "forward_port"),
    ("forward_port", 65536, "forward_port"), ("forward_port_algorithm", "random", "forward_port_algorithm"),
    ("sticky_sessions", "sometimes", "sticky_sessions"), ("proxy_protocol", "proxy_protocol_v3", "proxy_protocol"),
    ("proxy_protocol", "proxy_protocol_v2_ssl", "proxy_protocol"),
    ("on_marked_down_action", "reboot", "on_marked_down_action"), ("timeout_server", "forever", "timeout_server"),
    ("timeout_connect", "0s", "timeout_connect"), ("timeout_tunnel", "25h", "timeout_tunnel"),
    ("max_retries", 11, "max_retries"), ("send_proxy_v2", "yes", "send_proxy_v2"),
    ("sticky_sessions_cookie_name", "c" * 65, "sticky_sessions_cookie_name"),
    ("health_check", {"check_max_retries": 0}, "health_check.check_max_retries"),
    ("health_check", {"check_delay": "soon"}, "health_check.check_delay"),
    ("health_check", {"check_timeout": "31s"}, "health_check.check_timeout"),
    ("health_check", {"port": 0}, "health_check.port"),
    ("health_check", {"tcp_config": {}, "http_config": {"uri": "/"}}, "health_check.http_config"),
    ("health_check", {"http_config": {"uri": "/", "code": 999}}, "health_check.http_config.code"),
]


@pytest.mark.parametrize("field,value,argument", BACKEND_BAD)
def test_backend_field_refused(api, lb, backend, field, value, argument):
    body = {"name": "bad", "forward_protocol": "tcp", "forward_port": 80, field: value}
    r = api.scw("POST", f"/lbs/{lb['id']}/backends", body)
    assert r.status_code == 400, r.text
    assert r.json()["details"][0]["argument_name"] == argument and r.json()["details"][0]["help_message"]
    if field != "health_check":
        r = api.scw("PUT", f"/backends/{backend['id']}", {field: value})
        assert r.status_code == 400 and r.json()["details"][0]["argument_name"] == argument, r.text
    else:
        r = api.scw("PUT", f"/backends/{backend['id']}/healthcheck", value)     # the body is the check
        assert r.status_code == 400, r.text
        assert r.json()["details"][0]["argument_name"] == argument.removeprefix("health_check."), r.text
    assert api.ok(api.scw("GET", f"/backends/{backend['id']}")) == backend
    assert api.ok(api.scw("GET", f"/lbs/{lb['id']}/backends"))["total_count"] == 1


def test_cookie_stickiness_needs_http(api, lb, backend):
    r = api.scw("PUT", f"/backends/{backend['id']}", {"sticky_sessions": "cookie"})
    assert r.status_code == 400 and r.json()["details"][0]["argument_name"] == "sticky_sessions"
    ok = api.ok(api.scw("PUT", f"/backends/{backend['id']}", {"forward_protocol": "http", "sticky_sessions": "cookie",
                                                             "sticky_sessions_cookie_name": "SRV"}))
    assert (ok["forward_protocol"], ok["sticky_sessions"], ok["sticky_sessions_cookie_name"]) == ("http", "cookie", "SRV")


@pytest.mark.parametrize("body,argument", [
    ({"inbound_port": 70000}, "inbound_port"), ({"inbound_port": "80"}, "inbound_port"),
    ({"backend_id": str(uuid.uuid4())}, "backend_id"), ({"timeout_client": "-5s"}, "timeout_client"),
    ({"certificate_ids": [str(uuid.uuid4())]}, "certificate_ids[0]"), ({"name": ""}, "name"),
])
def test_frontend_field_refused(api, lb, backend, body, argument):
    full = {"name": "f", "inbound_port": 18380, "backend_id": backend["id"], **body}
    r = api.scw("POST", f"/lbs/{lb['id']}/frontends", full)
    assert r.status_code == 400 and r.json()["details"][0]["argument_name"] == argument, r.text
    assert api.ok(api.scw("GET", f"/lbs/{lb['id']}/frontends"))["total_count"] == 0


@pytest.mark.parametrize("body,argument", [
    ({"name": ""}, "name"), ({"name": "x", "tags": "t"}, "tags"), ({"name": "x", "ip_id": str(uuid.uuid4())}, "ip_id"),
    ({"name": "x", "ssl_compatibility_level": "ssl_compatibility_level_ancient"}, "ssl_compatibility_level"),
    ({"name": "x", "description": "d" * 1025}, "description"),
])
def test_lb_field_refused(api, body, argument):
    before = api.ok(api.scw("GET", "/lbs"))["total_count"]
    r = api.scw("POST", "/lbs", body)
    assert r.status_code == 400 and r.json()["details"][0]["argument_name"] == argument, r.text
    assert api.ok(api.scw("GET", "/lbs"))["total_count"] == before


def test_tokens(api):
    for headers in ({}, {"X-Auth-Token": "wrong"}, {"Authorization": f"Bearer {api.token}"}):
        r = api.request("GET", "/lb/v1/zones/fr-par-1/lbs", headers=headers)
        assert r.status_code == 401
        assert r.json()["type"] == "denied_authentication" and r.json()["message"], headers


@pytest.mark.parametrize("method,path", [
    ("GET", "/lbs/{id}"), ("PUT", "/lbs/{id}"), ("DELETE", "/lbs/{id}"), ("GET", "/lbs/{id}/backends"),
    ("POST", "/lbs/{id}/frontends"), ("GET", "/backends/{id}"), ("PUT", "/backends/{id}/servers"),
    ("PUT", "/backends/{id}/healthcheck"), ("GET", "/frontends/{id}"), ("DELETE", "/frontends/{id}"),
    ("GET", "/certificates/{id}"), ("GET", "/ips/{id}"), ("PATCH", "/ips/{id}"), ("GET", "/lbs/{id}/backend-stats"),
    ("GET", "/no-such-collection"),
])
def test_not_found(api, method, path):
    ref = str(uuid.uuid4())
    body = {"server_ip": []} if path.endswith("/servers") else ({} if method in ("PUT", "PATCH", "POST") else None)
    if path.endswith("/frontends") and method == "POST":
        body = {"inbound_port": 80, "backend_id": ref}
    r = api.scw(method, path.format(id=ref), body)
    assert r.status_code == 404, r.text
    assert r.json()["type"] == "not_found" and r.json()["message"]
