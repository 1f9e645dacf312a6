"""Model and config file: every enum and range from the seeds, errors that name the
field path, and a canonical file that survives file -> model -> file unchanged."""
import os
import stat

import pytest
from hypothesis import given, settings, strategies as st

from control import config as configfile
from control.config import ConfigError
from lbfast.enums import (Algorithm, CheckType, CipherSuite, OnMarkedDown, ProxyProtocol,
                          ServerMode, Stickiness)


def base() -> dict:
    return {
        "ip_pool": ["127.0.0.64/26"],
        "lbs": [{
            "name": "web",
            "backends": [{"name": "pool", "protocol": "http", "forward_port": 8080,
                          "servers": [{"address": "10.0.0.1"}, {"address": "10.0.0.2", "weight": 3}]}],
            "frontends": [{"name": "http", "port": 80, "backend": "pool"}],
        }],
    }


def error_of(doc: dict) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        configfile.parse(doc)
    return e.value


# (where in base(), field, valid values, invalid values, message fragment)
LB = ("lbs", 0)
BACKEND = ("lbs", 0, "backends", 0)
SERVER = ("lbs", 0, "backends", 0, "servers", 1)
FRONTEND = ("lbs", 0, "frontends", 0)
CHECK = ("lbs", 0, "backends", 0, "health_check")
CASES = [
    (SERVER, "weight", [1, 100, 255], [0, 256, -1], "1..255"),
    (SERVER, "weight", [], ["3", 2.5], "valid integer"),
    (SERVER, "port", [1, 65535], [0, 65536], "1..65535"),
    (SERVER, "mode", [m.value for m in ServerMode], ["standby", ""], "accept"),
    (SERVER, "address", ["192.0.2.1", "2001:db8::1"], ["10.0.0", "host.example"], "not an IPv4"),
    (SERVER, "label", ["", "a" * 32], ["a" * 33], "0..32"),
    (BACKEND, "forward_port", [1, 65535], [0, 70000], "1..65535"),
    (BACKEND, "algorithm", [a.value for a in Algorithm], ["random", "rr"], "roundrobin"),
    (BACKEND, "stickiness", [s.value for s in Stickiness], ["http_cookie", "ip"], "none"),
    (BACKEND, "proxy_protocol", [p.value for p in ProxyProtocol], ["v3"], "none"),
    (BACKEND, "on_marked_down_action", [o.value for o in OnMarkedDown], ["kill"], "shutdown_sessions"),
    (BACKEND, "timeout_server_ms", [1, 86_400_000], [0, 86_400_001], "1..86400000"),
    (BACKEND, "timeout_connect_ms", [1, 5000], [0], "1..86400000"),
    (BACKEND, "timeout_tunnel_ms", [1, 3_600_000], [-5], "1..86400000"),
    (BACKEND, "udp_session_timeout_ms", [1, 86_400_000], [0], "1..86400000"),
    (FRONTEND, "port", [1, 65535], [0, 65536], "1..65535"),
    (FRONTEND, "timeout_client_ms", [1, 30000], [0], "1..86400000"),
    (FRONTEND, "cipher_suite", [c.value for c in CipherSuite], ["modern"], "recommended"),
    (LB, "client_conn_throttle", list(range(0, 21)), [-1, 21], "0..20"),
    (LB, "vip", ["127.0.0.99", "2001:db8::5"], ["999.1.1.1"], "not an IPv4"),
    (CHECK, "type", [c.value for c in CheckType], ["icmp"], "none"),
    (CHECK, "attempts", [1, 30], [0, 31], "1..30"),
    (CHECK, "rise", [1, 30], [0, 31], "1..30"),
    (CHECK, "timeout_ms", [1, 30000], [0, 30001], "1..30000"),
    (CHECK, "port", [1, 65535], [0, 65536], "1..65535"),
]


def place(doc: dict, where: tuple, field: str, value) -> dict:
    node = doc
    for part in where:
        if part == "health_check":
            node = node.setdefault("health_check", {})
        else:
            node = node[part]
    node[field] = value
    return doc


def path_of(where: tuple, field: str) -> str:
    out = ""
    for part in where:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return f"{out}.{field}"


