"""The one table of routes: each dialect lists its operations here, the server registers
them and /openapi.json is built from them."""
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Param:
    name: str
    where: str = "query"            # query | path | header
    schema: dict = field(default_factory=lambda: {"type": "string"})
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str                       # aiohttp pattern, e.g. /v4/nodebalancers/{nodeBalancerId}
    handler: Handler
    summary: str
    dialect: str                    # linode | scaleway | lbfast
    operation: str                  # operationId
    request: dict | None = None     # JSON schema of the body
    response: dict | None = None    # JSON schema of the success body (None: empty)
    status: int = 200
    params: tuple[Param, ...] = ()
    request_required: bool = True
