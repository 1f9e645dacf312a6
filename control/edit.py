"""Changes to the model: find, create, update and delete load balancers, frontends,
backends and servers. Every change works on a copy and returns it only when the whole
config still validates, so a bad request loses nothing. Used by the CLI and the API."""
from pydantic import BaseModel, ValidationError

from control.config import ConfigError, error_message, field_path, finish
from control.model import Backend, Config, Frontend, LoadBalancer, Server, new_uuid, now

TIMESTAMPED = ("created_at", "updated_at")


class NotFound(LookupError):
    def __init__(self, kind: str, ref: object):
        self.kind, self.ref = kind, ref
        super().__init__(f"no {kind} {ref!r}")


def _matches(obj, ref: str | int) -> bool:
    ref = str(ref)
    return ref == str(obj.id) or ref == obj.uuid or ref == getattr(obj, "name", None)


def find(items: list, kind: str, ref: str | int):
    for obj in items:
        if _matches(obj, ref):
            return obj
    raise NotFound(kind, ref)


def find_server(backend: Backend, ref: str | int) -> Server:
    """By id, uuid, label, or ADDRESS[:PORT] ([v6]:port for IPv6)."""
    for s in backend.servers:
        port = s.port or backend.forward_port
        keys = {str(s.id), s.uuid, s.address, f"{s.address}:{port}", f"[{s.address}]:{port}"}
        if s.label:
            keys.add(s.label)
        if str(ref) in keys:
            return s
    raise NotFound("server", ref)


def _validate(cls: type[BaseModel], fields: dict, at: str = "") -> BaseModel:
    try:
        return cls.model_validate(fields)
    except ValidationError as e:
        raise ConfigError([(f"{at}{field_path(err['loc'])}", error_message(err)) for err in e.errors()]) from None


def _updated(obj: BaseModel, fields: dict, at: str = "") -> BaseModel:
    merged = obj.model_dump() | fields
    if "updated_at" in type(obj).model_fields:
        merged["updated_at"] = now()
    return _validate(type(obj), merged, at)


def _stamp(fields: dict, cls: type[BaseModel]) -> dict:
    out = dict(fields)
    for key in TIMESTAMPED:
        if key in cls.model_fields:
            out.setdefault(key, now())
    return out


class Change:
    """A copy of the config being edited; `done()` validates it whole and returns it."""

    def __init__(self, config: Config):
        self.config = config.model_copy(deep=True)

    def done(self) -> Config:
        finish(self.config)
        return self.config

    def path(self, lb: LoadBalancer, backend: Backend | None = None, frontend: Frontend | None = None) -> str:
        """Field path prefix of an object, so errors read like the config file's."""
        at = f"lbs[{self.config.lbs.index(lb)}]."
        if backend is not None:
            at += f"backends[{lb.backends.index(backend)}]."
        if frontend is not None:
            at += f"frontends[{lb.frontends.index(frontend)}]."
        return at

    # -- load balancers -----------------------------------------------------------
    def lb(self, ref) -> LoadBalancer:
        return find(self.config.lbs, "load balancer", ref)

    def create_lb(self, fields: dict) -> LoadBalancer:
        lb = _validate(LoadBalancer, _stamp(fields, LoadBalancer), f"lbs[{len(self.config.lbs)}].")
        self.config.lbs.append(new_uuid(lb))
        return lb

    def update_lb(self, ref, fields: dict) -> LoadBalancer:
        lb = self.lb(ref)
        new = _updated(lb, fields, self.path(lb))
        self.config.lbs[self.config.lbs.index(lb)] = new
        return new

    def delete_lb(self, ref) -> LoadBalancer:
        lb = self.lb(ref)
        self.config.lbs.remove(lb)
        return lb

    # -- backends ---------------------------------------------------------------
    def backend(self, lb_ref, ref) -> Backend:
        return find(self.lb(lb_ref).backends, "backend", ref)

    def create_backend(self, lb_ref, fields: dict) -> Backend:
        lb = self.lb(lb_ref)
        b = _validate(Backend, _stamp(fields, Backend), f"{self.path(lb)}backends[{len(lb.backends)}].")
        lb.backends.append(new_uuid(b))
        return b

    def update_backend(self, lb_ref, ref, fields: dict) -> Backend:
        lb = self.lb(lb_ref)
        b = find(lb.backends, "backend", ref)
        new = _updated(b, fields, self.path(lb, b))
        if new.name != b.name:        # frontends refer to backends by name
            for f in lb.frontends:
                if f.backend == b.name:
                    f.backend = new.name
        lb.backends[lb.backends.index(b)] = new
        return new

    def delete_backend(self, lb_ref, ref) -> Backend:
        lb = self.lb(lb_ref)
        b = find(lb.backends, "backend", ref)
        users = [f.name for f in lb.frontends if f.backend == b.name]
        if users:
            raise ConfigError([("backend", f"{b.name!r} is used by frontend(s) {', '.join(users)}")])
        lb.backends.remove(b)
        return b

    # -- frontends --------------------------------------------------------------
    def frontend(self, lb_ref, ref) -> Frontend:
        return find(self.lb(lb_ref).frontends, "frontend", ref)

    def create_frontend(self, lb_ref, fields: dict) -> Frontend:
        lb = self.lb(lb_ref)
        f = _validate(Frontend, _stamp(fields, Frontend), f"{self.path(lb)}frontends[{len(lb.frontends)}].")
        lb.frontends.append(new_uuid(f))
        return f

    def update_frontend(self, lb_ref, ref, fields: dict) -> Frontend:
        lb = self.lb(lb_ref)
        f = find(lb.frontends, "frontend", ref)
        new = _updated(f, fields, self.path(lb, frontend=f))
        lb.frontends[lb.frontends.index(f)] = new
        return new

    def delete_frontend(self, lb_ref, ref) -> Frontend:
        lb = self.lb(lb_ref)
        f = find(lb.frontends, "frontend", ref)
        lb.frontends.remove(f)
        return f

    # -- servers ----------------------------------------------------------------
    def server(self, lb_ref, backend_ref, ref) -> Server:
        return find_server(self.backend(lb_ref, backend_ref), ref)

    def create_server(self, lb_ref, backend_ref, fields: dict) -> Server:
        lb = self.lb(lb_ref)
        b = find(lb.backends, "backend", backend_ref)
        s = _validate(Server, fields, f"{self.path(lb, b)}servers[{len(b.servers)}].")
        b.servers.append(new_uuid(s))
        return s

    def update_server(self, lb_ref, backend_ref, ref, fields: dict) -> Server:
        lb = self.lb(lb_ref)
        b = find(lb.backends, "backend", backend_ref)
        s = find_server(b, ref)
        new = _updated(s, fields, f"{self.path(lb, b)}servers[{b.servers.index(s)}].")
        b.servers[b.servers.index(s)] = new
        return new

    def delete_server(self, lb_ref, backend_ref, ref) -> Server:
        b = self.backend(lb_ref, backend_ref)
        s = find_server(b, ref)
        b.servers.remove(s)
        return s
