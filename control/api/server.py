"""The daemon's HTTP server: both dialects' routes, the request gate (control.api.auth),
each dialect's error shapes, /healthz, /metrics, /openapi.json, and the native config
endpoint that `lbfast lb|frontend|backend|server` use while a daemon runs."""
import hashlib
import ipaddress
import logging
import os

import orjson
from aiohttp import web

from control import config as configfile
from control.api import auth, linode, metrics, openapi, scaleway
from control.api.changes import apply_config
from control.api.errors import ApiError
from control.api.observed import TrafficHistory
from control.api.routes import Param, Route
from control.api.status_page import StatusPage, owns
from control.certificate_worker import CertificateWorker
from control.certificates import CertificateError
from control.edit import NotFound

log = logging.getLogger("lbfast.api")

NATIVE = "/lbfast/v1"


class ApiRefused(configfile.ConfigError):
    """The API would listen beyond loopback with no token."""

    def __init__(self, listen: str):
        super().__init__([("api.token", f"required to serve the API on {listen}, which is not a loopback "
                                        f"address (or set ${auth.TOKEN_ENV})")])


token_for = auth.configured_token


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
        self.loopback_only = True
        self.certificates = CertificateWorker()   # API certificates are checked there, off the loop
        self.changes = 0                    # counted by control.api.changes.apply_config
        self.history = TrafficHistory(interval=history_interval)
        self.runner: web.AppRunner | None = None
        self.url: str | None = None
        self.routes = [*linode.routes(), *scaleway.routes(), *native_routes()]
        self._openapi: bytes | None = None

    # -- life cycle ---------------------------------------------------------------------
    async def start(self, listen: str, token: str | None) -> None:
        """`token` as configured; with none (loopback only) the generated one is used."""
        host, port = split_listen(listen)
        self.loopback_only = ipaddress.ip_address(host).is_loopback
        if not token and not self.loopback_only:
            raise ApiRefused(listen)
        self.token = token or auth.generated_token(self.daemon.config_path)
        app = web.Application(middlewares=[self._errors, self._auth], client_max_size=auth.MAX_BODY_BYTES)
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
        log.info("API on %s (token %s)", self.url,
                 "configured" if token else f"in {auth.token_path(self.daemon.config_path)}")

    async def stop(self) -> None:
        await self.history.stop()
        await self.certificates.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # -- middlewares ----------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler):
        # /status checks its own token (Basic or its session cookie) and takes a form post
        auth.check(request, dialect_of(request.path), self.token, self.loopback_only,
                   own_credentials=owns(request.path))
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
            if e.status == 413:         # a chunked body past the cap (a declared length is refused earlier)
                reason = f"the request body is larger than {auth.MAX_BODY_BYTES} bytes"
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
            self._openapi = orjson.dumps(openapi.build(self.routes, auth=True))
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
    raw = await request.read()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    new = configfile.parse(await checked_certificates(server, doc) if isinstance(doc, dict) else raw)
    async with daemon.lock:
        want = request.headers.get("If-Match")
        if want is not None and want != "*" and want != config_etag(daemon.config):
            raise ApiError(412, [(None, "the config changed since it was read: read it again")])
        await apply_config(daemon, new)
        return web.Response(body=configfile.dump(new), content_type="application/json",
                            headers={"ETag": config_etag(new)})


async def checked_certificates(server: ApiServer, doc: dict) -> dict:
    """`doc` once its certificates passed the worker's check (off the loop): parse() then
    finds their verdicts and does not parse them again."""
    paths, pairs = [], []
    for i, lb in enumerate(doc.get("lbs") or []):
        for j, c in enumerate((lb.get("certificates") or []) if isinstance(lb, dict) else []):
            if isinstance(c, dict) and isinstance(c.get("chain_pem"), str) and isinstance(c.get("key_pem"), str):
                paths.append(f"lbs[{i}].certificates[{j}].")
                pairs.append((c["chain_pem"], c["key_pem"]))
    try:
        await server.certificates.check(pairs)
    except CertificateError as e:
        raise configfile.ConfigError([(paths[e.index] + e.field, str(e))]) from None
    return doc


def native_routes() -> list[Route]:
    config = {"type": "object", "description": "the config file's document (see the README)"}
    return [
        Route("GET", NATIVE + "/config", get_config, "The running config (with an ETag)", "lbfast",
              "getConfig", response=config),
        Route("PUT", NATIVE + "/config", put_config, "Replace the running config (If-Match: its ETag)",
              "lbfast", "putConfig", request=config, response=config,
              params=(Param("If-Match", "header"),)),
    ]
