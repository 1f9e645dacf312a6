"""The Scaleway Load Balancer v1 dialect, under /lb/v1/regions/{region}/... and the zoned
/lb/v1/zones/{zone}/... paths of current tooling. Objects carry their model UUIDs; a
backend's `pool` is its servers' addresses on its forward_port; each load balancer holds
one IP object for its VIP (kept on delete unless release_ip) and shows one master
instance (lbfast runs one host per VIP)."""
import functools
import ipaddress
import re
import uuid as uuidlib

import orjson
from aiohttp import web

from control import certificates, grammar
from control.api import auth
from control.api import fields as wire
from control.api.changes import commit, validated
from control.api.errors import ApiError
from control.api.fields import Field, Table, format_duration, split_attrs
from control.api.observed import Observed
from control.api.routes import Param, Route
from control.api.views import bool_param, json_body, owner_matches, rfc3339, scaleway_page, tags_match
from control.config import ConfigError
from control.edit import Change, NotFound
from control.model import (ID_NAMESPACE, Backend, Certificate, Config, Frontend, HealthCheck, Ip, LoadBalancer,
                           new_uuid, now)
from lbfast.enums import Algorithm, CheckType, OnMarkedDown, Protocol, ProxyProtocol, Stickiness

# -- spellings: wire value → model value ----------------------------------------------------
FORWARD_PROTOCOLS = {"tcp": Protocol.TCP, "http": Protocol.HTTP}
ALGORITHMS = {"roundrobin": Algorithm.ROUNDROBIN, "leastconn": Algorithm.LEASTCONN,
              "first": Algorithm.FIRST, "source": Algorithm.SOURCE}      # source: lbfast's addition
STICKY = {"none": Stickiness.NONE, "cookie": Stickiness.COOKIE, "table": Stickiness.TABLE}
PROXY = {"proxy_protocol_unknown": None, "proxy_protocol_none": ProxyProtocol.NONE,
         "proxy_protocol_v1": ProxyProtocol.V1, "proxy_protocol_v2": ProxyProtocol.V2,
         # the SSL TLVs are not sent by lbfast's data planes: the model refuses these
         "proxy_protocol_v2_ssl": "v2_ssl", "proxy_protocol_v2_ssl_cn": "v2_ssl_cn"}
ON_MARKED_DOWN = {"on_marked_down_action_none": OnMarkedDown.NONE,
                  "shutdown_sessions": OnMarkedDown.SHUTDOWN_SESSIONS}
SSL_LEVELS = {s: s for s in ("ssl_compatibility_level_unknown", "ssl_compatibility_level_intermediate",
                             "ssl_compatibility_level_modern", "ssl_compatibility_level_old")}
CHECK_CONFIGS = {"tcp_config": CheckType.TCP, "http_config": CheckType.HTTP, "https_config": CheckType.HTTPS,
                 "mysql_config": CheckType.MYSQL, "pgsql_config": CheckType.PGSQL,
                 "redis_config": CheckType.REDIS, "ldap_config": CheckType.LDAP}
CHECK_SHOWN = {CheckType.HTTP_BODY: "http_config"}      # Linode's http_body shows as an HTTP check

# -- objects on the wire -------------------------------------------------------------------
RO = {"read_only": True}
DATES = [Field("created_at", **RO), Field("updated_at", **RO)]
LOCATION = [Field("region", **RO), Field("zone", **RO)]

IP = Table("Ip", [
    Field("id", **RO), Field("ip_address", **RO),
    Field("organization_id", "ip.organization_id"), Field("project_id", "ip.project_id"),
    Field("lb_id", "ip.lb", nullable=True, description="attach to this load balancer (update)"),
    Field("reverse", "ip.reverse"), Field("tags", "ip.tags", type="array"),
    Field("is_ipv6", type="boolean", write_only=True, description="create: an IPv6 address from ip_pool"),
    *LOCATION,
])
INSTANCE = {"type": "object", "properties": {
    k: {"type": "string", "nullable": k in ("created_at", "updated_at")}
    for k in ("id", "status", "ip_address", "region", "zone", "created_at", "updated_at")}}
LB = Table("Lb", [
    Field("id", **RO), Field("name", "lb.name"), Field("description", "lb.description"),
    Field("status", **RO), Field("instances", type="array", read_only=True,
                                 schema={"type": "array", "items": INSTANCE, "readOnly": True}),
    Field("organization_id", "lb.organization_id"), Field("project_id", "lb.project_id"),
    Field("ip", type="array", read_only=True, schema={"type": "array", "items": IP.schema(), "readOnly": True}),
    Field("ip_id", write_only=True, nullable=True, description="create: use this flexible IP"),
    Field("ip_ids", type="array", write_only=True, description="create: use this flexible IP (one)"),
    Field("assign_flexible_ip", type="boolean", write_only=True, ignored=True),
    Field("assign_flexible_ipv6", type="boolean", write_only=True, ignored=True),
    Field("tags", "lb.tags", type="array"),
    Field("frontend_count", type="integer", read_only=True), Field("backend_count", type="integer", read_only=True),
    Field("type", "lb.type"),
    Field("ssl_compatibility_level", spellings=SSL_LEVELS, ignored=True,
          description="accepted; lbfast sets cipher suites per frontend"),
    Field("private_network_count", type="integer", read_only=True),
    Field("route_count", type="integer", read_only=True),
    *LOCATION, *DATES,
])
HTTP_CONFIG = Table("HealthCheckHttpConfig", [
    Field("uri", "health_check.http_uri"), Field("method", "health_check.http_method"),
    Field("code", "health_check.http_code", type="integer", nullable=True),
    Field("host_header", "health_check.http_host"),
])
HTTPS_CONFIG = Table("HealthCheckHttpsConfig", [*HTTP_CONFIG, Field("sni", "health_check.sni")])
USER_CONFIG = Table("HealthCheckUserConfig", [Field("user", "health_check.user")])
EMPTY_CONFIG = {"type": "object", "nullable": True, "properties": {}}
CONFIG_TABLES = {"http_config": HTTP_CONFIG, "https_config": HTTPS_CONFIG,
                 "mysql_config": USER_CONFIG, "pgsql_config": USER_CONFIG}
