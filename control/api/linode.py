"""The Linode NodeBalancers v4 dialect (/v4/nodebalancers...). A nodebalancer is a load
balancer; a config is one frontend with its own backend, both named port-<port> so the
mapping survives restarts; a node is a server with its own port; ssl_cert/ssl_key are a
certificate object of the load balancer, never shown back (<REDACTED>)."""
import functools
import uuid as uuidlib

import orjson
from aiohttp import web

from control import certificates, grammar
from control.api import fields as wire
from control.api.changes import commit, validated
from control.api.errors import ApiError
from control.api.fields import Field, Table, split_attrs
from control.api.observed import Observed
from control.api.routes import Param, Route
from control.api.views import json_body, linode_date, linode_page
from control.config import REDACTED, ConfigError, frontend_protocol
from control.edit import Change, NotFound
from control.model import Backend, Certificate, Config, Frontend, LoadBalancer, Server, new_uuid, now
from lbfast.enums import (Algorithm, CheckType, CipherSuite, Protocol, ProxyProtocol, ServerMode,
                          Stickiness)

MB = 1_000_000

# -- spellings: wire value → model value ----------------------------------------------------
PROTOCOLS = {"http": Protocol.HTTP, "https": Protocol.HTTPS, "tcp": Protocol.TCP, "udp": Protocol.UDP}
ALGORITHMS = {"roundrobin": Algorithm.ROUNDROBIN, "leastconn": Algorithm.LEASTCONN,
              "source": Algorithm.SOURCE}
STICKINESS = {"none": Stickiness.NONE, "table": Stickiness.TABLE, "http_cookie": Stickiness.COOKIE}
CHECKS = {"none": CheckType.NONE, "connection": CheckType.TCP, "http": CheckType.HTTP,
          "http_body": CheckType.HTTP_BODY}
# model check types Linode has no word for, shown as the nearest one
CHECKS_SHOWN = {CheckType.HTTPS: "http", CheckType.MYSQL: "connection", CheckType.PGSQL: "connection",
                CheckType.REDIS: "connection", CheckType.LDAP: "connection"}
CIPHER_SUITES = {c.value: c for c in CipherSuite}
PROXY_PROTOCOLS = {p.value: p for p in ProxyProtocol}
MODES = {m.value: m for m in ServerMode}

# -- objects on the wire -------------------------------------------------------------------
TRANSFER = {"type": "object", "readOnly": True, "properties": {
    k: {"type": "number", "nullable": True} for k in ("in", "out", "total")},
    "description": "MB through this NodeBalancer (counted since the daemon started)"}

NODE = Table("NodeBalancerNode", [
    Field("id", type="integer", read_only=True),
    Field("config_id", type="integer", read_only=True),
    Field("nodebalancer_id", type="integer", read_only=True),
    Field("address", "server.address", required=True, description="IP:port of the backend",
          extra={"example": "192.168.210.120:80"}),
    Field("label", "server.label", bounds=(3, 32), required=True),
    Field("status", read_only=True, spellings={"UP": "UP", "DOWN": "DOWN", "Unknown": "Unknown"}),
    Field("weight", "server.weight", type="integer"),
    Field("mode", "server.mode", spellings=MODES),
])

NODE_IN_LIST = {**NODE.schema(request=True, create=True)}
NODE_IN_LIST["properties"] = {"id": {"type": "integer"}, **NODE_IN_LIST["properties"]}

