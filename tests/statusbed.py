"""What the status view tests look at: a daemon (API with a token, userspace data planes)
with an L4 and an L7 frontend over real backend servers, one of which is stopped, and
bounded real traffic through both frontends."""
import socket
import threading
import time

import requests

from tests.lbrun import Backends, Daemon, ask, free_port, wait_for

TOKEN = "status-token-5f0c1e27a9"


class StatusBed:
    def __init__(self, tmp):
        self.backends = Backends(["a", "b", "c"])
        b = self.backends
        self.api_port, self.tcp_port, self.http_port = free_port(), free_port(), free_port()
        self.vip = "127.0.0.1"
        fast_check = {"interval_ms": 300, "timeout_ms": 2000, "attempts": 1, "rise": 1}
        config = {
            "api": {"listen": f"127.0.0.1:{self.api_port}", "token": TOKEN},
            "dataplane": {"mode": "userspace", "workers": 1},
            "lbs": [{"name": "shop", "vip": self.vip,
                     "backends": [
                         {"name": "db", "protocol": "tcp", "forward_port": 1,
                          "health_check": {"type": "tcp", **fast_check},
                          "servers": [{"address": "127.0.0.1", "port": b.echo["a"], "label": "db-a"},
                                      {"address": "127.0.0.1", "port": b.echo["c"], "label": "db-c",
                                       "mode": "backup"}]},
                         {"name": "web", "protocol": "http", "forward_port": 1,
                          "health_check": {"type": "http", **fast_check},
                          "servers": [{"address": "127.0.0.1", "port": b.http["a"], "label": "web-a"},
                                      {"address": "127.0.0.1", "port": b.http["b"], "label": "web-b"},
                                      {"address": "127.0.0.1", "port": b.http["c"], "label": "web-c",
                                       "mode": "drain"}]}],
                     "frontends": [{"name": "tcp-in", "port": self.tcp_port, "backend": "db"},
                                   {"name": "http-in", "port": self.http_port, "backend": "web"}]}]}
        self.stop_traffic = threading.Event()
        self.traffic = threading.Thread(target=self._traffic, daemon=True)
        self.daemon = Daemon(tmp, config)
        self.base = f"http://127.0.0.1:{self.api_port}"
        self._wait(self._ready, "every server checked UP")
        self.down_key = f"127.0.0.1:{b.http['b']}"
        self.backends.stop("b")                 # a real server process goes away
        self._wait(lambda: self.server("web", self.down_key)["state"] == "down", "web-b DOWN")
        self.traffic.start()

    def _wait(self, condition, what: str) -> None:
        try:
            wait_for(condition, timeout=30, what=what)
        except TimeoutError:
            states = {s["key"]: (s["state"], s["last_reason"]) for lb in self.view()["lbs"]
                      for b in lb["backends"] for s in b["servers"]}
            log = self.daemon.logtext()[-3000:]
            self.close()
            raise TimeoutError(f"timed out waiting for {what}: {states}\n{log}") from None

    def view(self) -> dict:
        return requests.get(self.base + "/status.json", auth=("", TOKEN), timeout=5).json()

    def server(self, backend: str, key: str) -> dict:
        for lb in self.view()["lbs"]:
            for b in lb["backends"]:
                for s in b["servers"]:
                    if b["name"] == backend and s["key"] == key:
                        return s
        raise KeyError(key)

    def _ready(self) -> bool:
        try:
            doc = self.view()
        except (requests.RequestException, ValueError):
            return False
        return all(s["state"] in ("up", "backup", "drain") for lb in doc["lbs"] for b in lb["backends"]
                   for s in b["servers"])

    def _traffic(self, limit_s: float = 60.0) -> None:
        """Requests and connections through both frontends, a few per second, for at most limit_s."""
        deadline = time.monotonic() + limit_s
        while not self.stop_traffic.is_set() and time.monotonic() < deadline:
            try:
                ask(self.vip, self.http_port)
                with socket.create_connection((self.vip, self.tcp_port), timeout=2) as s:
                    s.sendall(b"ping\n")
                    s.recv(64)
            except OSError:
                pass
            self.stop_traffic.wait(0.1)

    def close(self) -> None:
        self.stop_traffic.set()
        if self.traffic.is_alive():
            self.traffic.join(5)
        self.daemon.close()
        self.backends.close()
