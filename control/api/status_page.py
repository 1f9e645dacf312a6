"""/status (the live status page), /status.json (its data, for scripts too) and the page's
static files, behind the API token: HTTP Basic with the token as password (as HAProxy's
stats page), a Bearer/X-Auth-Token header, or a session cookie from the login form.
A token never travels in a URL or a page; no inline script runs (Content-Security-Policy)."""
import asyncio
import base64
import binascii
import hmac
import secrets
import time
from importlib import resources

import orjson
from aiohttp import web

from control.api import auth

COOKIE = "lbfast_status"
SESSION_S = 12 * 3600
MAX_SESSIONS = 256
FAILED_LOGIN_DELAY_S = 0.25
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",     # no-referrer would make form posts say Origin: null
    "Cache-Control": "no-store",
}
BASIC_CHALLENGE = 'Basic realm="lbfast status", charset="UTF-8"'


def owns(path: str) -> bool:
    """Paths this module authenticates itself (the API's middleware leaves them alone)."""
    return path in ("/status", "/status.json") or path.startswith("/status/")


def _static_files() -> dict[str, bytes]:
    folder = resources.files("control.status") / "static"
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}


class Sessions:
    """Login-form sessions: a random id in an HttpOnly, SameSite=Strict cookie (never the
    token itself), forgotten after SESSION_S or when too many pile up."""

    def __init__(self):
        self.expiry: dict[str, float] = {}

    def new(self) -> str:
        now = time.monotonic()
        self.expiry = {sid: t for sid, t in self.expiry.items() if t > now}
        while len(self.expiry) >= MAX_SESSIONS:
            self.expiry.pop(min(self.expiry, key=self.expiry.get))
        sid = secrets.token_urlsafe(32)
        self.expiry[sid] = now + SESSION_S
        return sid

    def valid(self, sid: str | None) -> bool:
        return bool(sid) and self.expiry.get(sid, 0.0) > time.monotonic()

    def end(self, sid: str | None) -> None:
        self.expiry.pop(sid or "", None)


class StatusPage:
    def __init__(self, api):
        self.api = api              # control.api.server.ApiServer: its token and daemon
        self.sessions = Sessions()
        self.files = _static_files()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/status", self.page)
        app.router.add_get("/status.json", self.data)
        app.router.add_post("/status/login", self.login)
        app.router.add_post("/status/logout", self.logout)
        app.router.add_get("/status/static/{name}", self.static)

    # -- who may look --------------------------------------------------------------------
    def _presented(self, request: web.Request) -> list[str]:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        given = auth.credentials(request, "lbfast")     # Bearer and X-Auth-Token, as the API takes them
        if scheme.lower() == "basic":
            try:
                given.append(base64.b64decode(value.strip(), validate=True).decode().partition(":")[2])
            except (binascii.Error, UnicodeDecodeError):
                pass
        return given

    def allowed(self, request: web.Request) -> bool:
        token = self.api.token
        if self.sessions.valid(request.cookies.get(COOKIE)):
            return True
        return any(hmac.compare_digest(g.encode(), token.encode()) for g in self._presented(request))

    def same_origin(self, request: web.Request) -> bool:
        """Forms post only from the page itself (SameSite=Strict covers the cookie; this
        covers the login form and browsers that send no SameSite)."""
        origin = request.headers.get("Origin")
        return origin is None or origin == f"{request.scheme}://{request.host}"

    # -- responses -------------------------------------------------------------------------
    def _html(self, name: str, status: int = 200, message: str = "", headers: dict | None = None) -> web.Response:
        body = self.files[name].replace(b"<!--message-->", message.encode())
        return web.Response(body=body, status=status, content_type="text/html", charset="utf-8",
                            headers={**SECURITY_HEADERS, **(headers or {})})

    def _refused_page(self, message: str = "") -> web.Response:
        return self._html("login.html", 401, message, {"WWW-Authenticate": BASIC_CHALLENGE})

    def _refused_json(self, challenge: str) -> web.Response:
        return self._json({"error": "Invalid Token"}, 401, {"WWW-Authenticate": challenge})

    @staticmethod
    def _json(doc, status: int = 200, headers: dict | None = None) -> web.Response:
        return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json",
                            headers={**SECURITY_HEADERS, **(headers or {})})

    # -- handlers ----------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.Response:
        if not self.allowed(request):
            return self._refused_page()
        return self._html("status.html")

    async def data(self, request: web.Request) -> web.Response:
        if not self.allowed(request):
            # Bearer, not Basic: a refused fetch() from the page must not pop a browser dialog
            return self._refused_json('Bearer realm="lbfast status"')
        return self._json(self.api.daemon.view.document())

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = STATIC_TYPES.get(name[name.rfind("."):]) if "." in name else None
        if kind is None or kind == "text/html" or name not in self.files:
            raise web.HTTPNotFound()
        if not self.allowed(request):
            return self._refused_json(BASIC_CHALLENGE)
        return web.Response(body=self.files[name], content_type=kind, headers=SECURITY_HEADERS)

    async def login(self, request: web.Request) -> web.Response:
        if not self.same_origin(request):
            return self._html("login.html", 403, "refused: the form was posted from another origin")
        form = await request.post()
        given = str(form.get("token", ""))
        if not given or not hmac.compare_digest(given.encode(), self.api.token.encode()):
            await asyncio.sleep(FAILED_LOGIN_DELAY_S)
            return self._refused_page("wrong token")
        response = web.Response(status=303, headers={**SECURITY_HEADERS, "Location": "/status"})
        response.set_cookie(COOKIE, self.sessions.new(), max_age=SESSION_S, path="/", httponly=True,
                            samesite="Strict", secure=request.secure)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        if not self.same_origin(request):
            return self._html("login.html", 403, "refused: the form was posted from another origin")
        self.sessions.end(request.cookies.get(COOKIE))
        response = web.Response(status=303, headers={**SECURITY_HEADERS, "Location": "/status"})
        response.del_cookie(COOKIE, path="/")
        return response