CONFIG = Table("NodeBalancerConfig", [
    Field("id", type="integer", read_only=True),
    Field("nodebalancer_id", type="integer", read_only=True),
    Field("port", "frontend.port", type="integer"),
    Field("protocol", "frontend.protocol", spellings=PROTOCOLS),
    Field("algorithm", "backend.algorithm", spellings=ALGORITHMS),
    Field("stickiness", "backend.stickiness", spellings=STICKINESS),
    Field("check", "backend.health_check.type", spellings=CHECKS),
    Field("check_interval", "backend.health_check.interval_ms", type="integer", scale=1000,
          description="seconds"),
    Field("check_timeout", "backend.health_check.timeout_ms", type="integer", scale=1000,
          description="seconds"),
    Field("check_attempts", "backend.health_check.attempts", type="integer"),
    Field("check_path", "backend.health_check.http_uri"),
    Field("check_body", "backend.health_check.http_body"),
    Field("check_passive", "backend.health_check.passive", type="boolean"),
    Field("cipher_suite", "frontend.cipher_suite", spellings=CIPHER_SUITES),
    Field("proxy_protocol", "backend.proxy_protocol", spellings=PROXY_PROTOCOLS),
    Field("ssl_cert", "certificate.chain_pem", nullable=True,
          description=f"PEM chain; shown as {REDACTED}; {REDACTED} sent back means unchanged"),
    Field("ssl_key", "certificate.key_pem", nullable=True,
          description=f"PEM private key; shown as {REDACTED}; {REDACTED} sent back means unchanged"),
    Field("ssl_commonname", read_only=True, nullable=True),
    Field("ssl_fingerprint", read_only=True, nullable=True),
    Field("nodes_status", type="object", read_only=True, schema={
        "type": "object", "properties": {"up": {"type": "integer"}, "down": {"type": "integer"}}}),
    Field("udp_check_port", type="integer", bounds=(1, 65535), ignored=True,
          description="accepted for compatibility; UDP checks use the check port"),
    Field("udp_session_timeout", type="integer", bounds=(1, 86400), ignored=True,
          description="accepted for compatibility"),
    Field("nodes", type="array", items="object", write_only=True, schema={"type": "array", "items": NODE_IN_LIST},
          description="create and rebuild: the config's nodes (with id: updated; without: created)"),
])

NODEBALANCER = Table("NodeBalancer", [
    Field("id", type="integer", read_only=True),
    Field("label", "lb.name", bounds=(3, 32)),
    Field("region", "lb.region", required=True, extra={"example": "local"}),
    Field("hostname", read_only=True),
    Field("ipv4", read_only=True),
    Field("ipv6", read_only=True, nullable=True),
    Field("client_conn_throttle", "lb.client_conn_throttle", type="integer"),
    Field("client_udp_sess_throttle", type="integer", bounds=(0, 20), ignored=True,
          description="accepted for compatibility"),
    Field("tags", "lb.tags", type="array"),
    Field("type", read_only=True),
    Field("created", read_only=True),
    Field("updated", read_only=True),
    Field("transfer", type="object", read_only=True, schema=TRANSFER),
    Field("configs", type="array", items="object", write_only=True, schema={
        "type": "array", "items": CONFIG.schema(request=True)}),
])
TABLES = (CONFIG, NODE, NODEBALANCER)

# model attributes whose errors belong to a wire field of another name
ERROR_FIELDS = {
    "frontend.certificates": "ssl_cert", "backend.protocol": "protocol", "frontend.name": "port",
    "backend.name": "port", "frontend.backend": "port", "lb.vip": "ipv4", "backend.forward_port": "port",
    "server.port": "address", "server": "address", "certificate.name": "ssl_cert",
    "backend.health_check.http_code": "check", "backend.health_check": "check",
}


# -- errors ----------------------------------------------------------------------------------
def translate(e: ConfigError) -> ApiError:
    problems = []
    for path, message in e.problems:
        attr = wire.model_field_path(path)
        name = None
        if attr is not None:
            name = ERROR_FIELDS.get(attr) or next(
                (n for n in (t.wire_name(attr) for t in TABLES) if n), None) or attr.rsplit(".", 1)[-1]
        elif path:
            name = path.rsplit(".", 1)[-1]
        problems.append((name, message))
    return ApiError(400, problems)


def handler(fn):
    @functools.wraps(fn)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except ConfigError as e:
            raise translate(e) from None
        except certificates.CertificateError as e:
            raise ApiError.bad_request("ssl_key" if e.field == "key_pem" else "ssl_cert", str(e)) from None
        except NotFound as e:
            raise ApiError.not_found(e.kind, e.ref) from None
    return wrapped


def ok(body) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


