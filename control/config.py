"""The config file: JSON read and written with orjson, validated into the model, with
every error naming the field path; saved atomically (mode 0600: it holds private keys)."""
import ipaddress
import os
import secrets
import tempfile
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path

import orjson
from pydantic import ValidationError

from control.certificates import CertificateError, check as check_certificate
from control.model import ID_NAMESPACE, Config, Ip, LoadBalancer, now
from lbfast.enums import Protocol, Stickiness


class ConfigError(ValueError):
    """A config (file or API request) that cannot be applied; `problems` are
    (field path, message) pairs such as ("lbs[0].backends[1].servers[2].weight", "must be 1..255")."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"{path}: {msg}" if path else msg for path, msg in problems))


def field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in part or "(" in part or part in ("int", "str", "none", "function-after"):
            continue    # pydantic's names for union members and validators, not fields
        else:
            out += f".{part}" if out else part
    return out


def error_message(err: dict) -> str:
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "required"
    return msg[:1].lower() + msg[1:]


def strip_comments(node):
    """JSON has no comments: keys starting with '#' are comments, at any level. Files that
    lbfast itself rewrites (API, CLI edits) do not keep them."""
    if isinstance(node, dict):
        return {k: strip_comments(v) for k, v in node.items() if not k.startswith("#")}
    if isinstance(node, list):
        return [strip_comments(v) for v in node]
    return node


def parse(data: bytes | str | dict) -> Config:
    """Validate raw JSON (or an already-decoded dict) into a complete Config: ids and
    VIPs assigned, cross-references checked. Raises ConfigError."""
    if not isinstance(data, dict):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise ConfigError([("", f"not valid JSON: {e}")]) from None
        if not isinstance(data, dict):
            raise ConfigError([("", "the top level must be a JSON object")])
    try:
        config = Config.model_validate(strip_comments(data))
    except ValidationError as e:
        raise ConfigError([(field_path(err["loc"]), error_message(err)) for err in e.errors()]) from None
    finish(config)
    return config


def finish(config: Config) -> None:
    """Assign what a config may leave out, then check what spans objects."""
    assign_ids(config)
    assign_vips(config)
    link_ips(config)
    assign_ids(config)      # IP objects made by link_ips
    problems = list(cross_check(config))
    if problems:
        raise ConfigError(problems)


def load(path: str | os.PathLike) -> Config:
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError([("", f"cannot read {path}: {e.strerror}")]) from None
    return parse(raw)


def dump(config: Config) -> bytes:
    doc = config.model_dump(mode="json", exclude_none=True)
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n"


REDACTED = "<REDACTED>"         # what people and API clients see of a secret (Linode's word)
SECRETS = frozenset({"key_pem", "token", "auth_pass", "cookie_secret"})


def redact(node):
    """A dumped config or object with every secret's value replaced by REDACTED: what any
    output (CLI, API views) may show. Only the file and the data planes get the secrets."""
    if isinstance(node, dict):
        return {k: REDACTED if k in SECRETS and v else redact(v) for k, v in node.items()}
    if isinstance(node, list):
        return [redact(v) for v in node]
    return node


def save(config: Config, path: str | os.PathLike) -> None:
    """Temp file in the same directory, fsync, rename: a reader sees the old or the new
    file, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(dump(config))
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def keep_cookie_secret(config: Config, path: str | os.PathLike, running: str | None = None) -> None:
    """A config without a cookie secret gets the running one (or, at first start, a new
    one) and is written back, so a restart, or the HA peer sharing this file, signs cookies
    alike and every sticky client stays on its server."""
    if config.dataplane.cookie_secret is None:
        config.dataplane.cookie_secret = running or secrets.token_urlsafe(32)
        save(config, path)


def objects(config: Config) -> Iterator[tuple[str, object]]:
    """Every identified object with its kind, in file order."""
    for lb in config.lbs:
        yield "lb", lb
        for b in lb.backends:
            yield "backend", b
            for s in b.servers:
                yield "server", s
        for f in lb.frontends:
            yield "frontend", f
        for c in lb.certificates:
            yield "certificate", c
    for ip in config.ips:
        yield "ip", ip


def assign_ids(config: Config) -> None:
    """Integer ids count up per kind and are never reused, also after a delete (clients
    of the Linode API keep ids); `last_ids` in the file remembers the highest issued.
    UUIDs are derived from kind and id so a hand-written file gets the same ones on
    every load."""
    highest: dict[str, int] = dict(config.last_ids)
    for kind, obj in objects(config):
        if obj.id is not None:
            highest[kind] = max(highest.get(kind, 0), obj.id)
    for kind, obj in objects(config):
        if obj.id is None:
            highest[kind] = highest.get(kind, 0) + 1
            obj.id = highest[kind]
        if obj.uuid is None:
            obj.uuid = str(uuidlib.uuid5(ID_NAMESPACE, f"{kind}:{obj.id}"))
    if highest != config.last_ids:
        config.last_ids = highest


def free_vip(config: Config, exclude: set[str] = frozenset()) -> str | None:
    used = {lb.vip for lb in config.lbs if lb.vip} | {ip.address for ip in config.ips} | set(exclude)
    for cidr in config.ip_pool:
        net = ipaddress.ip_network(cidr)
        candidates = [net.network_address] if net.num_addresses == 1 else net.hosts()
        for addr in candidates:
            if str(addr) not in used:
                return str(addr)
    return None


