"""The CLI's side of the native config endpoint: find the API of a daemon running on a
config file, read its running config, and write an edited one back (compare-and-swap on
the ETag, so concurrent edits through the API, the CLI or SIGHUP never lose one another)."""
import os
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from control import config as configfile
from control.api import auth
from control.model import Config

URL_ENV = "LBFAST_API_URL"
TOKEN_ENV = auth.TOKEN_ENV


class ApiUnavailable(Exception):
    """A daemon's API answered but cannot be used (wrong token, another config file)."""


class OtherConfig(Exception):
    """The daemon answering runs another config file."""


class Conflict(Exception):
    """The running config changed between read and write."""


def _url_for(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "::"):           # listening everywhere: loopback reaches it
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _generated_token(config_path: str) -> str | None:
    """The token the daemon generated beside the config, if this user may read it."""
    try:
        return auth.read_token_file(auth.token_path(config_path))
    except (OSError, configfile.ConfigError):
        return None


class ConfigApi:
    def __init__(self, url: str, token: str | None, config_path: str):
        self.url = url.rstrip("/")
        self.token = token
        self.config_path = os.path.abspath(config_path)

    @classmethod
    def discover(cls, config_path: str) -> "ConfigApi | None":
        """The API of the daemon running on `config_path` (from $LBFAST_API_URL or the file's
        api.listen), or None when no daemon answers there."""
        url = os.environ.get(URL_ENV)
        token = os.environ.get(TOKEN_ENV)
        if not url:
            try:
                doc = orjson.loads(Path(config_path).read_bytes())
                api = doc.get("api") or {}
            except (OSError, orjson.JSONDecodeError, AttributeError):
                return None
            if not isinstance(api, dict) or not isinstance(api.get("listen"), str):
                return None
            url = _url_for(api["listen"])
            token = token or api.get("token")
        token = token or _generated_token(config_path)
        client = cls(url, token, config_path)
        try:
            client.get()
        except urllib.error.HTTPError as e:
            if e.code != 401:
                raise ApiUnavailable(f"the daemon's API at {url} answered {e.code} ({e.reason})") from None
            if token:
                raise ApiUnavailable(f"the daemon's API at {url} refused the token (from ${TOKEN_ENV}, api.token "
                                     f"or {auth.token_path(config_path)})") from None
            raise ApiUnavailable(f"the daemon's API at {url} needs a token: set ${TOKEN_ENV}, or run as a user "
                                 f"who can read {auth.token_path(config_path)}") from None
        except (urllib.error.URLError, OSError):
            return None                     # no daemon answers: the file is the config
        except OtherConfig:
            return None                     # a daemon, but of another file
        return client

    def _request(self, method: str, body: bytes | None = None, headers: dict | None = None):
        h = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(f"{self.url}/lbfast/v1/config", data=body, method=method, headers=h)
        return urllib.request.urlopen(req, timeout=30)

    def get(self) -> tuple[Config, str]:
        with self._request("GET") as r:
            served = r.headers.get("X-Lbfast-Config")
            if served and os.path.abspath(served) != self.config_path:
                raise OtherConfig(served)
            return configfile.parse(r.read()), r.headers.get("ETag", "*")

    def read(self) -> tuple[Config, str]:
        """get() for callers that found the API already: any failure is ApiUnavailable."""
        try:
            return self.get()
        except (urllib.error.URLError, OSError, OtherConfig) as e:
            raise ApiUnavailable(f"the daemon's API at {self.url} failed: {e}") from None

    def put(self, config: Config, etag: str) -> Config:
        """Raises Conflict (re-read and retry) or configfile.ConfigError (refused)."""
        try:
            with self._request("PUT", configfile.dump(config), {"If-Match": etag}) as r:
                return configfile.parse(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 412:
                raise Conflict() from None
            if e.code != 400:
                raise ApiUnavailable(f"the daemon's API at {self.url} answered {e.code} ({e.reason})") from None
            try:
                doc = orjson.loads(e.read())
            except orjson.JSONDecodeError:
                doc = {}
            problems = [(p.get("field") or "", p.get("message", "")) for p in doc.get("problems", [])]
            raise configfile.ConfigError(problems or [("", f"the daemon answered {e.code}")]) from None