# -- lookups (on whichever config is at hand: the live one, or a Change's copy) --------------
def _int(raw: str, kind: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ApiError.not_found(kind, raw) from None
    if not 1 <= value <= 2**31 - 1:
        raise ApiError.not_found(kind, raw)
    return value


def find_lb(config: Config, raw: str) -> LoadBalancer:
    i = _int(raw, "nodebalancer")
    for lb in config.lbs:
        if lb.id == i:
            return lb
    raise ApiError.not_found("nodebalancer", raw)


def backend_of(lb: LoadBalancer, f: Frontend) -> Backend:
    return next(b for b in lb.backends if b.name == f.backend)


def find_config(config: Config, raw_lb: str, raw: str) -> tuple[LoadBalancer, Frontend, Backend]:
    lb = find_lb(config, raw_lb)
    i = _int(raw, "config")
    for f in lb.frontends:
        if f.id == i:
            return lb, f, backend_of(lb, f)
    raise ApiError.not_found("config", raw)


def find_node(config: Config, raw_lb: str, raw_config: str, raw: str):
    lb, f, b = find_config(config, raw_lb, raw_config)
    i = _int(raw, "node")
    for s in b.servers:
        if s.id == i:
            return lb, f, b, s
    raise ApiError.not_found("node", raw)


# -- model → wire -------------------------------------------------------------------------
def hostname(vip: str) -> str:
    return vip.replace(".", "-").replace(":", "-") + ".ip.lbfast.internal"


def nodebalancer(lb: LoadBalancer, seen: Observed) -> dict:
    t = seen.lb_totals(lb)
    v6 = ":" in (lb.vip or "")
    return {
        "id": lb.id, "label": lb.name, "region": lb.region, "hostname": hostname(lb.vip),
        "ipv4": "" if v6 else lb.vip, "ipv6": lb.vip if v6 else None,
        "client_conn_throttle": lb.client_conn_throttle, "client_udp_sess_throttle": 0,
        "tags": list(lb.tags), "type": "common",
        "created": linode_date(lb.created_at), "updated": linode_date(lb.updated_at or lb.created_at),
        "transfer": {"in": round(t["bytes_in"] / MB, 6), "out": round(t["bytes_out"] / MB, 6),
                     "total": round((t["bytes_in"] + t["bytes_out"]) / MB, 6)},
    }


def _value(objects: dict, attr: str):
    kind, *path = attr.split(".")
    obj = objects.get(kind)
    for name in path:
        if obj is None:
            return None
        obj = getattr(obj, name)
    return obj


def config_view(lb: LoadBalancer, f: Frontend, seen: Observed) -> dict:
    b = backend_of(lb, f)
    certs = [c for c in lb.certificates if c.name in f.certificates]
    objects = {"frontend": f, "backend": b}
    out = {"id": f.id, "nodebalancer_id": lb.id}
    for fld in CONFIG:
        if fld.attr and fld.attr.split(".")[0] in objects and not fld.write_only:
            out[fld.wire] = fld.show(_value(objects, fld.attr))
    out["protocol"] = str(frontend_protocol(lb, f))
    if b.health_check.type in CHECKS_SHOWN:
        out["check"] = CHECKS_SHOWN[b.health_check.type]
    info = None
    if certs:
        try:
            info = certificates.describe(certs[0].chain_pem)
        except certificates.CertificateError:
            info = None
    out["ssl_cert"] = out["ssl_key"] = REDACTED if certs else None
    # a certificate may name its host in SANs only: the first of them stands for the CN
    out["ssl_commonname"] = (info.common_name or next(iter(info.names()), "")) if info else None
    out["ssl_fingerprint"] = info.fingerprint if info else None
    states = [seen.server(b, s).health for s in b.servers]
    out["nodes_status"] = {"up": states.count("UP"), "down": states.count("DOWN")}
    return out


def address_of(b: Backend, s: Server) -> str:
    port = s.port or b.forward_port
    return f"[{s.address}]:{port}" if ":" in s.address else f"{s.address}:{port}"


def node_view(lb: LoadBalancer, f: Frontend, b: Backend, s: Server, seen: Observed) -> dict:
    health = seen.server(b, s).health
    return {"id": s.id, "config_id": f.id, "nodebalancer_id": lb.id, "address": address_of(b, s),
            "label": s.label, "status": health if health != "unknown" else "Unknown",
            "weight": s.weight, "mode": str(s.mode)}


# -- wire → model -------------------------------------------------------------------------
def parse_address(value: str) -> tuple[str, int | None]:
    """"10.0.0.1:80", "[fd00::1]:80", or a bare address (the config's port)."""
    text = value.strip()
    host, port = text, None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r} is not IP:port")
        port = rest[1:] or None
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        host = grammar.ip_address(host)
    except ValueError as e:
        raise ValueError(f"not IP:port: {e}") from None
    if port is not None:
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{value!r}: the port must be 1..65535")
        port = int(port)
    return host, port