@pytest.mark.parametrize("where,field,valid,invalid,fragment", CASES,
                         ids=[f"{c[0][-1] if isinstance(c[0][-1], str) else c[0][-2]}.{c[1]}" for c in CASES])
def test_enum_and_range(where, field, valid, invalid, fragment):
    for value in valid:
        node = configfile.parse(place(base(), where, field, value))
        for part in where:                      # the value lands in the model unchanged
            node = node[part] if isinstance(part, int) else getattr(node, part)
        assert getattr(node, field) == value
    for value in invalid:
        err = error_of(place(base(), where, field, value))
        paths = [p for p, _ in err.problems]
        assert path_of(where, field) in paths, (value, err.problems)
        assert any(fragment in m for p, m in err.problems if p == path_of(where, field)), (value, err.problems)


def test_error_names_the_full_path():
    doc = base()
    doc["lbs"][0]["backends"][0]["servers"][1]["weight"] = 256
    assert str(error_of(doc)) == "lbs[0].backends[0].servers[1].weight: must be 1..255"


def test_defaults_from_the_seeds():
    cfg = configfile.parse(base())
    lb = cfg.lbs[0]
    b = lb.backends[0]
    assert (lb.client_conn_throttle, b.algorithm, b.stickiness, b.proxy_protocol) == (0, "roundrobin", "none", "none")
    assert b.on_marked_down_action == "none" and b.health_check.type == "none"
    assert lb.frontends[0].cipher_suite == "recommended"
    assert b.servers[0].mode == "accept" and b.servers[0].port is None


def test_unknown_field_and_bad_json():
    doc = base()
    doc["lbs"][0]["frontends"][0]["colour"] = "red"
    assert "lbs[0].frontends[0].colour: unknown field" in str(error_of(doc))
    with pytest.raises(ConfigError, match="not valid JSON"):
        configfile.parse(b"{nope")


@pytest.mark.parametrize("mutate,path,fragment", [
    (lambda d: d["lbs"][0]["frontends"][0].update(backend="missing"), "lbs[0].frontends[0].backend", "no backend"),
    (lambda d: d["lbs"].append(dict(d["lbs"][0], vip="127.0.0.100")), "lbs[1].name", "duplicate"),
    (lambda d: d["lbs"][0]["frontends"].append({"name": "b", "port": 80, "backend": "pool"}),
     "lbs[0].frontends[1].port", "already used"),
    (lambda d: d["lbs"][0]["backends"][0]["servers"].append({"address": "10.0.0.1"}),
     "lbs[0].backends[0].servers[2]", "duplicate server"),
    (lambda d: d["lbs"][0]["backends"][0].update(protocol="tcp", stickiness="cookie"),
     "lbs[0].backends[0].stickiness", "needs protocol http"),
    (lambda d: d["lbs"][0]["frontends"][0].update(certificates=["nope"]),
     "lbs[0].frontends[0].certificates", "no certificate"),
    (lambda d: d.update(ip_pool=[]), "lbs[0].vip", "no free address"),
])
def test_cross_checks(mutate, path, fragment):
    doc = base()
    mutate(doc)
    err = error_of(doc)
    assert any(p == path and fragment in m for p, m in err.problems), err.problems


def test_ids_and_vips_are_assigned_deterministically():
    a, b = configfile.parse(base()), configfile.parse(base())
    assert a.lbs[0].vip == "127.0.0.65"
    assert (a.lbs[0].id, a.lbs[0].uuid) == (b.lbs[0].id, b.lbs[0].uuid)
    assert [s.id for s in a.lbs[0].backends[0].servers] == [1, 2]


def test_save_is_atomic_and_private(tmp_path):
    path = tmp_path / "lbfast.json"
    cfg = configfile.parse(base())
    configfile.save(cfg, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]          # no temp file left behind
    assert configfile.load(path) == cfg


# -- hypothesis: valid configs round-trip, invalid ones name their field ------------------
servers = st.lists(
    st.fixed_dictionaries({
        "address": st.ip_addresses(v=4).map(str),
        "weight": st.integers(1, 255),
        "mode": st.sampled_from([m.value for m in ServerMode]),
    }), max_size=6, unique_by=lambda s: s["address"])