HEALTH_CHECK = Table("HealthCheck", [
    Field("port", "health_check.port", type="integer"),
    Field("check_delay", "health_check.interval_ms", duration=True),
    Field("check_timeout", "health_check.timeout_ms", duration=True),
    Field("check_max_retries", "health_check.attempts", type="integer"),
    Field("check_send_proxy", "health_check.send_proxy", type="boolean"),
    Field("transient_check_delay", duration=True, nullable=True, ignored=True),
    *(Field(k, type="object", nullable=True, schema={
        **(CONFIG_TABLES[k].schema() if k in CONFIG_TABLES else EMPTY_CONFIG), "nullable": True})
      for k in CHECK_CONFIGS),
])
BACKEND = Table("Backend", [
    Field("id", **RO), Field("name", "backend.name"),
    Field("forward_protocol", "backend.protocol", spellings=FORWARD_PROTOCOLS, required=True),
    Field("forward_port", "backend.forward_port", type="integer", required=True),
    Field("forward_port_algorithm", "backend.algorithm", spellings=ALGORITHMS),
    Field("sticky_sessions", "backend.stickiness", spellings=STICKY),
    Field("sticky_sessions_cookie_name", "backend.sticky_cookie_name"),
    Field("health_check", type="object", schema=HEALTH_CHECK.schema(request=True)),
    Field("pool", type="array", read_only=True),
    Field("lb", type="object", read_only=True, schema={**LB.schema(), "readOnly": True}),
    Field("server_ip", type="array", write_only=True, description="create: the servers' addresses"),
    Field("send_proxy_v2", type="boolean", description="deprecated: proxy_protocol"),
    Field("proxy_protocol", "backend.proxy_protocol", spellings=PROXY),
    Field("timeout_server", "backend.timeout_server_ms", duration=True, nullable=True),
    Field("timeout_connect", "backend.timeout_connect_ms", duration=True, nullable=True),
    Field("timeout_tunnel", "backend.timeout_tunnel_ms", duration=True, nullable=True),
    Field("on_marked_down_action", "backend.on_marked_down_action", spellings=ON_MARKED_DOWN),
    Field("ssl_bridging", type="boolean", nullable=True, description="TLS to the servers (protocol https)"),
    Field("ignore_ssl_server_verify", type="boolean", nullable=True, ignored=True),
    Field("failover_host", nullable=True, ignored=True),
    Field("redispatch_attempt_count", type="integer", nullable=True, ignored=True, bounds=(0, 10)),
    Field("max_retries", "backend.retries", type="integer", nullable=True),
    Field("max_connections", "backend.max_connections", type="integer", nullable=True,
          description="open client connections per frontend; 0: no cap"),
    Field("timeout_queue", "backend.timeout_queue_ms", duration=True, nullable=True,
          description="a connection beyond max_connections waits this long, then 503 (http) or close"),
    *DATES,
])
CERTIFICATE = Table("Certificate", [
    Field("type", **RO), Field("id", **RO), Field("common_name", **RO),
    Field("subject_alternative_name", type="array", read_only=True), Field("fingerprint", **RO),
    Field("not_valid_before", **RO), Field("not_valid_after", **RO), Field("status", **RO),
    Field("status_details", read_only=True, nullable=True),
    Field("lb", type="object", read_only=True, schema={**LB.schema(), "readOnly": True}),
    Field("name", "certificate.name"),
    Field("custom_certificate", type="object", write_only=True, schema={
        "type": "object", "properties": {"certificate_chain": {
            "type": "string", "description": "PEM certificates and the private key"}}}),
    Field("letsencrypt", type="object", write_only=True, nullable=True, schema={
        "type": "object", "nullable": True, "description": "not available in lbfast",
        "properties": {"common_name": {"type": "string"},
                       "subject_alternative_name": {"type": "array", "items": {"type": "string"}}}}),
    *DATES,
])
FRONTEND = Table("Frontend", [
    Field("id", **RO), Field("name", "frontend.name"),
    Field("inbound_port", "frontend.port", type="integer", required=True),
    Field("backend", type="object", read_only=True, schema={**BACKEND.schema(), "readOnly": True}),
    Field("lb", type="object", read_only=True, schema={**LB.schema(), "readOnly": True}),
    Field("backend_id", "frontend.backend", write_only=True, required=True),
    Field("timeout_client", "frontend.timeout_client_ms", duration=True, nullable=True),
    Field("certificate", type="object", read_only=True, nullable=True,
          schema={**CERTIFICATE.schema(), "nullable": True, "readOnly": True}),
    Field("certificate_id", write_only=True, nullable=True, description="deprecated: certificate_ids"),
    Field("certificate_ids", "frontend.certificates", type="array"),
    Field("enable_http3", type="boolean", ignored=True),
    Field("enable_access_logs", "frontend.access_log", type="boolean"),
    Field("connection_rate_limit", type="integer", nullable=True, ignored=True, bounds=(0, 2**31 - 1)),
    *DATES,
])
SERVER_IPS = {"type": "object", "required": ["server_ip"], "properties": {
    "server_ip": {"type": "array", "items": {"type": "string", "format": "ipv4"}}}}
SERVER_STATS = {"type": "object", "properties": {
    "instance_id": {"type": "string"}, "backend_id": {"type": "string"}, "ip": {"type": "string"},
    "server_state": {"type": "string", "enum": ["stopped", "starting", "running", "stopping"]},
    "server_state_changed_at": {"type": "string", "nullable": True},
    "last_health_check_status": {"type": "string",
                                 "enum": ["unknown", "neutral", "failed", "passed", "condpass"]}}}
TABLES = {"lb": LB, "backend": BACKEND, "frontend": FRONTEND, "certificate": CERTIFICATE, "ip": IP}

ERROR_FIELDS = {
    "frontend.backend": "backend_id", "frontend.certificates": "certificate_ids",
    "server.address": "server_ip", "server": "server_ip", "backend.servers": "server_ip",
    "backend.protocol": "forward_protocol", "lb.vip": "ip_id", "certificate.chain_pem": "custom_certificate",
    "certificate.key_pem": "custom_certificate", "ip.address": "ip_address", "lb": "lb_id",
}


# -- errors ----------------------------------------------------------------------------------
def field_name(attr: str) -> str:
    if attr in ERROR_FIELDS:
        return ERROR_FIELDS[attr]
    kind, _, rest = attr.partition(".")
    if kind == "backend" and rest.startswith("health_check"):
        sub = rest.partition(".")[2]
        name = HEALTH_CHECK.wire_name(f"health_check.{sub}") if sub else None
        for key, table in CONFIG_TABLES.items() if name is None and sub else ():
            inner = table.wire_name(f"health_check.{sub}")
            if inner:
                name = f"{key}.{inner}"
                break
        return f"health_check.{name}" if name else "health_check"
    table = TABLES.get(kind)
    return (table.wire_name(attr) if table else None) or attr.rsplit(".", 1)[-1]


def translate(e: ConfigError) -> ApiError:
    problems = []
    for path, message in e.problems:
        attr = wire.model_field_path(path)
        problems.append((field_name(attr) if attr else (path.rsplit(".", 1)[-1] or None), message))
    return ApiError(400, problems)


def handler(fn):
    @functools.wraps(fn)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except ConfigError as e:
            raise translate(e) from None
        except certificates.CertificateError as e:
            raise ApiError.bad_request("custom_certificate", str(e)) from None
        except NotFound as e:
            raise ApiError.not_found(e.kind.replace("load balancer", "lb"), e.ref) from None
    return wrapped


