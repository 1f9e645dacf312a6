"""Who may use the API. Never anonymous: the token is api.token, else $LBFAST_API_TOKEN,
else one the daemon generates at first start into a 0600 file beside the config (where
the CLI finds it). On a loopback listener a browser tricked by DNS rebinding is refused
by its Host header; writes must say they are JSON; bodies are capped."""
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

from aiohttp import web

from control import config as configfile
from control.api.errors import ApiError

TOKEN_ENV = "LBFAST_API_TOKEN"
MAX_BODY_BYTES = 4 * 1024 * 1024
PUBLIC = ("/healthz", "/openapi.json")       # answered without a token (still loopback Hosts only)
WRITES = ("POST", "PUT", "PATCH", "DELETE")
TOKEN_MISSING = "no API token was sent (Authorization: Bearer <token> or X-Auth-Token)"
TOKEN_REFUSED = "Invalid Token: the API token was refused"


def configured_token(config) -> str | None:
    return config.api.token or os.environ.get(TOKEN_ENV) or None


def token_path(config_path: str | os.PathLike) -> Path:
    """lbfast.json -> lbfast.api-token, in the same directory."""
    return Path(config_path).with_suffix(".api-token")


def read_token_file(path: Path) -> str:
    """The token in `path`, refused unless the file is ours and private (0600)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:            # a symlink (ELOOP), a directory, no permission
        raise configfile.ConfigError([("api.token", f"cannot read {path}: {e.strerror}")]) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise configfile.ConfigError([("api.token", f"{path} must belong to uid {os.geteuid()} with "
                                                        f"mode 0600 (it is {st.st_mode & 0o777:o}, uid {st.st_uid})")])
        token = f.read().decode("ascii", "replace").strip()
    if not token:
        raise configfile.ConfigError([("api.token", f"{path} is empty: delete it and restart to get a new one")])
    return token


def generated_token(config_path: str | os.PathLike) -> str:
    """The token of the file beside the config, created (random, 0600) if there is none."""
    path = token_path(config_path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return read_token_file(path)
    except OSError as e:
        raise configfile.ConfigError([("api.token", f"cannot create {path}: {e.strerror}; "
                                                    f"set api.token or ${TOKEN_ENV}")]) from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    return token


def is_loopback_host(host: str) -> bool:
    """A Host header (name or address, port optional) that can only mean this machine."""
    host = host.strip().lower()
    if host.startswith("["):
        name, bracket, port = host[1:].partition("]")
        if not bracket or (port and not (port[0] == ":" and port[1:].isdigit())):
            return False
    else:
        name, _, port = host.partition(":")
        if port and not port.isdigit():
            return False
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def shown(value: str) -> str:
    """A header value fit for an error message: ASCII, quoted, bounded."""
    return repr(value[:100].encode("ascii", "backslashreplace").decode())


def credentials(request: web.Request, dialect: str) -> list[str]:
    """What the request offers as a token, in the headers its dialect's tools send."""
    given = []
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and dialect in ("linode", "lbfast"):
        given.append(auth[7:].strip())
    if dialect in ("scaleway", "lbfast") and "X-Auth-Token" in request.headers:
        given.append(request.headers["X-Auth-Token"].strip())
    return given


def check(request: web.Request, dialect: str, token: str, loopback_only: bool,
          own_credentials: bool = False) -> None:
    """Raises ApiError (403, 401, 413 or 415) for a request that may not go further.
    `own_credentials`: a handler that checks the token itself (the status page): Host only."""
    host = request.headers.get("Host")
    if loopback_only and host is not None and not is_loopback_host(host):
        raise ApiError(403, [(None, f"Host {shown(host)} is not a loopback name or address: "
                                    f"this API answers on loopback only")])
    if own_credentials:
        return
    if request.path not in PUBLIC:
        given = credentials(request, dialect)
        if not given:
            raise ApiError(401, [(None, TOKEN_MISSING)])
        if not any(g.isascii() and hmac.compare_digest(g.encode(), token.encode()) for g in given):
            raise ApiError(401, [(None, TOKEN_REFUSED)])
    if request.method in WRITES and request.body_exists:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise ApiError(413, [(None, f"the request body is larger than {MAX_BODY_BYTES} bytes")])
        if request.content_type != "application/json":
            raise ApiError(415, [(None, f"the request body must be Content-Type: application/json, "
                                        f"not {shown(request.content_type)}")])
