"""Wire fields of the two dialects and how each maps onto the model: attribute, spelling of
enum values, unit. Request parsing, the field named in an error and the OpenAPI schemas
are all derived from these tables; ranges come from the model's own field specs."""
import enum
import math
import re
import typing
from dataclasses import dataclass, field

from pydantic import AfterValidator, BaseModel

from control.api.errors import ApiError
from control.model import Backend, Certificate, Frontend, HealthCheck, Ip, LoadBalancer, Server

# "<kind>.<attribute path>" → the model class holding the attribute
KINDS: dict[str, type[BaseModel]] = {
    "lb": LoadBalancer, "backend": Backend, "frontend": Frontend, "server": Server,
    "certificate": Certificate, "ip": Ip, "health_check": HealthCheck,
}


def model_attr(attr: str) -> tuple[type[BaseModel], str]:
    """("backend.health_check.timeout_ms") → (HealthCheck, "timeout_ms")."""
    parts = attr.split(".")
    cls = KINDS[parts[0]]
    for name in parts[1:-1]:
        cls = KINDS[name] if name in KINDS else typing.get_args(cls.model_fields[name].annotation)[0]
    return cls, parts[-1]


def model_bounds(attr: str) -> tuple[int, int] | None:
    """The lo..hi of a model field declared with int_range/str_len (read from the validator's
    closure, so the model stays the one place that states them)."""
    cls, name = model_attr(attr)
    info = cls.model_fields[name]
    stack = [info.annotation, *info.metadata]
    while stack:
        item = stack.pop()
        if isinstance(item, AfterValidator):
            fn = item.func
            cells = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__ or ())))
            if "lo" in cells and "hi" in cells:
                return cells["lo"], cells["hi"]
        stack.extend(typing.get_args(item))
        stack.extend(getattr(item, "__metadata__", ()))
    return None


def model_values(attr: str | None) -> list[str]:
    """The values of an enum-typed model field ([] for others)."""
    if attr is None:
        return []
    cls, name = model_attr(attr)
    stack = [cls.model_fields[name].annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, enum.Enum):
            return [str(m.value) for m in item]
        stack.extend(typing.get_args(item))
    return []


