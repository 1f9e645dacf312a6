"""/openapi.json, built from the route table: each route's parameters, body and answer
schemas (themselves derived from the dialects' field tables and the model), plus each
dialect's auth and error shapes."""
from control.api.routes import Route

ERRORS = {
    "linode": {"type": "object", "required": ["errors"], "properties": {"errors": {
        "type": "array", "items": {"type": "object", "required": ["reason"], "properties": {
            "reason": {"type": "string"}, "field": {"type": "string"}}}}}},
    "scaleway": {"type": "object", "required": ["message", "type"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"}, "resource": {"type": "string"},
        "resource_id": {"type": "string"}, "details": {"type": "array", "items": {"type": "object"}}}},
    "lbfast": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"}, "problems": {"type": "array", "items": {"type": "object"}}}},
}
SECURITY = {
    "linode": [{"linodeToken": []}],
    "scaleway": [{"scalewayToken": []}],
    "lbfast": [{"linodeToken": []}, {"scalewayToken": []}],
}
TITLES = {"linode": "Linode NodeBalancers v4 dialect", "scaleway": "Scaleway Load Balancer v1 dialect",
          "lbfast": "lbfast"}


def _error(dialect: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{dialect}Error"}}}}


def operation(route: Route, auth: bool) -> dict:
    op = {"operationId": route.operation, "summary": route.summary, "tags": [TITLES[route.dialect]],
          "parameters": [{"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                          "schema": p.schema, **({"description": p.description} if p.description else {})}
                         for p in route.params]}
    if route.request is not None:
        op["requestBody"] = {"required": route.request_required,
                             "content": {"application/json": {"schema": route.request}}}
    ok = {"description": "OK"}
    if route.response is not None:
        ok["content"] = {"application/json": {"schema": route.response}}
    responses = {str(route.status): ok}
    if route.request is not None or route.params:
        responses["400"] = _error(route.dialect, "Invalid request: the field is named")
    if any(p.where == "path" for p in route.params):
        responses["404"] = _error(route.dialect, "No such object")
    if route.dialect == "scaleway":
        responses["412"] = _error(route.dialect, "The object is in use")
    if route.request is not None:
        responses["413"] = _error(route.dialect, "The body is larger than the API takes")
        responses["415"] = _error(route.dialect, "The body is not Content-Type: application/json")
    responses["403"] = _error(route.dialect, "A loopback API asked with a Host that is not loopback")
    if auth:
        responses["401"] = _error(route.dialect, "Missing or wrong token")
        op["security"] = SECURITY[route.dialect]
    else:
        op["security"] = []
    op["responses"] = responses
    return op


def build(routes: list[Route], *, auth: bool, server_url: str | None = None) -> dict:
    paths: dict = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route, auth)
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "lbfast REST API", "version": "1",
                 "description": "Two views of one model: the Linode NodeBalancers v4 dialect under /v4, "
                                "the Scaleway Load Balancer v1 dialect under /lb/v1/regions/{region} and "
                                "/lb/v1/zones/{zone}; /healthz, /metrics and the native config under /lbfast/v1."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "linodeToken": {"type": "http", "scheme": "bearer"},
                "scalewayToken": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
            },
            "schemas": {f"{d}Error": s for d, s in ERRORS.items()},
        },
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
