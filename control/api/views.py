"""List views shared by the dialects: query parameters, pagination (Linode's pages,
Scaleway's total_count), Linode's X-Filter, Scaleway's order_by/name/owner filters, and
the two date formats."""
import math
from datetime import datetime, timezone

import orjson
from aiohttp import web

from control.api.errors import ApiError


# -- dates -----------------------------------------------------------------------------
def linode_date(dt: datetime | None) -> str | None:
    """YYYY-MM-DDTHH:MM:SS, UTC, no fraction, no zone."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339(dt: datetime | float | None) -> str | None:
    if dt is None:
        return None
    if isinstance(dt, (int, float)):
        dt = datetime.fromtimestamp(dt, timezone.utc)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- query parameters ----------------------------------------------------------------------
def int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError.bad_request(name, "must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError.bad_request(name, f"must be {lo}..{hi}")
    return value


def bool_param(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise ApiError.bad_request(name, "must be true or false")


async def json_body(request: web.Request, *, required: bool = True) -> dict:
    """The request's JSON object; GET/DELETE bodies (`{}` from Scaleway's tools) are ignored
    by the callers, so only writes come here."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError.bad_request(None, "a JSON object body is required")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError.bad_request(None, f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError.bad_request(None, "the request body must be a JSON object")
    return body


# -- Linode ------------------------------------------------------------------------------
LINODE_PAGE_SIZE = (1, 500)        # Linode documents 25..100; smaller and larger pages do no harm


def linode_page(request: web.Request, rows: list[dict]) -> dict:
    page = int_param(request, "page", 1, 1, 2**31 - 1)
    size = int_param(request, "page_size", 100, *LINODE_PAGE_SIZE)
    rows = linode_filter(request, rows)
    results = len(rows)
    return {"data": rows[(page - 1) * size: page * size], "page": page,
            "pages": max(1, math.ceil(results / size)), "results": results}


_OPS = {
    "+neq": lambda a, b: a != b,
    "+gt": lambda a, b: a > b,
    "+gte": lambda a, b: a >= b,
    "+lt": lambda a, b: a < b,
    "+lte": lambda a, b: a <= b,
    "+contains": lambda a, b: isinstance(a, str) and isinstance(b, str) and b.lower() in a.lower(),
}


def linode_filter(request: web.Request, rows: list[dict]) -> list[dict]:
    """Linode's X-Filter header: {"label": "x"}, {"tags": "t"}, {"port": {"+gte": 80}},
    "+and"/"+or" lists, "+order_by"/"+order"."""
    raw = request.headers.get("X-Filter")
    if not raw:
        return rows
    try:
        spec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError.bad_request("X-Filter", "not valid JSON") from None
    if not isinstance(spec, dict):
        raise ApiError.bad_request("X-Filter", "must be a JSON object")
    spec = dict(spec)
    order_by = spec.pop("+order_by", None)
    order = spec.pop("+order", "asc")
    fields = set(rows[0]) if rows else None
    out = [r for r in rows if _matches(r, spec, fields)]
    if order_by is not None:
        if not isinstance(order_by, str) or (fields is not None and order_by not in fields):
            raise ApiError.bad_request("X-Filter", f"cannot order by {order_by!r}")
        if order not in ("asc", "desc"):
            raise ApiError.bad_request("X-Filter", "+order must be asc or desc")
        out.sort(key=lambda r: _sort_key(r.get(order_by)), reverse=order == "desc")
    return out


def _sort_key(v):
    return (v is None, str(type(v)), v if isinstance(v, (int, float, str)) else str(v))


def _matches(row: dict, spec: dict, fields: set | None) -> bool:
    for key, want in spec.items():
        if key in ("+and", "+or"):
            if not isinstance(want, list) or not all(isinstance(w, dict) for w in want):
                raise ApiError.bad_request("X-Filter", f"{key} takes a list of objects")
            results = [_matches(row, w, fields) for w in want]
            if not (all(results) if key == "+and" else any(results)):
                return False
            continue
        if key.startswith("+"):
            raise ApiError.bad_request("X-Filter", f"unknown operator {key}")
        if fields is not None and key not in fields:
            raise ApiError.bad_request("X-Filter", f"cannot filter on {key}")
        have = row.get(key)
        if isinstance(want, dict):
            for op, arg in want.items():
                if op not in _OPS:
                    raise ApiError.bad_request("X-Filter", f"unknown operator {op}")
                try:
                    if not _OPS[op](have, arg):
                        return False
                except TypeError:
                    return False
        elif isinstance(have, list):
            if want not in have:
                return False
        elif have != want:
            return False
    return True


# -- Scaleway ------------------------------------------------------------------------------
ORDERS = ("created_at_asc", "created_at_desc", "name_asc", "name_desc")


def scaleway_page(request: web.Request, rows: list[dict], key: str, *, ordered: bool = True,
                  by_name: bool = True) -> dict:
    page = int_param(request, "page", 1, 1, 2**31 - 1)
    size = int_param(request, "page_size", 20, 1, 100)
    if by_name and request.query.get("name"):
        name = request.query["name"].lower()
        rows = [r for r in rows if name in str(r.get("name", "")).lower()]
    if ordered:
        order = request.query.get("order_by") or "created_at_asc"
        if order not in ORDERS:
            raise ApiError.bad_request("order_by", "must be one of " + ", ".join(ORDERS))
        field, _, direction = order.rpartition("_")
        # rows come in creation order: it breaks ties (created_at counts whole seconds)
        indexed = sorted(enumerate(rows), key=lambda ir: (str(ir[1].get(field) or ""), ir[0]),
                         reverse=direction == "desc")
        rows = [r for _, r in indexed]
    return {key: rows[(page - 1) * size: page * size], "total_count": len(rows)}


def owner_matches(obj, request: web.Request) -> bool:
    """Scaleway clients send organization_id and project_id together; an object matches if
    it has no owner, or either of its owners is one of those asked for."""
    wanted = {request.query.get(k) for k in ("organization_id", "project_id")} - {None, ""}
    if not wanted:
        return True
    have = {obj.organization_id, obj.project_id} - {""}
    return not have or bool(have & wanted)


def tags_match(tags: list[str], request: web.Request) -> bool:
    wanted = request.query.getall("tags", [])
    return all(t in tags for t in wanted)
