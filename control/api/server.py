"""The daemon's HTTP server: both dialects' routes, token auth (constant-time compare),
each dialect's error shapes, /healthz, /metrics, /openapi.json, and the native config
endpoint that `lbfast lb|frontend|backend|server` use while a daemon runs."""
import hashlib
import hmac
import ipaddress
import logging
import os

import orjson
from aiohttp import web

from control import config as configfile
from control.api import linode, metrics, openapi, scaleway
from control.api.errors import ApiError
from control.api.observed import TrafficHistory
from control.api.routes import Param, Route
from control.api.status_page import StatusPage, owns
from control.edit import NotFound

log = logging.getLogger("lbfast.api")

TOKEN_ENV = "LBFAST_API_TOKEN"
NATIVE = "/lbfast/v1"
PUBLIC = ("/healthz", "/openapi.json")


class ApiRefused(configfile.ConfigError):
    """The API would listen beyond loopback with no token."""

    def __init__(self, listen: str):
        super().__init__([("api.token", f"required to serve the API on {listen}, which is not a loopback "
                                        f"address (or set ${TOKEN_ENV})")])


def token_for(config) -> str | None:
    return config.api.token or os.environ.get(TOKEN_ENV) or None


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def dialect_of(path: str) -> str:
    if path.startswith("/v4/") or path == "/v4":
        return "linode"
    if path.startswith("/lb/"):
        return "scaleway"
    return "lbfast"


def error_response(dialect: str, status: int, problems, resource=None, resource_id=None) -> web.Response:
    if dialect == "linode":
        body = linode.error_body(status, problems, resource, resource_id)
    elif dialect == "scaleway":
        body = scaleway.error_body(status, problems, resource, resource_id)
    else:
        body = {"error": "; ".join(m for _, m in problems),
                "problems": [{"field": f, "message": m} for f, m in problems]}
        if resource:
            body |= {"resource": resource, "resource_id": str(resource_id)}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def config_etag(config) -> str:
    return '"' + hashlib.sha256(configfile.dump(config)).hexdigest()[:32] + '"'


class ApiServer:
    """Started by the daemon when config.api.listen is set; `daemon.api` points here."""

    def __init__(self, daemon, history_interval: float = 60.0):
        self.daemon = daemon
        self.token: str | None = None
        self.changes = 0                    # counted by control.api.changes.commit
        self.history = TrafficHistory(interval=history_interval)
        self.runner: web.AppRunner | None = None
        self.url: str | None = None
        self.routes = [*linode.routes(), *scaleway.routes(), *native_routes()]
        self._openapi: bytes | None = None

    # -- life cycle ---------------------------------------------------------------------
    async def start(self, listen: str, token: str | None) -> None:
        host, port = split_listen(listen)
        if not token and not ipaddress.ip_address(host).is_loopback:
            raise ApiRefused(listen)
        self.token = token
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=4 * 1024 * 1024)
        app["lbfast"] = self
        for r in self.routes:
            app.router.add_route(r.method, r.path, r.handler)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/openapi.json", self.openapi)
        StatusPage(self).add_routes(app)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}"
        self.history.start(self.daemon)
        log.info("API on %s (%s)", self.url, "token required" if token else "no token: loopback only")

    async def stop(self) -> None:
        await self.history.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # -- middlewares ----------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if self.token and request.path not in PUBLIC and not owns(request.path):   # /status checks its own
            dialect = dialect_of(request.path)
            given = []
            auth = request.headers.get("Authorization", "")
            if auth[:7].lower() == "bearer " and dialect in ("linode", "lbfast"):
                given.append(auth[7:].strip())
            if dialect in ("scaleway", "lbfast") and "X-Auth-Token" in request.headers:
                given.append(request.headers["X-Auth-Token"].strip())
            expected = self.token.encode()
            if not any(hmac.compare_digest(g.encode(), expected) for g in given):
                raise ApiError(401, [(None, "Invalid Token")])
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler):
        dialect = dialect_of(request.path)
        try:
            return await handler(request)
        except ApiError as e:
            return error_response(dialect, e.status, e.problems, e.resource, e.resource_id)
        except configfile.ConfigError as e:
            return error_response(dialect, 400, e.problems)
        except NotFound as e:
            return error_response(dialect, 404, [(None, str(e))], e.kind, e.ref)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            reason = "Not found" if e.status == 404 else e.reason
            if e.status == 405 and dialect == "linode":
                reason = "Method Not Allowed"
            return error_response(dialect, e.status, [(None, reason)], "resource" if e.status == 404 else None,
                                  request.path if e.status == 404 else None)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error_response(dialect, 500, [(None, "internal error")])

    # -- plain endpoints --------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "load_balancers": len(self.daemon.config.lbs)})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=metrics.render(self.daemon, self),
                            content_type="text/plain", headers={"X-Content-Type-Options": "nosniff"},
                            charset="utf-8")

    async def openapi(self, request: web.Request) -> web.Response:
        if self._openapi is None:
            self._openapi = orjson.dumps(openapi.build(self.routes, auth=bool(self.token)))
        return web.Response(body=self._openapi, content_type="application/json")


# -- the native config endpoint (the CLI's path while a daemon runs) -------------------------------
async def get_config(request: web.Request) -> web.Response:
    config = request.app["lbfast"].daemon.config
    return web.Response(body=configfile.dump(config), content_type="application/json",
                        headers={"ETag": config_etag(config),
                                 "X-Lbfast-Config": os.path.abspath(request.app["lbfast"].daemon.config_path)})


async def put_config(request: web.Request) -> web.Response:
    """The whole config, validated like a file; If-Match (the ETag of a GET) makes it a
    compare-and-swap, so two CLI edits never lose one another."""
    server = request.app["lbfast"]
    daemon = server.daemon
    new = configfile.parse(await request.read())
    async with daemon.lock:
        want = request.headers.get("If-Match")
        if want is not None and want != "*" and want != config_etag(daemon.config):
            raise ApiError(412, [(None, "the config changed since it was read: read it again")])
        try:
            await daemon.commit(new)
        except OSError as e:
            raise ApiError.bad_request(None, f"the data plane refused the change: {e.strerror or e}") from None
        server.changes += 1
        return web.Response(body=configfile.dump(new), content_type="application/json",
                            headers={"ETag": config_etag(new)})


def native_routes() -> list[Route]:
    config = {"type": "object", "description": "the config file's document (see the README)"}
    return [
        Route("GET", NATIVE + "/config", get_config, "The running config (with an ETag)", "lbfast",
              "getConfig", response=config),
        Route("PUT", NATIVE + "/config", put_config, "Replace the running config (If-Match: its ETag)",
              "lbfast", "putConfig", request=config, response=config,
              params=(Param("If-Match", "header"),)),
    ]
