"""What the data planes and health checks observe, read for the API's views and /metrics:
per frontend and per server counters, server health, and per load balancer samples of
those counters over time (Linode's /stats series)."""
import asyncio
import time
from collections import deque
from dataclasses import dataclass

from control.model import Backend, LoadBalancer, Server
from lbfast.enums import CheckType, Health



def server_key(backend: Backend, server: Server) -> str:
    port = server.port or backend.forward_port
    return f"[{server.address}]:{port}" if ":" in server.address else f"{server.address}:{port}"


def _add(into: dict, key, row: dict, fields: tuple[str, ...]) -> None:
    acc = into.setdefault(key, {f: 0 for f in fields})
    for f in fields:
        value = row.get(f)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            acc[f] += value
    if "up" in row:
        acc["up"] = bool(row["up"]) and acc.get("up", True)


FRONTEND_COUNTERS = ("active", "total", "bytes_in", "bytes_out", "refused")
SERVER_COUNTERS = ("active", "total", "bytes_in", "bytes_out", "failed")


@dataclass
class ServerView:
    health: str                     # "UP" | "DOWN" | "unknown" (not served by any data plane yet)
    checked: bool                   # an active check runs
    changed_at: float | None        # epoch seconds of the last UP/DOWN change
    counters: dict


class Observed:
    """One snapshot of counters and health (taken per request, so a response adds up)."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.frontends: dict[int, dict] = {}
        self.servers: dict[tuple[int, str], dict] = {}
        try:
            st = daemon.dataplane_stats()
        except Exception:           # a data plane going away mid-request is not the API's failure
            st = {}
        for row in st.get("frontends", []):
            _add(self.frontends, row["id"], row, FRONTEND_COUNTERS)
        for bid, rows in st.get("backends", {}).items():
            for row in rows:
                _add(self.servers, (int(bid), row["key"]), row, SERVER_COUNTERS)
        monitor = getattr(daemon, "health", None)
        try:
            self.health = monitor.status() if monitor is not None and callable(getattr(monitor, "status", None)) else {}
        except Exception:
            self.health = {}

    def frontend(self, frontend_id: int) -> dict:
        return self.frontends.get(frontend_id) or {f: 0 for f in FRONTEND_COUNTERS}

    def lb_totals(self, lb: LoadBalancer) -> dict:
        out = {f: 0 for f in FRONTEND_COUNTERS}
        for f in lb.frontends:
            for k, v in self.frontend(f.id).items():
                if k in out:
                    out[k] += v
        return out

    def server(self, backend: Backend, server: Server) -> ServerView:
        key = (backend.id, server_key(backend, server))
        counters = self.servers.get(key)
        status = self.health.get(key)
        checked = backend.health_check.type != CheckType.NONE
        if status is not None and getattr(status, "health", None) in (Health.UP, Health.DOWN):
            health = "UP" if status.health == Health.UP else "DOWN"
        elif counters is not None:
            health = "UP" if counters.get("up", True) else "DOWN"
        elif status is not None or not checked:
            health = "UP"       # unchecked: usable
        else:
            health = "unknown"  # checked, and no verdict seen yet
        changed = getattr(status, "last_change", None) if status is not None else None
        return ServerView(health=health, checked=checked, changed_at=changed,
                          counters=counters or {f: 0 for f in SERVER_COUNTERS})


class TrafficHistory:
    """Samples of each load balancer's counters (new connections, bytes in/out), every
    `interval` seconds for `keep` samples; rates between samples make Linode's series."""

    def __init__(self, interval: float = 60.0, keep: int = 1440):
        self.interval = interval
        self.samples: deque[tuple[float, dict[int, tuple[int, int, int]]]] = deque(maxlen=keep)
        self.task: asyncio.Task | None = None

    @staticmethod
    def totals(daemon) -> dict[int, tuple[int, int, int]]:
        seen = Observed(daemon)
        out = {}
        for lb in daemon.config.lbs if daemon.config else []:
            t = seen.lb_totals(lb)
            out[lb.id] = (t["total"], t["bytes_in"], t["bytes_out"])
        return out

    def sample(self, daemon) -> None:
        self.samples.append((time.time(), self.totals(daemon)))

    def start(self, daemon) -> None:
        async def loop():
            while True:
                self.sample(daemon)
                await asyncio.sleep(self.interval)
        self.task = asyncio.ensure_future(loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def series(self, daemon, lb: LoadBalancer) -> dict:
        """{"connections": [[ms, conn/s]], "traffic": {"in": [[ms, bit/s]], "out": [...]}}, the
        last point reaching up to now."""
        points = [(ts, t.get(lb.id)) for ts, t in self.samples]
        points.append((time.time(), self.totals(daemon).get(lb.id)))
        conns, t_in, t_out = [], [], []
        # counters start at zero when the load balancer (or the daemon) started
        start = max(lb.created_at.timestamp() if lb.created_at else 0.0, getattr(daemon, "started_at", 0.0))
        prev = (start, (0, 0, 0))
        for ts, cur in points:
            if cur is None:
                continue
            if ts > prev[0]:
                dt = ts - prev[0]
                # counters restart when a listener is re-created: never a negative rate
                rate = [max(0, c - p) / dt for c, p in zip(cur, prev[1])]
                stamp = int(ts * 1000)
                conns.append([stamp, round(rate[0], 3)])
                t_in.append([stamp, round(rate[1] * 8, 3)])
                t_out.append([stamp, round(rate[2] * 8, 3)])
            prev = (ts, cur)
        return {"connections": conns, "traffic": {"in": t_in, "out": t_out}}
