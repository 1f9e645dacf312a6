"""The API tests' harness: a real `lbfast run` with its API on a free loopback port
(tests.lbrun.Daemon) and a small HTTP client that speaks both dialects' auth."""
import itertools
import os
from pathlib import Path

import orjson
import requests

from control.api import auth
from tests.lbrun import Daemon, free_port, wait_for

TOKEN = "test-token-0123456789"
POOL = "127.0.0.64/26"          # the README's pool
_pools = itertools.count()


def private_pool() -> str:
    """A /26 on loopback of this test process alone: tests running at the same time on this
    host (other modules, other checkouts) never share a VIP:port."""
    n = next(_pools)
    return f"127.{100 + os.getpid() % 100}.{(os.getpid() // 100 + n) % 250}.64/26"
SCW = "/lb/v1/zones/fr-par-1"
SCW_REGION = "/lb/v1/regions/fr-par"


class Api:
    def __init__(self, base: str, token: str = TOKEN):
        self.base = base
        self.token = token
        self.session = requests.Session()

    def request(self, method: str, path: str, *, json=None, headers=None, timeout: float = 20.0,
                **kw) -> requests.Response:
        return self.session.request(method, self.base + path, json=json, headers=headers or {},
                                    timeout=timeout, **kw)

    def linode(self, method: str, path: str, json=None, token: str | None = None, headers=None, **kw):
        h = {"Authorization": f"Bearer {token or self.token}", "Content-Type": "application/json",
             **(headers or {})}
        return self.request(method, path, json=json, headers=h, **kw)

    def scw(self, method: str, path: str, json=None, token: str | None = None, prefix: str = SCW, **kw):
        h = {"X-Auth-Token": token or self.token, "Content-Type": "application/json"}
        return self.request(method, prefix + path, json=json, headers=h, **kw)

    def ok(self, response: requests.Response, status: int = 200):
        assert response.status_code == status, (response.status_code, response.text)
        return response.json() if response.content else None


class ApiDaemon:
    """A daemon serving the API; `restart()` stops it and starts a new one on the same files."""

    def __init__(self, tmp: Path, config: dict | None = None, token: str = TOKEN, pool: str | None = None,
                 file_token: str | None = None):
        """`token` goes to $LBFAST_API_TOKEN, `file_token` to api.token; with neither the
        client uses the token the daemon generated beside the config."""
        self.tmp = Path(tmp)
        self.port = free_port()
        self.token = token
        api = {"listen": f"127.0.0.1:{self.port}", **({"token": file_token} if file_token else {})}
        doc = {"api": api, "ip_pool": [pool or private_pool()], **(config or {})}
        self.daemon = self._start(doc)
        self.api = Api(f"http://127.0.0.1:{self.port}",
                       file_token or token or auth.read_token_file(auth.token_path(self.config_path)))

    def _start(self, doc: dict) -> Daemon:
        d = Daemon(self.tmp, doc, env={"LBFAST_API_TOKEN": self.token})
        wait_for(lambda: self._healthy(), timeout=20, what="API /healthz")
        return d

    def _healthy(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    @property
    def config_path(self) -> Path:
        return self.daemon.path

    def file(self) -> dict:
        return orjson.loads(self.config_path.read_bytes())

    def restart(self) -> None:
        doc = self.file()
        self.daemon.close()
        self.daemon = self._start(doc)

    def close(self) -> None:
        self.daemon.close()