def ok(body, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def no_content() -> web.Response:
    return web.Response(status=204)


def error_body(status: int, problems, resource=None, resource_id=None) -> dict:
    if status == 400:
        return {"message": "invalid argument(s)", "type": "invalid_arguments",
                "details": [{"argument_name": f or "body", "reason": "constraint", "help_message": m}
                            for f, m in problems]}
    if status == 401:
        # Scaleway's SDKs word these reasons: "API key does not exist" / "invalid ... or empty value"
        refused = problems[0][1] == auth.TOKEN_REFUSED
        return {"message": "authentication is denied", "type": "denied_authentication",
                "method": "api_key", "reason": "not_found" if refused else "invalid_argument"}
    if status == 403:
        return {"message": problems[0][1], "type": "permissions_denied", "details": []}
    if status == 404:
        return {"message": "resource is not found", "type": "not_found",
                "resource": resource or "resource", "resource_id": str(resource_id or "")}
    if status == 412:
        return {"message": problems[0][1], "type": "precondition_failed",
                "resource": resource or "resource", "resource_id": str(resource_id or "")}
    return {"message": "; ".join(m for _, m in problems) or "error", "type": "unknown_error"}


# -- the request's location, lookups -------------------------------------------------------------
def location(request: web.Request) -> tuple[str, str]:
    """(region, zone) as the request named them: objects are shown where they were asked for."""
    m = request.match_info
    if "zone" in m:
        zone = m["zone"]
        region = zone.rsplit("-", 1)[0] if re.search(r"-\d+$", zone) else zone
        return region, zone
    region = m.get("region", "local")
    return region, f"{region}-1"


def _find(items, kind: str, ref: str):
    for obj in items:
        if obj.uuid == ref:
            return obj
    raise ApiError.not_found(kind, ref)


def find_lb(config: Config, ref: str) -> LoadBalancer:
    return _find(config.lbs, "lb", ref)


def find_backend(config: Config, ref: str) -> tuple[LoadBalancer, Backend]:
    for lb in config.lbs:
        for b in lb.backends:
            if b.uuid == ref:
                return lb, b
    raise ApiError.not_found("backend", ref)


def find_frontend(config: Config, ref: str) -> tuple[LoadBalancer, Frontend]:
    for lb in config.lbs:
        for f in lb.frontends:
            if f.uuid == ref:
                return lb, f
    raise ApiError.not_found("frontend", ref)


def find_certificate(config: Config, ref: str) -> tuple[LoadBalancer, Certificate]:
    for lb in config.lbs:
        for c in lb.certificates:
            if c.uuid == ref:
                return lb, c
    raise ApiError.not_found("certificate", ref)


def find_ip(config: Config, ref: str) -> Ip:
    return _find(config.ips, "ip", ref)


# -- model → wire -------------------------------------------------------------------------
class View:
    """Renders objects for one request: its location and one snapshot of the counters."""

    def __init__(self, request: web.Request, config: Config):
        self.config = config
        self.region, self.zone = location(request)
        self._seen = None
        self._instances = None
        self.daemon = request.app["lbfast"].daemon

    @property
    def seen(self) -> Observed:
        if self._seen is None:
            self._seen = Observed(self.daemon)
        return self._seen

    def where(self) -> dict:
        return {"region": self.region, "zone": self.zone}

    def ip(self, ip: Ip) -> dict:
        return {"id": ip.uuid, "ip_address": ip.address, "organization_id": ip.organization_id,
                "project_id": ip.project_id, "lb_id": ip.lb, "reverse": ip.reverse,
                "tags": list(ip.tags), **self.where()}

    def instances(self, lb: LoadBalancer) -> list[dict]:
        """The LB hosts serving the VIP: the HA group's members when the daemon runs HA,
        else this host alone."""
        if self._instances is None:
            ha = getattr(self.daemon, "ha", None)
            try:
                found = ha.instances() if callable(getattr(ha, "instances", None)) else None
            except Exception:       # HA state is a view here: never the reason a GET fails
                found = None
            self._instances = [(i.get("id"), i.get("status", "unknown"), i.get("address"))
                               for i in found or () if isinstance(i, dict)]
        rows = self._instances or [(str(uuidlib.uuid5(ID_NAMESPACE, f"instance:{lb.uuid}")), "ready", None)]
        stamp = {"created_at": rfc3339(lb.created_at), "updated_at": rfc3339(lb.updated_at or lb.created_at)}
        return [{"id": i, "status": st, "ip_address": addr or lb.vip, **self.where(), **stamp}
                for i, st, addr in rows]

    def lb(self, lb: LoadBalancer) -> dict:
        instances = self.instances(lb)
        statuses = [i["status"] for i in instances]
        return {
            "id": lb.uuid, "name": lb.name, "description": lb.description,
            "status": "ready" if "ready" in statuses else statuses[0],
            "instances": instances,
            "organization_id": lb.organization_id, "project_id": lb.project_id,
            "ip": [self.ip(ip) for ip in self.config.ips if ip.lb == lb.uuid],
            "tags": list(lb.tags), "frontend_count": len(lb.frontends), "backend_count": len(lb.backends),
            "type": lb.type, "ssl_compatibility_level": "ssl_compatibility_level_intermediate",
            "private_network_count": 0, "route_count": 0, "subscriber": None, **self.where(),
            "created_at": rfc3339(lb.created_at), "updated_at": rfc3339(lb.updated_at or lb.created_at),
        }

    def health_check(self, b: Backend) -> dict:
        hc = b.health_check
        out = {"port": hc.port or b.forward_port, "check_delay": format_duration(hc.interval_ms),
               "check_timeout": format_duration(hc.timeout_ms), "check_max_retries": hc.attempts,
               "check_send_proxy": hc.send_proxy, "transient_check_delay": None}
        key = CHECK_SHOWN.get(hc.type) or next((k for k, t in CHECK_CONFIGS.items() if t == hc.type), None)
        for k in CHECK_CONFIGS:
            out[k] = None
        if key is not None:
            sub = {}
            for f in CONFIG_TABLES.get(key, ()):
                sub[f.wire] = getattr(hc, f.attr.split(".", 1)[1])
            out[key] = sub
        return out

    def backend(self, lb: LoadBalancer, b: Backend) -> dict:
        proxy = b.proxy_protocol
        return {
            "id": b.uuid, "name": b.name,
            "forward_protocol": "tcp" if b.protocol in (Protocol.TCP, Protocol.UDP) else "http",
            "forward_port": b.forward_port, "forward_port_algorithm": str(b.algorithm),
            "sticky_sessions": str(b.stickiness), "sticky_sessions_cookie_name": b.sticky_cookie_name,
            "health_check": self.health_check(b), "pool": [s.address for s in b.servers],
            "lb": self.lb(lb), "send_proxy_v2": proxy == ProxyProtocol.V2,
            "proxy_protocol": BACKEND["proxy_protocol"].show(proxy),
            "timeout_server": format_duration(b.timeout_server_ms),
            "timeout_connect": format_duration(b.timeout_connect_ms),
            "timeout_tunnel": format_duration(b.timeout_tunnel_ms),
            "on_marked_down_action": BACKEND["on_marked_down_action"].show(b.on_marked_down_action),
            "ssl_bridging": b.protocol == Protocol.HTTPS, "ignore_ssl_server_verify": False,
            "failover_host": None, "redispatch_attempt_count": 0, "max_retries": b.retries,
            "max_connections": b.max_connections, "timeout_queue": format_duration(b.timeout_queue_ms),
            "created_at": rfc3339(b.created_at), "updated_at": rfc3339(b.updated_at or b.created_at),
        }

    def certificate(self, lb: LoadBalancer, c: Certificate) -> dict:
        try:
            info = certificates.describe(c.chain_pem)
        except certificates.CertificateError as e:
            info, details = None, str(e)
        else:
            details = None
        return {
            # a certificate may name its host in SANs only: the first of them is the main name
            "type": "custom", "id": c.uuid,
            "common_name": (info.common_name or next(iter(info.names()), "")) if info else "",
            "subject_alternative_name": list(info.subject_alternative_names) if info else [],
            "fingerprint": info.fingerprint if info else "",
            "not_valid_before": rfc3339(info.not_valid_before) if info else None,
            "not_valid_after": rfc3339(info.not_valid_after) if info else None,
            "status": "ready" if info else "error", "status_details": details,
            "lb": self.lb(lb), "name": c.name,
            "created_at": rfc3339(c.created_at), "updated_at": rfc3339(c.created_at),
        }

    def frontend(self, lb: LoadBalancer, f: Frontend) -> dict:
        b = next(b for b in lb.backends if b.name == f.backend)
        certs = [c for name in f.certificates for c in lb.certificates if c.name == name]
        return {
            "id": f.uuid, "name": f.name, "inbound_port": f.port, "backend": self.backend(lb, b),
            "lb": self.lb(lb), "timeout_client": format_duration(f.timeout_client_ms),
            "certificate": self.certificate(lb, certs[0]) if certs else None,
            "certificate_ids": [c.uuid for c in certs], "enable_http3": False,
            "enable_access_logs": f.access_log, "connection_rate_limit": 0,
            "created_at": rfc3339(f.created_at), "updated_at": rfc3339(f.updated_at or f.created_at),
        }

    def server_stats(self, lb: LoadBalancer, b: Backend) -> list[dict]:
        instance = self.instances(lb)[0]["id"]
        out = []
        for s in b.servers:
            v = self.seen.server(b, s)
            state = {"UP": "running", "DOWN": "stopped"}.get(v.health, "starting")
            if not v.checked:
                check = "neutral"
            else:
                check = {"UP": "passed", "DOWN": "failed"}.get(v.health, "unknown")
            out.append({"instance_id": instance, "backend_id": b.uuid, "ip": s.address,
                        "server_state": state,
                        "server_state_changed_at": rfc3339(v.changed_at or getattr(self.daemon, "started_at", None)),
                        "last_health_check_status": check})
        return out


# -- wire → model -------------------------------------------------------------------------
def addresses(value, field: str = "server_ip") -> list[str]:
    if not isinstance(value, list):
        raise ApiError.bad_request(field, "must be an array of IP addresses")
    out, problems = [], []
    for i, raw in enumerate(value):
        try:
            addr = grammar.ip_address(raw) if isinstance(raw, str) else None
        except ValueError as e:
            problems.append((f"{field}[{i}]", str(e)))
            continue
        if addr is None:
            problems.append((f"{field}[{i}]", "must be an IP address"))
        elif addr not in out:
            out.append(addr)
    if problems:
        raise ApiError(400, problems)
    return out


def health_fields(body, current: HealthCheck | None, prefix: str = "health_check.") -> dict:
    """A Scaleway health_check object → the model's health check fields (a whole dict)."""
    if not isinstance(body, dict):
        raise ApiError.bad_request(prefix.rstrip("."), "must be an object")
    vals = HEALTH_CHECK.parse(body, create=False, prefix=prefix)
    given = [k for k in CHECK_CONFIGS if body.get(k) is not None]
    if len(given) > 1:
        raise ApiError.bad_request(prefix + given[1], "only one of " + ", ".join(CHECK_CONFIGS) + " may be set")
    out = current.model_dump() if current is not None else {}
    out |= split_attrs({k: v for k, v in vals.items() if k.startswith("health_check.")}, "health_check")
    if given:
        key = given[0]
        out["type"] = CHECK_CONFIGS[key]
        sub = body[key]
        if not isinstance(sub, dict):
            raise ApiError.bad_request(prefix + key, "must be an object")
        if key in CONFIG_TABLES:
            if sub.get("code") == 0:
                sub = {k: v for k, v in sub.items() if k != "code"} | {"code": None}
            subvals = CONFIG_TABLES[key].parse(sub, create=False, prefix=f"{prefix}{key}.")
            if subvals.get("health_check.http_uri") == "":
                del subvals["health_check.http_uri"]
            if subvals.get("health_check.http_method") == "":
                del subvals["health_check.http_method"]
            out |= split_attrs(subvals, "health_check")
    elif current is None:
        out["type"] = CheckType.TCP         # Scaleway backends always have a check: TCP by default
    return out


def backend_fields(body, current: Backend | None) -> tuple[dict, list[str] | None]:
    vals = BACKEND.parse(body, create=current is None, skip=("health_check", "server_ip"))
    fields = split_attrs(vals, "backend")
    if fields.get("sticky_cookie_name") == "":
        del fields["sticky_cookie_name"]          # sent when stickiness is not cookie
    if "proxy_protocol" in fields and fields["proxy_protocol"] is None:
        del fields["proxy_protocol"]              # proxy_protocol_unknown: not set
    if "proxy_protocol" not in fields and vals.get("send_proxy_v2") is not None:
        fields["proxy_protocol"] = ProxyProtocol.V2 if vals["send_proxy_v2"] else ProxyProtocol.NONE
    for k in ("timeout_server_ms", "timeout_connect_ms", "timeout_tunnel_ms", "retries", "max_connections"):
        if k in fields and fields[k] is None:
            del fields[k]
    protocol = fields.get("protocol", current.protocol if current else Protocol.TCP)
    if vals.get("ssl_bridging") and protocol == Protocol.HTTP:
        fields["protocol"] = Protocol.HTTPS
    elif vals.get("ssl_bridging") is False and protocol == Protocol.HTTPS:
        fields["protocol"] = Protocol.HTTP
    elif "protocol" in fields and current is not None and current.protocol == Protocol.HTTPS \
            and protocol == Protocol.HTTP and vals.get("ssl_bridging") is None:
        fields["protocol"] = Protocol.HTTPS       # forward_protocol http keeps an existing ssl_bridging
    if "health_check" in body:
        fields["health_check"] = health_fields(body["health_check"], current.health_check if current else None)
    elif current is None:
        fields["health_check"] = health_fields({}, None)
    servers = addresses(body["server_ip"]) if body.get("server_ip") is not None else None
    return fields, servers


def split_chain(pem: str) -> tuple[str, str]:
    """Scaleway's custom certificate_chain holds the certificates and the private key."""
    if len(pem) > 2 * certificates.MAX_PEM_BYTES:
        raise ApiError.bad_request("custom_certificate.certificate_chain",
                                   f"longer than {2 * certificates.MAX_PEM_BYTES} bytes")
    blocks = certificates.pem_blocks(pem)
    certs = [t for kind, t in blocks if kind == "CERTIFICATE"]
    keys = [t for kind, t in blocks if kind.endswith("PRIVATE KEY")]
    if not certs:
        raise ApiError.bad_request("custom_certificate.certificate_chain", "no PEM certificate found")
    if len(keys) != 1:
        raise ApiError.bad_request("custom_certificate.certificate_chain",
                                   "must hold exactly one PEM private key with the certificates")
    return "\n".join(certs) + "\n", keys[0] + "\n"


def set_servers(c: Change, lb_uuid: str, b_uuid: str, wanted: list[str]) -> None:
    """The backend's servers become `wanted`: servers already there stay as they are
    (weight, mode, counters), others come and go."""
    b = c.backend(lb_uuid, b_uuid)
    for s in list(b.servers):
        if s.address not in wanted:
            c.delete_server(lb_uuid, b_uuid, s.uuid or str(s.id))
    have = {s.address for s in c.backend(lb_uuid, b_uuid).servers}
    for addr in wanted:
        if addr not in have:
            new_uuid(c.create_server(lb_uuid, b_uuid, {"address": addr}))


def allocate_ip(config: Config, v6: bool) -> str:
    used = {lb.vip for lb in config.lbs if lb.vip} | {ip.address for ip in config.ips}
    for cidr in config.ip_pool:
        net = ipaddress.ip_network(cidr)
        if (net.version == 6) != v6:
            continue
        candidates = [net.network_address] if net.num_addresses == 1 else net.hosts()
        for n, addr in enumerate(candidates):
            if str(addr) not in used:
                return str(addr)
            if n > 1_000_000:
                break
    raise ApiError.conflict(f"ip_pool has no free IPv{6 if v6 else 4} address", "ip", None)


def owners(vals: dict, kind: str) -> dict:
    """Scaleway's default project has its organization's id: one given stands for both."""
    fields = split_attrs(vals, kind)
    org, project = fields.get("organization_id"), fields.get("project_id")
    if org and not project:
        fields["project_id"] = org
    elif project and not org:
        fields["organization_id"] = project
    return fields


# -- handlers: load balancers ---------------------------------------------------------------
def daemon_of(request):
    return request.app["lbfast"].daemon


def live(request) -> Config:
    return daemon_of(request).config


async def run(request, edit, render):
    return await commit(daemon_of(request), edit, lambda new, ref: render(View(request, new), new, ref))


@handler
async def list_lbs(request):
    view = View(request, live(request))
    rows = [view.lb(lb) for lb in view.config.lbs
            if owner_matches(lb, request) and tags_match(lb.tags, request)]
    return ok(scaleway_page(request, rows, "lbs"))


@handler
async def create_lb(request):
    body = await json_body(request)
    vals = LB.parse(body, create=True)
    fields = owners(vals, "lb")
    ip_ref = vals.get("ip_id") or (vals.get("ip_ids") or [None])[0]
    region, zone = location(request)
    fields.setdefault("region", zone if "zone" in request.match_info else region)

    def edit(c: Change):
        if "name" not in fields:
            fields["name"] = f"lb-{uuidlib.uuid4().hex[:8]}"
        if ip_ref is not None:
            try:
                ip = find_ip(c.config, ip_ref)
            except ApiError:
                raise ApiError.bad_request("ip_id", f"no IP {ip_ref}") from None
            if ip.lb is not None:
                raise ApiError.bad_request("ip_id", f"IP {ip.address} is used by another load balancer")
            fields["vip"] = ip.address
        return new_uuid(c.create_lb(fields)).uuid

    return ok(await run(request, edit, lambda v, new, ref: v.lb(find_lb(new, ref))))


@handler
async def get_lb(request):
    view = View(request, live(request))
    return ok(view.lb(find_lb(view.config, request.match_info["lb_id"])))


@handler
async def update_lb(request):
    body = await json_body(request)
    vals = LB.parse(body, create=False, skip=("ip_id", "ip_ids"))
    fields = split_attrs(vals, "lb")
    ref = request.match_info["lb_id"]

    def edit(c: Change):
        find_lb(c.config, ref)
        return c.update_lb(ref, fields).uuid

    return ok(await run(request, edit, lambda v, new, r: v.lb(find_lb(new, r))))


async def _optional_body(request) -> dict:
    try:
        return await json_body(request, required=False)
    except ApiError:
        return {}


@handler
async def delete_lb(request):
    ref = request.match_info["lb_id"]
    release = bool_param(request, "release_ip", False)
    if "release_ip" not in request.query:           # the seed's tutorial sends it in the body
        release = (await _optional_body(request)).get("release_ip") is True

    def edit(c: Change):
        find_lb(c.config, ref)
        c.delete_lb(ref)
        if release:
            c.config.ips[:] = [ip for ip in c.config.ips if ip.lb != ref]

    await run(request, edit, lambda v, new, r: None)
    return no_content()


@handler
async def lb_backend_stats(request):
    view = View(request, live(request))
    lb = find_lb(view.config, request.match_info["lb_id"])
    only = request.query.get("backend_id")
    rows = [row for b in lb.backends if not only or b.uuid == only for row in view.server_stats(lb, b)]
    page = scaleway_page(request, rows, "backend_servers_stats", ordered=False, by_name=False)
    return ok(page)


@handler
async def list_lb_types(request):
    region, zone = location(request)
    types = [{"name": "LB-S", "stock_status": "available", "description": "lbfast load balancer",
              "bandwidth": 0, "multicloud": True, "region": region, "zone": zone}]
    return ok(scaleway_page(request, types, "lb_types", ordered=False, by_name=False))


# -- handlers: IPs --------------------------------------------------------------------------
@handler
async def list_ips(request):
    view = View(request, live(request))
    want = request.query.get("ip_address")
    family = request.query.get("ip_type", "all")
    if family not in ("all", "ipv4", "ipv6"):
        raise ApiError.bad_request("ip_type", "must be one of all, ipv4, ipv6")
    rows = [view.ip(ip) for ip in view.config.ips
            if owner_matches(ip, request) and tags_match(ip.tags, request)
            and (not want or ip.address == want)
            and (family == "all" or (":" in ip.address) == (family == "ipv6"))]
    return ok(scaleway_page(request, rows, "ips", ordered=False, by_name=False))


@handler
async def create_ip(request):
    body = await json_body(request, required=False)
    vals = IP.parse(body, create=True, skip=("lb_id",))
    fields = owners(vals, "ip")
    v6 = vals.get("is_ipv6") is True

    def edit(c: Change):
        at = f"ips[{len(c.config.ips)}]."
        ip = new_uuid(validated(Ip, {"address": allocate_ip(c.config, v6), "created_at": now(), **fields}, at))
        c.config.ips.append(ip)
        return ip.uuid

    return ok(await run(request, edit, lambda v, new, ref: v.ip(find_ip(new, ref))))


@handler
async def get_ip(request):
    view = View(request, live(request))
    return ok(view.ip(find_ip(view.config, request.match_info["ip_id"])))


@handler
async def update_ip(request):
    body = await json_body(request)
    vals = IP.parse(body, create=False, skip=("is_ipv6", "organization_id", "project_id"))
    ref = request.match_info["ip_id"]

    def edit(c: Change):
        ip = find_ip(c.config, ref)
        i = c.config.ips.index(ip)
        fields = split_attrs(vals, "ip")
        attach = fields.pop("lb", ip.lb)
        c.config.ips[i] = ip = validated(Ip, ip.model_dump() | fields, f"ips[{i}].")
        if attach != ip.lb:
            if attach is None:
                raise ApiError.bad_request("lb_id", "an IP leaves a load balancer when the load balancer "
                                                    "takes another IP or is deleted")
            try:
                lb = find_lb(c.config, attach)
            except ApiError:
                raise ApiError.bad_request("lb_id", f"no load balancer {attach}") from None
            if ip.lb is not None:
                raise ApiError.bad_request("lb_id", f"IP {ip.address} is used by another load balancer")
            c.update_lb(lb.uuid, {"vip": ip.address})
            ip.lb = lb.uuid
        return ip.uuid

    return ok(await run(request, edit, lambda v, new, r: v.ip(find_ip(new, r))))


@handler
async def release_ip(request):
    ref = request.match_info["ip_id"]

    def edit(c: Change):
        ip = find_ip(c.config, ref)
        if ip.lb is not None:
            raise ApiError.conflict(f"IP {ip.address} is used by load balancer {ip.lb}", "ip", ref)
        c.config.ips.remove(ip)

    await run(request, edit, lambda v, new, r: None)
    return no_content()


# -- handlers: backends and their servers and health check ------------------------------------
@handler
async def list_backends(request):
    view = View(request, live(request))
    lb = find_lb(view.config, request.match_info["lb_id"])
    return ok(scaleway_page(request, [view.backend(lb, b) for b in lb.backends], "backends"))


def _render_backend(v: View, new: Config, ref: str):
    return v.backend(*find_backend(new, ref))


@handler
async def create_backend(request):
    body = await json_body(request)
    fields, servers = backend_fields(body, None)
    ref = request.match_info["lb_id"]

    def edit(c: Change):
        lb = find_lb(c.config, ref)
        if "name" not in fields:
            taken = {b.name for b in lb.backends}
            fields["name"] = next(f"backend-{n}" for n in range(1, len(taken) + 2) if f"backend-{n}" not in taken)
        b = new_uuid(c.create_backend(ref, fields))
        set_servers(c, ref, b.uuid, servers or [])
        return b.uuid

    return ok(await run(request, edit, _render_backend))


@handler
async def get_backend(request):
    view = View(request, live(request))
    return ok(view.backend(*find_backend(view.config, request.match_info["backend_id"])))


@handler
async def update_backend(request):
    body = await json_body(request)
    ref = request.match_info["backend_id"]
    # update_backend sends neither server_ip nor health_check: both stay as they are
    body = {k: v for k, v in body.items() if k not in ("server_ip", "health_check")}

    def edit(c: Change):
        lb, b = find_backend(c.config, ref)
        fields, _ = backend_fields(body, b)
        return c.update_backend(lb.uuid, ref, fields).uuid

    return ok(await run(request, edit, _render_backend))


@handler
async def delete_backend(request):
    ref = request.match_info["backend_id"]

    def edit(c: Change):
        lb, b = find_backend(c.config, ref)
        users = [f.name for f in lb.frontends if f.backend == b.name]
        if users:
            raise ApiError.conflict(f"backend {b.name} is used by frontend(s) {', '.join(users)}", "backend", ref)
        c.delete_backend(lb.uuid, ref)

    await run(request, edit, lambda v, new, r: None)
    return no_content()


def _servers_handler(mode: str):
    @handler
    async def servers(request):
        body = await json_body(request)
        wanted = addresses(body.get("server_ip"))
        ref = request.match_info["backend_id"]

        def edit(c: Change):
            lb, b = find_backend(c.config, ref)
            have = [s.address for s in b.servers]
            if mode == "set":
                target = wanted
            elif mode == "add":
                target = have + [a for a in wanted if a not in have]
            else:
                target = [a for a in have if a not in wanted]
            set_servers(c, lb.uuid, ref, target)
            return ref

        return ok(await run(request, edit, _render_backend))
    servers.__name__ = f"{mode}_backend_servers"
    return servers


set_backend_servers = _servers_handler("set")
add_backend_servers = _servers_handler("add")
remove_backend_servers = _servers_handler("remove")


@handler
async def update_health_check(request):
    body = await json_body(request)
    ref = request.match_info["backend_id"]

    def edit(c: Change):
        lb, b = find_backend(c.config, ref)
        hc = health_fields(body, b.health_check, prefix="")
        return c.update_backend(lb.uuid, ref, {"health_check": hc}).uuid

    try:
        return ok(await run(request, edit, lambda v, new, r: v.health_check(find_backend(new, r)[1])))
    except ConfigError as e:        # the body is the health check: its fields go without the prefix
        err = translate(e)
        err.problems = [((f or "").removeprefix("health_check.") or None, m) for f, m in err.problems]
        raise err from None


# -- handlers: frontends ------------------------------------------------------------------------
def frontend_fields(c: Change, lb: LoadBalancer, vals: dict) -> dict:
    fields = split_attrs(vals, "frontend")
    if fields.get("timeout_client_ms", 0) is None:
        del fields["timeout_client_ms"]
    if "backend" in fields:
        b = next((b for b in lb.backends if b.uuid == fields["backend"]), None)
        if b is None:
            raise ApiError.bad_request("backend_id", f"no backend {fields['backend']} in this load balancer")
        fields["backend"] = b.name
    ids = fields.pop("certificates", None)
    if ids is None and vals.get("certificate_id"):
        ids = [vals["certificate_id"]]
    if ids is not None:
        names = []
        for i, cid in enumerate(ids):
            cert = next((x for x in lb.certificates if x.uuid == cid), None)
            if cert is None:
                raise ApiError.bad_request(f"certificate_ids[{i}]", f"no certificate {cid} in this load balancer")
            names.append(cert.name)
        fields["certificates"] = names
    return fields


@handler
async def list_frontends(request):
    view = View(request, live(request))
    lb = find_lb(view.config, request.match_info["lb_id"])
    return ok(scaleway_page(request, [view.frontend(lb, f) for f in lb.frontends], "frontends"))


def _render_frontend(v: View, new: Config, ref: str):
    return v.frontend(*find_frontend(new, ref))


@handler
async def create_frontend(request):
    body = await json_body(request)
    vals = FRONTEND.parse(body, create=True)
    ref = request.match_info["lb_id"]

    def edit(c: Change):
        lb = find_lb(c.config, ref)
        fields = frontend_fields(c, lb, vals)
        if "name" not in fields:
            taken = {f.name for f in lb.frontends}
            fields["name"] = next(n for n in (f"frontend-{fields['port']}", *(f"frontend-{fields['port']}-{i}"
                                                                            for i in range(2, 1000)))
                                  if n not in taken)
        return new_uuid(c.create_frontend(ref, fields)).uuid

    return ok(await run(request, edit, _render_frontend))


@handler
async def get_frontend(request):
    view = View(request, live(request))
    return ok(view.frontend(*find_frontend(view.config, request.match_info["frontend_id"])))


@handler
async def update_frontend(request):
    body = await json_body(request)
    vals = FRONTEND.parse(body, create=False)
    ref = request.match_info["frontend_id"]

    def edit(c: Change):
        lb, f = find_frontend(c.config, ref)
        return c.update_frontend(lb.uuid, ref, frontend_fields(c, lb, vals)).uuid

    return ok(await run(request, edit, _render_frontend))


@handler
async def delete_frontend(request):
    ref = request.match_info["frontend_id"]

    def edit(c: Change):
        lb, f = find_frontend(c.config, ref)
        c.delete_frontend(lb.uuid, ref)

    await run(request, edit, lambda v, new, r: None)
    return no_content()


# -- handlers: certificates ------------------------------------------------------------------
@handler
async def list_certificates(request):
    view = View(request, live(request))
    lb = find_lb(view.config, request.match_info["lb_id"])
    return ok(scaleway_page(request, [view.certificate(lb, x) for x in lb.certificates], "certificates"))


def _render_certificate(v: View, new: Config, ref: str):
    return v.certificate(*find_certificate(new, ref))


@handler
async def create_certificate(request):
    body = await json_body(request)
    vals = CERTIFICATE.parse(body, create=True)
    if vals.get("letsencrypt") is not None:
        raise ApiError.bad_request("letsencrypt", "Let's Encrypt is not available: send custom_certificate")
    custom = vals.get("custom_certificate")
    if not isinstance(custom, dict) or not isinstance(custom.get("certificate_chain"), str):
        raise ApiError.bad_request("custom_certificate.certificate_chain", "required")
    chain, key = split_chain(custom["certificate_chain"])
    await request.app["lbfast"].certificates.check([(chain, key)])    # off the event loop
    ref = request.match_info["lb_id"]

    def edit(c: Change):
        lb = c.lb(find_lb(c.config, ref).uuid)
        name = vals.get("certificate.name") or f"certificate-{uuidlib.uuid4().hex[:8]}"
        if any(x.name == name for x in lb.certificates):
            raise ApiError.bad_request("name", f"a certificate named {name!r} exists in this load balancer")
        at = f"{c.path(lb)}certificates[{len(lb.certificates)}]."
        cert = new_uuid(validated(Certificate, {"name": name, "chain_pem": chain, "key_pem": key,
                                                "created_at": now()}, at))
        lb.certificates.append(cert)
        return cert.uuid

    return ok(await run(request, edit, _render_certificate))


@handler
async def get_certificate(request):
    view = View(request, live(request))
    return ok(view.certificate(*find_certificate(view.config, request.match_info["certificate_id"])))


@handler
async def update_certificate(request):
    body = await json_body(request)
    vals = CERTIFICATE.parse(body, create=False, skip=("custom_certificate", "letsencrypt"))
    ref = request.match_info["certificate_id"]

    def edit(c: Change):
        lb, cert = find_certificate(c.config, ref)
        name = vals.get("certificate.name", cert.name)
        if name != cert.name:
            if any(x.name == name for x in lb.certificates):
                raise ApiError.bad_request("name", f"a certificate named {name!r} exists in this load balancer")
            i = lb.certificates.index(cert)
            lb.certificates[i] = validated(Certificate, cert.model_dump() | {"name": name},
                                           f"{c.path(lb)}certificates[{i}].")
            for f in lb.frontends:       # frontends name their certificates
                if cert.name in f.certificates:
                    f.certificates = [name if n == cert.name else n for n in f.certificates]
        return ref

    return ok(await run(request, edit, _render_certificate))


@handler
async def delete_certificate(request):
    ref = request.match_info["certificate_id"]

    def edit(c: Change):
        lb, cert = find_certificate(c.config, ref)
        users = [f.name for f in lb.frontends if cert.name in f.certificates]
        if users:
            raise ApiError.conflict(f"certificate {cert.name} is used by frontend(s) {', '.join(users)}",
                                    "certificate", ref)
        lb.certificates.remove(cert)

    await run(request, edit, lambda v, new, r: None)
    return no_content()


# -- the route table -------------------------------------------------------------------------
def _list_of(key: str, schema: dict) -> dict:
    return {"type": "object", "properties": {key: {"type": "array", "items": schema},
                                              "total_count": {"type": "integer"}}}


UUID = {"type": "string", "format": "uuid"}
LIST = (Param("page", schema={"type": "integer", "minimum": 1}),
        Param("page_size", schema={"type": "integer", "minimum": 1, "maximum": 100}),
        Param("order_by", schema={"type": "string", "enum": ["created_at_asc", "created_at_desc",
                                                             "name_asc", "name_desc"]}),
        Param("name"))
OWNER = (Param("organization_id"), Param("project_id"),
         Param("tags", schema={"type": "array", "items": {"type": "string"}}))
PAGE = LIST[:2]
P_LB, P_BACKEND, P_FRONTEND, P_CERT, P_IP = (Param(n, "path", UUID, required=True) for n in (
    "lb_id", "backend_id", "frontend_id", "certificate_id", "ip_id"))


def _operations() -> list[tuple]:
    """(method, path below the location, handler, summary, operation, request, response, status, params)."""
    lb, backend, frontend = LB.schema(), BACKEND.schema(), FRONTEND.schema()
    cert, ip, hc = CERTIFICATE.schema(), IP.schema(), HEALTH_CHECK.schema()
    stats = _list_of("backend_servers_stats", SERVER_STATS)
    return [
        ("GET", "/lbs", list_lbs, "List load balancers", "ListLbs", None, _list_of("lbs", lb), 200, LIST + OWNER),
        ("POST", "/lbs", create_lb, "Create a load balancer", "CreateLb", LB.schema(request=True), lb, 200, ()),
        ("GET", "/lbs/{lb_id}", get_lb, "Get a load balancer", "GetLb", None, lb, 200, (P_LB,)),
        ("PUT", "/lbs/{lb_id}", update_lb, "Update a load balancer", "UpdateLb", LB.schema(request=True), lb,
         200, (P_LB,)),
        ("DELETE", "/lbs/{lb_id}", delete_lb, "Delete a load balancer", "DeleteLb", None, None, 204,
         (P_LB, Param("release_ip", schema={"type": "boolean"}))),
        ("GET", "/lbs/{lb_id}/backend-stats", lb_backend_stats, "Backend server health", "ListBackendStats",
         None, stats, 200, (P_LB, Param("backend_id", schema=UUID), *PAGE)),
        ("GET", "/lbs/{lb_id}/stats", lb_backend_stats, "Backend server health (deprecated path)", "GetLbStats",
         None, stats, 200, (P_LB, Param("backend_id", schema=UUID), *PAGE)),
        ("GET", "/lb-types", list_lb_types, "List load balancer types", "ListLbTypes", None,
         _list_of("lb_types", {"type": "object"}), 200, PAGE),
        ("GET", "/ips", list_ips, "List IPs", "ListIPs", None, _list_of("ips", ip), 200,
         (*PAGE, Param("ip_address"), Param("ip_type", schema={"type": "string", "enum": ["all", "ipv4", "ipv6"]}),
          *OWNER)),
        ("POST", "/ips", create_ip, "Create an IP", "CreateIp", IP.schema(request=True), ip, 200, ()),
        ("GET", "/ips/{ip_id}", get_ip, "Get an IP", "GetIp", None, ip, 200, (P_IP,)),
        ("PATCH", "/ips/{ip_id}", update_ip, "Update an IP", "UpdateIp", IP.schema(request=True), ip, 200, (P_IP,)),
        ("DELETE", "/ips/{ip_id}", release_ip, "Release an IP", "ReleaseIp", None, None, 204, (P_IP,)),
        ("GET", "/lbs/{lb_id}/backends", list_backends, "List backends", "ListBackends", None,
         _list_of("backends", backend), 200, (P_LB, *LIST)),
        ("POST", "/lbs/{lb_id}/backends", create_backend, "Create a backend", "CreateBackend",
         BACKEND.schema(request=True, create=True), backend, 200, (P_LB,)),
        ("GET", "/backends/{backend_id}", get_backend, "Get a backend", "GetBackend", None, backend, 200,
         (P_BACKEND,)),
        ("PUT", "/backends/{backend_id}", update_backend, "Update a backend", "UpdateBackend",
         BACKEND.schema(request=True), backend, 200, (P_BACKEND,)),
        ("DELETE", "/backends/{backend_id}", delete_backend, "Delete a backend", "DeleteBackend", None, None,
         204, (P_BACKEND,)),
        ("PUT", "/backends/{backend_id}/servers", set_backend_servers, "Set the backend's servers",
         "SetBackendServers", SERVER_IPS, backend, 200, (P_BACKEND,)),
        ("POST", "/backends/{backend_id}/servers", add_backend_servers, "Add servers to a backend",
         "AddBackendServers", SERVER_IPS, backend, 200, (P_BACKEND,)),
        ("DELETE", "/backends/{backend_id}/servers", remove_backend_servers, "Remove servers from a backend",
         "RemoveBackendServers", SERVER_IPS, backend, 200, (P_BACKEND,)),
        ("PUT", "/backends/{backend_id}/healthcheck", update_health_check, "Update the backend's health check",
         "UpdateHealthCheck", HEALTH_CHECK.schema(request=True), hc, 200, (P_BACKEND,)),
        ("GET", "/lbs/{lb_id}/frontends", list_frontends, "List frontends", "ListFrontends", None,
         _list_of("frontends", frontend), 200, (P_LB, *LIST)),
        ("POST", "/lbs/{lb_id}/frontends", create_frontend, "Create a frontend", "CreateFrontend",
         FRONTEND.schema(request=True, create=True), frontend, 200, (P_LB,)),
        ("GET", "/frontends/{frontend_id}", get_frontend, "Get a frontend", "GetFrontend", None, frontend, 200,
         (P_FRONTEND,)),
        ("PUT", "/frontends/{frontend_id}", update_frontend, "Update a frontend", "UpdateFrontend",
         FRONTEND.schema(request=True), frontend, 200, (P_FRONTEND,)),
        ("DELETE", "/frontends/{frontend_id}", delete_frontend, "Delete a frontend", "DeleteFrontend", None,
         None, 204, (P_FRONTEND,)),
        ("GET", "/lbs/{lb_id}/certificates", list_certificates, "List certificates", "ListCertificates", None,
         _list_of("certificates", cert), 200, (P_LB, *LIST)),
        ("POST", "/lbs/{lb_id}/certificates", create_certificate, "Create a certificate", "CreateCertificate",
         CERTIFICATE.schema(request=True), cert, 200, (P_LB,)),
        ("GET", "/certificates/{certificate_id}", get_certificate, "Get a certificate", "GetCertificate", None,
         cert, 200, (P_CERT,)),
        ("PUT", "/certificates/{certificate_id}", update_certificate, "Update a certificate", "UpdateCertificate",
         CERTIFICATE.schema(request=True), cert, 200, (P_CERT,)),
        ("DELETE", "/certificates/{certificate_id}", delete_certificate, "Delete a certificate",
         "DeleteCertificate", None, None, 204, (P_CERT,)),
    ]


LOCATIONS = (("/lb/v1/regions/{region}", Param("region", "path", {"type": "string", "example": "fr-par"},
                                                required=True), "Region"),
             ("/lb/v1/zones/{zone}", Param("zone", "path", {"type": "string", "example": "fr-par-1"},
                                           required=True), "Zoned"))


def routes() -> list[Route]:
    out = []
    for prefix, where, label in LOCATIONS:
        for method, path, fn, summary, op, request, response, status, params in _operations():
            out.append(Route(method, prefix + path, fn, summary, "scaleway", f"{label}{op}", request=request,
                             response=response, status=status, params=(where, *params),
                             request_required=op not in ("CreateIp",)))
    return out