# -- durations (Scaleway) ---------------------------------------------------------------
_UNITS_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration_ms(value) -> int:
    """"30s", "2.5s", "500ms", "1m30s" (Go/protobuf style) or a number of milliseconds."""
    if isinstance(value, bool):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError("not a duration")
        return round(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError('not a duration (e.g. "30s", "500ms" or milliseconds)')
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a duration")
        return round(number)
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS_MS[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0 or not math.isfinite(total):
        raise ValueError(f'{value!r} is not a duration (e.g. "30s", "500ms" or milliseconds)')
    return round(total)


def format_duration(ms: int | None) -> str | None:
    """Protobuf JSON style, as Scaleway's SDKs read it: "300s", "2.5s"."""
    if ms is None:
        return None
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms / 1000:.3f}".rstrip("0") + "s"


# -- the field spec ----------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    wire: str                                # name on the wire
    attr: str | None = None                  # "<kind>.<attribute path>" in the model; None: not stored
    type: str = "string"                     # JSON type: string | integer | boolean | array | object | number
    spellings: dict | None = None            # wire value → model value (enums)
    scale: int = 1                           # model value = wire value × scale (seconds → ms)
    duration: bool = False                   # wire: "30s" / "500ms" / ms number; model: ms
    bounds: tuple[int, int] | None = None    # on the wire, when the dialect is stricter than the model
    items: str = "string"                    # array item type
    read_only: bool = False
    write_only: bool = False
    nullable: bool = False
    required: bool = False                   # on create
    ignored: bool = False                    # accepted for compatibility, not stored
    description: str = ""
    schema: dict | None = None               # explicit JSON schema for objects
    extra: dict = field(default_factory=dict)

    def wire_bounds(self) -> tuple[int, int] | None:
        if self.bounds is not None:
            return self.bounds
        if self.attr is None or self.type not in ("integer", "number") and not self.duration:
            return None
        b = model_bounds(self.attr)
        if b is None:
            return None
        lo, hi = b
        return (math.ceil(lo / self.scale), hi // self.scale) if self.scale != 1 else (lo, hi)

    def json_schema(self, response: bool = False) -> dict:
        """The field's schema in a request, or in a response: there an object made through
        the other dialect or the CLI may hold any value the model allows, so enums grow by
        the model's values this dialect has no word for, and dialect-only bounds go."""
        if self.schema is not None:
            out = dict(self.schema)
        elif self.duration:
            out = {"type": "string", "example": "30s",
                   "description": (self.description + " " if self.description else "")
                   + 'A duration ("30s", "2.5s", "500ms"); a number is milliseconds.'}
        else:
            out = {"type": self.type}
            if self.type == "array":
                out["items"] = {"type": self.items}
            if self.spellings is not None:
                out["enum"] = list(self.spellings)
                if response:
                    out["enum"] += [v for v in model_values(self.attr) if v not in out["enum"]
                                    and v not in {str(m) for m in self.spellings.values()}]
            b = self.wire_bounds()
            if response and (self.bounds is not None or self.scale != 1):
                b = None
            if b is not None and self.type in ("integer", "number"):
                out["minimum"], out["maximum"] = b
            elif b is not None and self.type == "string":
                out["minLength"], out["maxLength"] = b
            if self.attr is not None and self.type == "string" and self.spellings is None:
                mb = model_bounds(self.attr) if self.bounds is None else None
                if mb is not None:
                    out["minLength"], out["maxLength"] = mb
        if self.description and "description" not in out:
            out["description"] = self.description
        if self.read_only:
            out["readOnly"] = True
        if self.write_only:
            out["writeOnly"] = True
        if self.nullable:
            out["nullable"] = True
        out.update(self.extra)
        return out

    # -- wire → model -------------------------------------------------------------------
    def parse(self, value):
        """The model value for a wire value; raises ValueError with a message for the client."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError("must not be null")
        if self.duration:
            ms = parse_duration_ms(value)
            b = self.wire_bounds()
            if b is not None and not b[0] <= ms <= b[1]:
                raise ValueError(f"must be {format_duration(b[0])}..{format_duration(b[1])}")
            return ms
        if self.spellings is not None:
            if not isinstance(value, str) or value not in self.spellings:
                raise ValueError("must be one of " + ", ".join(self.spellings))
            return self.spellings[value]
        if self.type == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError("must be an integer")
            b = self.wire_bounds()
            if b is not None and not b[0] <= value <= b[1]:
                raise ValueError(f"must be {b[0]}..{b[1]}")
            return value * self.scale
        if self.type == "boolean":
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if self.type == "string":
            if not isinstance(value, str):
                raise ValueError("must be a string")
            if "\x00" in value:
                raise ValueError("must not contain NUL characters")
            if self.bounds is not None and not self.bounds[0] <= len(value) <= self.bounds[1]:
                raise ValueError(f"must be {self.bounds[0]}..{self.bounds[1]} characters")
            return value
        if self.type == "array":
            if not isinstance(value, list):
                raise ValueError("must be an array")
            if self.items == "string" and not all(isinstance(v, str) and "\x00" not in v for v in value):
                raise ValueError("must be an array of strings")
            if self.items == "object" and not all(isinstance(v, dict) for v in value):
                raise ValueError("must be an array of objects")
            return list(value)
        if self.type == "object":
            if not isinstance(value, dict):
                raise ValueError("must be an object")
            return value
        return value

    def show(self, value):
        """The wire value for a model value."""
        if self.duration:
            return format_duration(value)
        if self.spellings is not None:
            for wire, model in self.spellings.items():
                if model == value:
                    return wire
            return str(value) if value is not None else None
        if self.scale != 1 and value is not None:
            return value // self.scale
        return value


class Table:
    """The wire fields of one object in one dialect."""

    def __init__(self, name: str, fields: list[Field]):
        self.name = name
        self.fields = {f.wire: f for f in fields}
        self.by_attr = {f.attr: f for f in fields if f.attr is not None and not f.read_only}

    def __iter__(self):
        return iter(self.fields.values())

    def __getitem__(self, wire: str) -> Field:
        return self.fields[wire]

    def parse(self, body, *, create: bool, prefix: str = "", skip: tuple[str, ...] = ()) -> dict:
        """Body → {attr or wire name: model value} for the writable fields present; raises
        ApiError(400) naming every bad field (with `prefix`, e.g. "nodes[2].")."""
        if not isinstance(body, dict):
            raise ApiError.bad_request(prefix.rstrip(".") or None, "the request body must be a JSON object")
        out, problems = {}, []
        for f in self.fields.values():
            if f.read_only or f.wire in skip:
                continue
            if f.wire not in body:
                if create and f.required:
                    problems.append((prefix + f.wire, "required"))
                continue
            try:
                value = f.parse(body[f.wire])
            except ValueError as e:
                problems.append((prefix + f.wire, str(e)))
                continue
            if not f.ignored:
                out[f.attr or f.wire] = value
        if problems:
            raise ApiError(400, problems)
        return out

    def wire_name(self, attr: str) -> str | None:
        """The wire field for a model attribute path such as "backend.health_check.timeout_ms"."""
        f = self.by_attr.get(attr)
        if f is not None:
            return f.wire
        # an attribute inside a nested object maps onto that object's field
        while "." in attr:
            attr = attr.rsplit(".", 1)[0]
            f = self.by_attr.get(attr)
            if f is not None:
                return f.wire
        return None

    def schema(self, *, request: bool = False, create: bool = False) -> dict:
        props, required = {}, []
        for f in self.fields.values():
            if request and f.read_only or not request and f.write_only:
                continue
            props[f.wire] = f.json_schema(response=not request)
            if request and create and f.required:
                required.append(f.wire)
        out = {"type": "object", "properties": props}
        if required:
            out["required"] = required
        return out


def split_attrs(values: dict, kind: str) -> dict:
    """{"backend.health_check.port": 80, "backend.algorithm": "x", "frontend.port": 1}, "backend"
    → {"health_check": {"port": 80}, "algorithm": "x"}."""
    out: dict = {}
    for key, value in values.items():
        head, _, rest = key.partition(".")
        if head != kind or not rest:
            continue
        target = out
        parts = rest.split(".")
        for p in parts[:-1]:
            target = target.setdefault(p, {})
        target[parts[-1]] = value
    return out


def model_field_path(path: str) -> str | None:
    """A ConfigError path → "<kind>.<attr>": "lbs[0].backends[1].health_check.port" →
    "backend.health_check.port"; "ips[2].address" → "ip.address"."""
    kinds = {"lbs": "lb", "backends": "backend", "frontends": "frontend", "servers": "server",
             "certificates": "certificate", "ips": "ip"}
    kind, rest = None, path
    for m in re.finditer(r"(\w+)\[\d+\]\.?", path):
        if m.group(1) in kinds:
            kind, rest = kinds[m.group(1)], path[m.end():]
    if kind is None:
        return None
    return f"{kind}.{rest}" if rest else kind