backends = st.fixed_dictionaries({
    "protocol": st.sampled_from(["tcp", "http"]),
    "forward_port": st.integers(1, 65535),
    "algorithm": st.sampled_from([a.value for a in Algorithm]),
    "stickiness": st.sampled_from(["none", "table"]),
    "timeout_server_ms": st.integers(1, 86_400_000),
    "health_check": st.fixed_dictionaries({"type": st.sampled_from([c.value for c in CheckType]),
                                           "attempts": st.integers(1, 30)}),
    "servers": servers,
})
lbs = st.lists(
    st.fixed_dictionaries({
        "client_conn_throttle": st.integers(0, 20),
        "backends": st.lists(backends, min_size=1, max_size=3),
        "ports": st.lists(st.integers(1, 65535), min_size=1, max_size=3, unique=True),
    }), min_size=1, max_size=4)


def build(raw_lbs) -> dict:
    doc = {"ip_pool": ["10.9.0.0/24"], "lbs": []}
    for i, raw in enumerate(raw_lbs):
        backs = [dict(b, name=f"b{j}") for j, b in enumerate(raw["backends"])]
        fronts = [{"name": f"f{j}", "port": p, "backend": f"b{j % len(backs)}"} for j, p in enumerate(raw["ports"])]
        doc["lbs"].append({"name": f"lb{i}", "client_conn_throttle": raw["client_conn_throttle"],
                           "backends": backs, "frontends": fronts})
    return doc


@settings(max_examples=80, deadline=None)
@given(lbs)
def test_valid_configs_round_trip(raw_lbs):
    cfg = configfile.parse(build(raw_lbs))
    text = configfile.dump(cfg)
    again = configfile.parse(text)
    assert again == cfg
    assert configfile.dump(again) == text


@settings(max_examples=80, deadline=None)
@given(lbs, st.sampled_from(["weight", "forward_port", "client_conn_throttle", "attempts", "algorithm"]),
       st.data())
def test_invalid_values_are_named(raw_lbs, field, data):
    doc = build(raw_lbs)
    lb = doc["lbs"][0]
    if field == "weight":
        if not lb["backends"][0]["servers"]:
            lb["backends"][0]["servers"].append({"address": "10.1.1.1"})
        target, path = lb["backends"][0]["servers"][0], "lbs[0].backends[0].servers[0].weight"
        bad = data.draw(st.one_of(st.integers(max_value=0), st.integers(min_value=256)))
    elif field == "forward_port":
        target, path = lb["backends"][0], "lbs[0].backends[0].forward_port"
        bad = data.draw(st.one_of(st.integers(max_value=0), st.integers(min_value=65536)))
    elif field == "client_conn_throttle":
        target, path = lb, "lbs[0].client_conn_throttle"
        bad = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=21)))
    elif field == "attempts":
        target, path = lb["backends"][0]["health_check"], "lbs[0].backends[0].health_check.attempts"
        bad = data.draw(st.one_of(st.integers(max_value=0), st.integers(min_value=31)))
    else:
        target, path = lb["backends"][0], "lbs[0].backends[0].algorithm"
        bad = data.draw(st.text(max_size=10).filter(lambda s: s not in {a.value for a in Algorithm}))
    target[field] = bad
    err = error_of(doc)
    assert path in [p for p, _ in err.problems]


def test_example_config_is_valid():
    root = os.path.join(os.path.dirname(__file__), "..", "examples")
    for name in os.listdir(root):
        if name.endswith(".json"):
            configfile.load(os.path.join(root, name))


def test_ids_are_never_reused_after_a_delete():
    from control.edit import Change
    cfg = configfile.parse(base())
    c = Change(cfg)
    c.create_lb({"name": "second"})
    cfg = c.done()
    second = cfg.lbs[1].id
    c = Change(cfg)
    c.delete_lb("second")
    cfg = configfile.parse(configfile.dump(c.done()))      # through the file, as a restart would
    c = Change(cfg)
    c.create_lb({"name": "third"})
    assert c.done().lbs[1].id == second + 1