def node_fields(body, *, create: bool, prefix: str = "") -> dict:
    vals = NODE.parse(body, create=create, prefix=prefix)
    out = split_attrs(vals, "server")
    if "address" in out:
        try:
            out["address"], out["port"] = parse_address(out["address"])
        except ValueError as e:
            raise ApiError.bad_request(prefix + "address", str(e)) from None
    return out


def config_fields(body, *, create: bool, prefix: str = "") -> tuple[dict, list | None]:
    """(parsed config values by attribute, list of (node id or None, node fields) or None)."""
    vals = CONFIG.parse(body, create=create, prefix=prefix)
    if vals.get("backend.health_check.http_uri") == "":
        del vals["backend.health_check.http_uri"]       # clients send "" for "not set"
    raw_nodes = vals.pop("nodes", None)
    nodes = None
    if raw_nodes is not None:
        nodes, problems = [], []
        for i, raw in enumerate(raw_nodes):
            at = f"{prefix}nodes[{i}]."
            node_id = raw.get("id") if isinstance(raw, dict) else None
            if node_id is not None and (isinstance(node_id, bool) or not isinstance(node_id, int)):
                problems.append((at + "id", "must be an integer"))
                continue
            try:
                nodes.append((node_id, node_fields(raw, create=node_id is None, prefix=at)))
            except ApiError as e:
                problems.extend(e.problems)
        if problems:
            raise ApiError(400, problems)
    return vals, nodes


def _unique_name(lb: LoadBalancer, base: str, own: set[str] = frozenset()) -> str:
    taken = ({b.name for b in lb.backends} | {f.name for f in lb.frontends}) - set(own)
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def _certificate_name(lb: LoadBalancer, frontend_name: str, current: Certificate | None) -> str:
    """The frontend's own certificate keeps its name; otherwise a new, unused one."""
    if current is not None and sum(current.name in f.certificates for f in lb.frontends) == 1:
        return current.name
    taken = {c.name for c in lb.certificates}
    name, n = frontend_name, 2
    while name in taken:
        name, n = f"{frontend_name}-{n}", n + 1
    return name


def _set_certificate(c: Change, lb_uuid: str, name: str, chain: str, key: str) -> None:
    certificates.check(chain, key)
    lb = c.lb(lb_uuid)
    at = f"{c.path(lb)}certificates"
    for i, cert in enumerate(lb.certificates):
        if cert.name == name:
            lb.certificates[i] = validated(Certificate, cert.model_dump() | {"chain_pem": chain, "key_pem": key},
                                           f"{at}[{i}].")
            return
    lb.certificates.append(new_uuid(validated(
        Certificate, {"name": name, "chain_pem": chain, "key_pem": key, "created_at": now()},
        f"{at}[{len(lb.certificates)}].")))


def _drop_unused_certificates(c: Change, lb_uuid: str, names: set[str]) -> None:
    """Certificates this dialect made for a config go when no frontend uses them."""
    lb = c.lb(lb_uuid)
    used = {n for f in lb.frontends for n in f.certificates}
    lb.certificates[:] = [cert for cert in lb.certificates if cert.name in used or cert.name not in names]


def _tls(vals: dict, current: Certificate | None) -> tuple[str | None, str | None]:
    """The chain and key to use: given ones, "<REDACTED>" or absent = the current ones."""
    chain = vals.get("certificate.chain_pem", REDACTED)
    key = vals.get("certificate.key_pem", REDACTED)
    if chain == REDACTED:
        chain = current.chain_pem if current else None
    if key == REDACTED:
        key = current.key_pem if current else None
    return chain or None, key or None