def assign_vips(config: Config) -> None:
    for i, lb in enumerate(config.lbs):
        if lb.vip is None:
            vip = free_vip(config)
            if vip is None:
                raise ConfigError([(f"lbs[{i}].vip", "not set and ip_pool has no free address")])
            lb.vip = vip


def link_ips(config: Config) -> None:
    """Every load balancer's VIP has an IP object linked to it (`ip.lb` = the load balancer's
    UUID). An IP whose load balancer is gone, or now uses another VIP, stays detached: its
    address is not handed out again until the IP is released (Scaleway's delete_lb keeps
    the IP unless release_ip)."""
    lbs = {lb.uuid: lb for lb in config.lbs}
    for ip in config.ips:
        lb = lbs.get(ip.lb)
        if ip.lb is not None and (lb is None or lb.vip != ip.address):
            ip.lb = None
    linked = {ip.lb for ip in config.ips if ip.lb is not None}
    by_address = {ip.address: ip for ip in config.ips}
    for lb in config.lbs:
        if lb.uuid in linked:
            continue
        ip = by_address.get(lb.vip)
        if ip is None:
            ip = Ip(address=lb.vip, organization_id=lb.organization_id, project_id=lb.project_id,
                    created_at=now())
            config.ips.append(ip)
            by_address[ip.address] = ip
        if ip.lb is None:           # else two load balancers share one VIP: the first holds the IP
            ip.lb = lb.uuid
            linked.add(lb.uuid)


def _duplicates(items, key) -> Iterator[tuple[int, object]]:
    seen = set()
    for i, item in enumerate(items):
        k = key(item)
        if k in seen:
            yield i, k
        seen.add(k)


def frontend_protocol(lb: LoadBalancer, frontend) -> Protocol:
    if frontend.protocol is not None:
        return frontend.protocol
    if frontend.certificates:
        return Protocol.HTTPS
    backend = next((b for b in lb.backends if b.name == frontend.backend), None)
    return backend.protocol if backend else Protocol.TCP


def cross_check(config: Config) -> Iterator[tuple[str, str]]:
    seen_ids: dict[tuple[str, int], str] = {}
    for kind, obj in objects(config):
        if (kind, obj.id) in seen_ids:
            yield f"{kind} id {obj.id}", "duplicate id"
        seen_ids[(kind, obj.id)] = kind
    for i, name in _duplicates(config.lbs, lambda lb: lb.name):
        yield f"lbs[{i}].name", f"duplicate load balancer name {name!r}"
    for i, address in _duplicates(config.ips, lambda ip: ip.address):
        yield f"ips[{i}].address", f"duplicate IP {address}"
    listeners: dict[tuple, str] = {}
    for i, lb in enumerate(config.lbs):
        at = f"lbs[{i}]"
        for j, name in _duplicates(lb.backends, lambda b: b.name):
            yield f"{at}.backends[{j}].name", f"duplicate backend name {name!r}"
        for j, name in _duplicates(lb.frontends, lambda f: f.name):
            yield f"{at}.frontends[{j}].name", f"duplicate frontend name {name!r}"
        for j, name in _duplicates(lb.certificates, lambda c: c.name):
            yield f"{at}.certificates[{j}].name", f"duplicate certificate name {name!r}"
        for j, c in enumerate(lb.certificates):
            try:
                check_certificate(c.chain_pem, c.key_pem)
            except CertificateError as e:
                yield f"{at}.certificates[{j}].{e.field}", str(e)
        backends = {b.name: b for b in lb.backends}
        certificates = {c.name for c in lb.certificates}
        for j, b in enumerate(lb.backends):
            bat = f"{at}.backends[{j}]"
            for k, key in _duplicates(b.servers, lambda s: (s.address, s.port or b.forward_port)):
                yield f"{bat}.servers[{k}]", f"duplicate server {key[0]} port {key[1]}"
            if b.stickiness == Stickiness.COOKIE and b.protocol not in (Protocol.HTTP, Protocol.HTTPS):
                yield f"{bat}.stickiness", "cookie stickiness needs protocol http"
            if b.protocol == Protocol.UDP and b.proxy_protocol != "none":
                yield f"{bat}.proxy_protocol", "PROXY protocol needs a TCP-based protocol"
        for j, f in enumerate(lb.frontends):
            fat = f"{at}.frontends[{j}]"
            if f.backend not in backends:
                yield f"{fat}.backend", f"no backend named {f.backend!r} in this load balancer"
            for name in f.certificates:
                if name not in certificates:
                    yield f"{fat}.certificates", f"no certificate named {name!r} in this load balancer"
            proto = frontend_protocol(lb, f)
            if proto == Protocol.HTTPS and not f.certificates:
                yield f"{fat}.certificates", "protocol https needs at least one certificate"
            backend = backends.get(f.backend)
            if (proto == Protocol.UDP and backend and backend.proxy_protocol != "none"
                    and backend.protocol != Protocol.UDP):     # else the backend's own check says it
                yield f"{fat}.protocol", f"udp cannot carry the PROXY protocol of backend {f.backend!r}"
            key = (lb.vip, f.port, "udp" if proto == Protocol.UDP else "tcp")
            if key in listeners:
                yield f"{fat}.port", f"{key[2]} port {f.port} on {lb.vip} is already used by {listeners[key]}"
            else:
                listeners[key] = f"{lb.name}/{f.name}"