def apply_config(c: Change, lb_uuid: str, vals: dict, frontend_uuid: str | None = None,
                 nodes: list | None = None) -> Frontend:
    """Create (frontend_uuid None) or update a config: its frontend, its backend, its
    certificate; then, if `nodes` is given, make them the backend's server set."""
    lb = c.lb(lb_uuid)
    front = split_attrs(vals, "frontend")
    back = split_attrs(vals, "backend")
    old_f = c.frontend(lb_uuid, frontend_uuid) if frontend_uuid else None
    old_b = backend_of(lb, old_f) if old_f else None
    port = front.get("port", old_f.port if old_f else 80)
    protocol = front.pop("protocol", None) or (frontend_protocol(lb, old_f) if old_f else Protocol.HTTP)
    current_cert = next((x for x in lb.certificates if old_f and x.name in old_f.certificates), None)

    name = old_f.name if old_f else _unique_name(lb, f"port-{port}")
    rename = (old_f is not None and port != old_f.port and old_f.name == old_b.name == f"port-{old_f.port}"
              and sum(f.backend == old_b.name for f in lb.frontends) == 1)
    if rename:          # keep the names telling the port
        name = _unique_name(lb, f"port-{port}", own={old_f.name})

    chain, key = _tls(vals, current_cert)
    cert_name = None
    if protocol == Protocol.HTTPS:
        if not chain:
            raise ApiError.bad_request("ssl_cert", "required with protocol https")
        if not key:
            raise ApiError.bad_request("ssl_key", "required with protocol https")
        cert_name = _certificate_name(lb, name, current_cert)
        front.update(protocol=Protocol.HTTPS, certificates=[cert_name])
        back["protocol"] = Protocol.HTTP
    else:
        for wire_name, attr in (("ssl_cert", "certificate.chain_pem"), ("ssl_key", "certificate.key_pem")):
            if vals.get(attr) not in (None, "", REDACTED):
                raise ApiError.bad_request(wire_name, "only with protocol https")
        front.update(protocol=None, certificates=[])
        back["protocol"] = protocol
    if "health_check" in back:
        base = old_b.health_check.model_dump() if old_b else {}
        back["health_check"] = base | back["health_check"]
    front["port"] = port

    if old_f is None:
        back.update(name=name)
        back.setdefault("forward_port", port)
        new_uuid(c.create_backend(lb_uuid, back))
        f = new_uuid(c.create_frontend(lb_uuid, {**front, "name": name, "backend": name}))
    else:
        if rename:
            back["name"] = front["name"] = name
        c.update_backend(lb_uuid, old_b.uuid, back)
        f = c.update_frontend(lb_uuid, old_f.uuid, front)
    if cert_name is not None:
        _set_certificate(c, lb_uuid, cert_name, chain, key)
    if current_cert is not None:
        _drop_unused_certificates(c, lb_uuid, {current_cert.name})
    if nodes is not None:
        set_nodes(c, lb_uuid, f, nodes)
    return f


def set_nodes(c: Change, lb_uuid: str, f: Frontend, nodes: list) -> None:
    """Linode's rebuild: nodes with an id are updated, without one created, the rest deleted."""
    lb = c.lb(lb_uuid)
    b = backend_of(lb, f)
    keep = {node_id for node_id, _ in nodes if node_id is not None}
    known = {s.id for s in b.servers}
    for i, (node_id, _) in enumerate(nodes):
        if node_id is not None and node_id not in known:
            raise ApiError.bad_request(f"nodes[{i}].id", f"no node {node_id} in this config")
    for s in list(b.servers):
        if s.id not in keep:
            c.delete_server(lb_uuid, b.uuid, s.uuid)
    for node_id, fields in nodes:
        if node_id is None:
            new_uuid(c.create_server(lb_uuid, b.uuid, fields))
        else:
            s = next(s for s in c.backend(lb_uuid, b.uuid).servers if s.id == node_id)
            c.update_server(lb_uuid, b.uuid, s.uuid, fields)


def delete_config(c: Change, lb_uuid: str, f: Frontend) -> None:
    c.delete_frontend(lb_uuid, f.uuid)
    lb = c.lb(lb_uuid)
    if not any(x.backend == f.backend for x in lb.frontends):
        c.delete_backend(lb_uuid, next(b.uuid for b in lb.backends if b.name == f.backend))
    _drop_unused_certificates(c, lb_uuid, set(f.certificates))


# -- handlers -------------------------------------------------------------------------------
def api(request: web.Request):
    return request.app["lbfast"]


def config_of(request: web.Request) -> Config:
    return api(request).daemon.config


async def check_tls(request: web.Request, vals: dict, current: Certificate | None = None) -> None:
    """A new ssl_cert/ssl_key pair is checked in the certificate worker, off the event loop;
    the edit's own check then finds the verdict."""
    chain, key = _tls(vals, current)
    if isinstance(chain, str) and isinstance(key, str):
        await api(request).certificates.check([(chain, key)])


@handler
async def list_nodebalancers(request):
    seen = Observed(api(request).daemon)
    return ok(linode_page(request, [nodebalancer(lb, seen) for lb in config_of(request).lbs]))


@handler
async def create_nodebalancer(request):
    body = await json_body(request)
    vals = NODEBALANCER.parse(body, create=True)
    raw_configs = vals.pop("configs", None) or []
    configs, problems = [], []
    for i, raw in enumerate(raw_configs):
        try:
            configs.append(config_fields(raw, create=True, prefix=f"configs[{i}]."))
        except ApiError as e:
            problems.extend(e.problems)
    if problems:
        raise ApiError(400, problems)
    for cfg, _ in configs:
        await check_tls(request, cfg)
    fields = split_attrs(vals, "lb")

    def edit(c: Change):
        if "name" not in fields:
            fields["name"] = f"balancer{max((x.id or 0 for x in c.config.lbs), default=0) + 1}"
            if any(x.name == fields["name"] for x in c.config.lbs):
                fields["name"] = f"balancer-{uuidlib.uuid4().hex[:8]}"
        lb = new_uuid(c.create_lb(fields))
        for cfg, nodes in configs:
            apply_config(c, lb.uuid, cfg, None, nodes)
        return lb.uuid

    return ok(await commit(api(request).daemon, edit,
                           lambda new, ref: nodebalancer(find_by_uuid(new, ref), Observed(api(request).daemon))))


def find_by_uuid(config: Config, ref: str) -> LoadBalancer:
    return next(lb for lb in config.lbs if lb.uuid == ref)


@handler
async def get_nodebalancer(request):
    lb = find_lb(config_of(request), request.match_info["nodeBalancerId"])
    return ok(nodebalancer(lb, Observed(api(request).daemon)))


@handler
async def update_nodebalancer(request):
    body = await json_body(request)
    vals = NODEBALANCER.parse(body, create=False, skip=("configs", "region"))
    raw = request.match_info["nodeBalancerId"]

    def edit(c: Change):
        lb = find_lb(c.config, raw)
        return c.update_lb(lb.uuid, split_attrs(vals, "lb")).uuid

    return ok(await commit(api(request).daemon, edit,
                           lambda new, ref: nodebalancer(find_by_uuid(new, ref), Observed(api(request).daemon))))


@handler
async def delete_nodebalancer(request):
    raw = request.match_info["nodeBalancerId"]

    def edit(c: Change):
        lb = find_lb(c.config, raw)
        c.delete_lb(lb.uuid)
        # Linode: deleting a NodeBalancer gives its addresses up
        c.config.ips[:] = [ip for ip in c.config.ips if ip.lb != lb.uuid]

    return ok(await commit(api(request).daemon, edit, lambda new, _: {}))


@handler
async def nodebalancer_stats(request):
    lb = find_lb(config_of(request), request.match_info["nodeBalancerId"])
    server = api(request)
    return ok({"title": f"{lb.name} ({lb.id}) - day ({server.history.interval:g} s avg)",
               "data": server.history.series(server.daemon, lb)})


@handler
async def list_configs(request):
    lb = find_lb(config_of(request), request.match_info["nodeBalancerId"])
    seen = Observed(api(request).daemon)
    return ok(linode_page(request, [config_view(lb, f, seen) for f in lb.frontends]))


def _render_config(request):
    def render(new: Config, ref: tuple[str, str]):
        lb = find_by_uuid(new, ref[0])
        f = next(f for f in lb.frontends if f.uuid == ref[1])
        return config_view(lb, f, Observed(api(request).daemon))
    return render


@handler
async def create_config(request):
    body = await json_body(request)
    vals, nodes = config_fields(body, create=True)
    raw = request.match_info["nodeBalancerId"]
    await check_tls(request, vals)

    def edit(c: Change):
        lb = find_lb(c.config, raw)
        f = apply_config(c, lb.uuid, vals, None, nodes)
        return lb.uuid, f.uuid

    return ok(await commit(api(request).daemon, edit, _render_config(request)))


@handler
async def get_config(request):
    lb, f, _ = find_config(config_of(request), request.match_info["nodeBalancerId"], request.match_info["configId"])
    return ok(config_view(lb, f, Observed(api(request).daemon)))


async def _update_config(request, *, rebuild: bool):
    body = await json_body(request)
    vals, nodes = config_fields(body, create=False)
    if not rebuild:
        nodes = None
    elif nodes is None:
        nodes = []          # rebuild: the request's nodes are the whole set
    raw_lb, raw = request.match_info["nodeBalancerId"], request.match_info["configId"]
    lb, f, _ = find_config(config_of(request), raw_lb, raw)
    await check_tls(request, vals, next((x for x in lb.certificates if x.name in f.certificates), None))

    def edit(c: Change):
        lb, f, _ = find_config(c.config, raw_lb, raw)
        new_f = apply_config(c, lb.uuid, vals, f.uuid, nodes)
        return lb.uuid, new_f.uuid

    return ok(await commit(api(request).daemon, edit, _render_config(request)))


@handler
async def update_config(request):
    return await _update_config(request, rebuild=False)


@handler
async def rebuild_config(request):
    return await _update_config(request, rebuild=True)


@handler
async def delete_config_handler(request):
    raw_lb, raw = request.match_info["nodeBalancerId"], request.match_info["configId"]

    def edit(c: Change):
        lb, f, _ = find_config(c.config, raw_lb, raw)
        delete_config(c, lb.uuid, f)

    return ok(await commit(api(request).daemon, edit, lambda new, _: {}))


@handler
async def list_nodes(request):
    lb, f, b = find_config(config_of(request), request.match_info["nodeBalancerId"], request.match_info["configId"])
    seen = Observed(api(request).daemon)
    return ok(linode_page(request, [node_view(lb, f, b, s, seen) for s in b.servers]))


def _render_node(request):
    def render(new: Config, ref: tuple[str, str, str]):
        lb = find_by_uuid(new, ref[0])
        f = next(f for f in lb.frontends if f.uuid == ref[1])
        b = backend_of(lb, f)
        s = next(s for s in b.servers if s.uuid == ref[2])
        return node_view(lb, f, b, s, Observed(api(request).daemon))
    return render


@handler
async def create_node(request):
    body = await json_body(request)
    fields = node_fields(body, create=True)
    raw_lb, raw = request.match_info["nodeBalancerId"], request.match_info["configId"]

    def edit(c: Change):
        lb, f, b = find_config(c.config, raw_lb, raw)
        s = new_uuid(c.create_server(lb.uuid, b.uuid, fields))
        return lb.uuid, f.uuid, s.uuid

    return ok(await commit(api(request).daemon, edit, _render_node(request)))


@handler
async def get_node(request):
    m = request.match_info
    lb, f, b, s = find_node(config_of(request), m["nodeBalancerId"], m["configId"], m["nodeId"])
    return ok(node_view(lb, f, b, s, Observed(api(request).daemon)))


@handler
async def update_node(request):
    body = await json_body(request)
    fields = node_fields(body, create=False)
    m = dict(request.match_info)

    def edit(c: Change):
        lb, f, b, s = find_node(c.config, m["nodeBalancerId"], m["configId"], m["nodeId"])
        if "address" in fields and "port" not in fields:
            fields["port"] = None
        new = c.update_server(lb.uuid, b.uuid, s.uuid, fields)
        return lb.uuid, f.uuid, new.uuid

    return ok(await commit(api(request).daemon, edit, _render_node(request)))


@handler
async def delete_node(request):
    m = dict(request.match_info)

    def edit(c: Change):
        lb, f, b, s = find_node(c.config, m["nodeBalancerId"], m["configId"], m["nodeId"])
        c.delete_server(lb.uuid, b.uuid, s.uuid)

    return ok(await commit(api(request).daemon, edit, lambda new, _: {}))


# -- the route table -------------------------------------------------------------------------
def _list_of(schema: dict) -> dict:
    return {"type": "object", "properties": {
        "data": {"type": "array", "items": schema}, "page": {"type": "integer"},
        "pages": {"type": "integer"}, "results": {"type": "integer"}}}


STATS = {"type": "object", "properties": {
    "title": {"type": "string"},
    "data": {"type": "object", "properties": {
        "connections": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        "traffic": {"type": "object", "properties": {
            d: {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
            for d in ("in", "out")}}}}}}
EMPTY = {"type": "object"}
ID = {"type": "integer", "minimum": 1}
PAGE = (Param("page", schema={"type": "integer", "minimum": 1}),
        Param("page_size", schema={"type": "integer", "minimum": 1, "maximum": 500}),
        Param("X-Filter", where="header", description="Linode filter JSON, e.g. {\"label\": \"web\"}"))
P_NB = Param("nodeBalancerId", "path", ID, required=True)
P_CFG = Param("configId", "path", ID, required=True)
P_NODE = Param("nodeId", "path", ID, required=True)

NB, CFGS, NODES = "/v4/nodebalancers", "/v4/nodebalancers/{nodeBalancerId}/configs", \
    "/v4/nodebalancers/{nodeBalancerId}/configs/{configId}/nodes"


def routes() -> list[Route]:
    nb, cfg, node = NODEBALANCER.schema(), CONFIG.schema(), NODE.schema()
    r = functools.partial(Route, dialect="linode")
    return [
        r("GET", NB, list_nodebalancers, "NodeBalancers List", operation="getNodeBalancers",
          response=_list_of(nb), params=PAGE),
        r("POST", NB, create_nodebalancer, "NodeBalancer Create", operation="createNodeBalancer",
          request=NODEBALANCER.schema(request=True, create=True), response=nb),
        r("GET", NB + "/{nodeBalancerId}", get_nodebalancer, "NodeBalancer View",
          operation="getNodeBalancer", response=nb, params=(P_NB,)),
        r("PUT", NB + "/{nodeBalancerId}", update_nodebalancer, "NodeBalancer Update",
          operation="updateNodeBalancer", request=NODEBALANCER.schema(request=True), response=nb,
          params=(P_NB,)),
        r("DELETE", NB + "/{nodeBalancerId}", delete_nodebalancer, "NodeBalancer Delete",
          operation="deleteNodeBalancer", response=EMPTY, params=(P_NB,)),
        r("GET", NB + "/{nodeBalancerId}/stats", nodebalancer_stats, "NodeBalancer Statistics View",
          operation="getNodeBalancerStats", response=STATS, params=(P_NB,)),
        r("GET", CFGS, list_configs, "Configs List", operation="getNodeBalancerConfigs",
          response=_list_of(cfg), params=(P_NB, *PAGE)),
        r("POST", CFGS, create_config, "Config Create", operation="createNodeBalancerConfig",
          request=CONFIG.schema(request=True, create=True), response=cfg, params=(P_NB,)),
        r("GET", CFGS + "/{configId}", get_config, "Config View", operation="getNodeBalancerConfig",
          response=cfg, params=(P_NB, P_CFG)),
        r("PUT", CFGS + "/{configId}", update_config, "Config Update", operation="updateNodeBalancerConfig",
          request=CONFIG.schema(request=True), response=cfg, params=(P_NB, P_CFG)),
        r("DELETE", CFGS + "/{configId}", delete_config_handler, "Config Delete",
          operation="deleteNodeBalancerConfig", response=EMPTY, params=(P_NB, P_CFG)),
        r("POST", CFGS + "/{configId}/rebuild", rebuild_config, "Config Rebuild",
          operation="rebuildNodeBalancerConfig", request=CONFIG.schema(request=True), response=cfg,
          params=(P_NB, P_CFG)),
        r("GET", NODES, list_nodes, "Nodes List", operation="getNodeBalancerConfigNodes",
          response=_list_of(node), params=(P_NB, P_CFG, *PAGE)),
        r("POST", NODES, create_node, "Node Create", operation="createNodeBalancerNode",
          request=NODE.schema(request=True, create=True), response=node, params=(P_NB, P_CFG)),
        r("GET", NODES + "/{nodeId}", get_node, "Node View", operation="getNodeBalancerNode",
          response=node, params=(P_NB, P_CFG, P_NODE)),
        r("PUT", NODES + "/{nodeId}", update_node, "Node Update", operation="updateNodeBalancerNode",
          request=NODE.schema(request=True), response=node, params=(P_NB, P_CFG, P_NODE)),
        r("DELETE", NODES + "/{nodeId}", delete_node, "Node Delete", operation="deleteNodeBalancerNode",
          response=EMPTY, params=(P_NB, P_CFG, P_NODE)),
    ]


def error_body(status: int, problems: list[tuple[str | None, str]], resource=None, resource_id=None) -> dict:
    """{"errors": [{"reason", "field"}]}: every entry has a reason, field on 400s."""
    out = []
    for field, message in problems:
        entry = {"reason": message if status != 404 else "Not found"}
        if field:
            entry["field"] = field
        out.append(entry)
    return {"errors": out}
