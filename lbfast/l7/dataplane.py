"""The daemon's side of the L7 data plane: it binds the SO_REUSEPORT listeners (one per
worker and frontend, so bind errors surface before anything changes and listeners outlive
worker restarts), starts the worker processes when the first L7 frontend appears,
forwards apply / health / session-close to every worker, restarts a worker that dies,
and sums their statistics."""
import asyncio
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lbfast.enums import Protocol
from lbfast.l7 import _tickets
from lbfast.l7.channel import MAX_FDS, Channel
from lbfast.l7.limits import L7Limits
from lbfast.l7.proxy import cipher_suite, handles
from lbfast.listeners import listening_socket
from lbfast.l7.tls import TlsFrontend
from lbfast.spec import FrontendSpec

log = logging.getLogger("lbfast.l7")

CALL_TIMEOUT_S = 15.0
STATS_EVERY_S = 1.0
RESTART_DELAY_S = 0.5
TICKET_KEY_LIFE_S = 3600.0
# The directory that holds the lbfast package (a checkout or site-packages): workers import
# the same lbfast as the daemon, whatever the daemon's cwd and PYTHONPATH.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class WorkerError(OSError):
    """A worker that cannot be started or does not answer (the daemon reports OSErrors)."""


class WorkerHandle:
    """One worker process and its channel."""

    def __init__(self, index: int, dataplane: "L7Dataplane"):
        self.index = index
        self.dataplane = dataplane
        self.proc: asyncio.subprocess.Process | None = None
        self.channel: Channel | None = None
        self.pending: dict[int, asyncio.Future] = {}
        self.next_id = 0
        self.keys: set[tuple] = set()       # listen keys whose socket this worker holds
        self.stats: dict | None = None
        self.supervisor: asyncio.Task | None = None

    async def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lbfast.l7.worker", "--channel", str(child.fileno()),
                pass_fds=(child.fileno(),), env=env, stdin=asyncio.subprocess.DEVNULL)
        finally:
            child.close()
        self.keys = set()
        self.stats = None
        self.channel = Channel(parent, self.received, self.lost)
        dp = self.dataplane
        self.send({"cmd": "init", "secret": dp.secret, "limits": dp.limits, "ticket_keys": dp.ticket_keys,
                   "log_level": logging.getLogger("lbfast").getEffectiveLevel()})

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def send(self, msg: dict, fds: list[int] = ()) -> None:
        if self.channel is not None and not self.channel.closed:
            self.channel.send(msg, fds)

    async def call(self, msg: dict, fds: list[int] = (), timeout: float = CALL_TIMEOUT_S):
        if self.channel is None or self.channel.closed:
            raise WorkerError(f"worker {self.index} is not running")
        self.next_id += 1
        msg["id"] = self.next_id
        fut = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        try:
            self.channel.send(msg, fds)
            reply = await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(msg["id"], None)
        if not reply["ok"]:
            raise WorkerError(reply["error"])
        return reply["result"]

    def received(self, msg: dict, fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)
        if "re" in msg:
            fut = self.pending.get(msg["re"])
            if fut is not None and not fut.done():
                fut.set_result(msg)
        elif msg.get("event") == "passive":
            self.dataplane.passive_failure(msg["backend_id"], msg["server_key"], msg["reason"])
        elif msg.get("event") == "passive_ok" and self.dataplane.on_passive_ok is not None:
            self.dataplane.on_passive_ok(msg["backend_id"], msg["server_key"], msg["reason"])

    def lost(self) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(WorkerError(f"worker {self.index} went away"))

    async def stop(self, grace_s: float) -> None:
        if self.proc is None:
            return
        self.send({"cmd": "stop", "grace_s": grace_s})
        try:
            await asyncio.wait_for(self.proc.wait(), grace_s + 2)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self.channel is not None:
            self.channel.close()


class L7Dataplane:
    """Same interface as the L4 proxy: `apply(frontends)` takes the frontends it handles
    (http, https, and tcp whose backend sends PROXY protocol)."""

    name = "l7"

    def __init__(self, workers: int = 0, secret: bytes | None = None, limits: L7Limits = L7Limits()):
        self.workers_wanted = workers
        self.secret = secret or secrets.token_bytes(32)     # signs sticky cookies (the daemon's from its config)
        # TLS tickets resume on any worker: (previous, current) key, a restarted worker gets both
        self.ticket_keys = (secrets.token_bytes(_tickets.KEY_BYTES),)
        self.ticket_rotation: asyncio.Task | None = None
        self.limits = limits
        self.frontends: dict[tuple, FrontendSpec] = {}
        self.sockets: dict[tuple, list[socket.socket]] = {}
        self.health: dict[tuple[int, str], bool] = {}
        self.workers: list[WorkerHandle] = []
        self.stopping = False
        self.stats_task: asyncio.Task | None = None
        self._tls_ok: set = set()
        self.on_passive_failure: Callable[[int, str, str], None] | None = None
        self.on_passive_ok: Callable[[int, str, str], None] | None = None    # answered well after failing

    handles = staticmethod(handles)

    def worker_count(self) -> int:
        return self.workers_wanted or os.cpu_count() or 1

    # -- apply ------------------------------------------------------------------------
    async def apply(self, frontends: Sequence[FrontendSpec]) -> None:
        """Check certificates and bind new listeners first: on an error nothing changes and
        it is raised (OSError, ssl.SSLError, ValueError). Then every worker takes the
        frontends; listeners that stay are never closed."""
        wanted = {f.listen_key: f for f in frontends if handles(f)}
        for f in wanted.values():
            if f.protocol == Protocol.HTTPS:
                key = (tuple((c.chain_pem, c.key_pem) for c in f.certificates), cipher_suite(f))
                if key not in self._tls_ok:
                    TlsFrontend(f.certificates, cipher_suite(f))
                    self._tls_ok.add(key)
        n = len(self.workers) or self.worker_count()
        new: dict[tuple, list[socket.socket]] = {}
        try:
            for key, f in wanted.items():
                if key not in self.sockets:
                    new[key] = []
                    for _ in range(n):
                        new[key].append(listening_socket(f.address, f.port, reuseport=True, name=f.name))
        except OSError:
            for socks in new.values():
                for s in socks:
                    s.close()
            raise
        self.sockets.update(new)
        self.frontends = wanted
        backends = {(f.backend.id, s.key) for f in wanted.values() for s in f.backend.servers}
        self.health = {k: v for k, v in self.health.items() if k in backends}
        if wanted:
            if not self.workers:
                await self._start_workers(n)
            else:
                results = await asyncio.gather(*(self._apply_worker(w) for w in self.workers),
                                               return_exceptions=True)
                for w, result in zip(self.workers, results):
                    if isinstance(result, BaseException):
                        # its supervisor restarts it with the config just applied
                        log.error("L7 worker %d did not take the config (%s): restarting it", w.index, result)
                        if w.proc is not None and w.proc.returncode is None:
                            w.proc.kill()
        for key in set(self.sockets) - set(wanted):
            for s in self.sockets.pop(key):
                s.close()
        if not wanted and self.workers:
            await self._stop_workers()

    async def _start_workers(self, n: int) -> None:
        self.stopping = False
        self.workers = [WorkerHandle(i, self) for i in range(n)]
        await asyncio.gather(*(self._run_worker(w) for w in self.workers))
        for w in self.workers:
            w.supervisor = asyncio.create_task(self._supervise(w))
        self.stats_task = asyncio.create_task(self._poll_stats())
        self.ticket_rotation = asyncio.create_task(self._rotate_ticket_keys())

    async def _run_worker(self, w: WorkerHandle) -> None:
        await w.start()
        await self._apply_worker(w)
        if self.health:
            w.send({"cmd": "health", "changes": [(b, k, up) for (b, k), up in self.health.items()]})
        log.info("L7 worker %d running (pid %s)", w.index, w.pid)

    async def _apply_worker(self, w: WorkerHandle) -> None:
        missing = [k for k in self.frontends if k not in w.keys]
        for i in range(0, len(missing), MAX_FDS):
            part = missing[i:i + MAX_FDS]
            fds = [self.sockets[k][w.index].fileno() for k in part]
            await w.call({"cmd": "noop" if i + MAX_FDS < len(missing) else "apply",
                          "frontends": list(self.frontends.values()), "fd_keys": part}, fds)
        if not missing:
            await w.call({"cmd": "apply", "frontends": list(self.frontends.values())})
        w.keys = set(self.frontends)

    async def _supervise(self, w: WorkerHandle) -> None:
        while not self.stopping:
            code = await w.proc.wait()
            if self.stopping:
                return
            log.error("L7 worker %d (pid %s) exited with %s: restarting it", w.index, w.pid, code)
            if w.channel is not None:
                w.channel.close()
            await asyncio.sleep(RESTART_DELAY_S)
            if self.stopping:
                return
            try:
                await self._run_worker(w)
            except (WorkerError, OSError, TimeoutError) as e:
                log.error("L7 worker %d did not restart: %s", w.index, e)

    async def _stop_workers(self) -> None:
        self.stopping = True
        for task in (self.stats_task, self.ticket_rotation):
            if task is not None:
                task.cancel()
        self.stats_task = self.ticket_rotation = None
        await asyncio.gather(*(w.stop(self.limits.drain_ms / 1000) for w in self.workers),
                             return_exceptions=True)
        for w in self.workers:
            if w.supervisor is not None:
                w.supervisor.cancel()
        self.workers = []

    def use_secret(self, secret: bytes) -> None:
        """The cookie secret of the config; workers take it before the next apply."""
        if secret != self.secret:
            self.secret = secret
            for w in self.workers:
                w.send({"cmd": "secret", "secret": secret})

    async def _rotate_ticket_keys(self) -> None:
        while True:
            await asyncio.sleep(TICKET_KEY_LIFE_S)
            self.rotate_ticket_keys()

    def rotate_ticket_keys(self) -> None:
        """A new session-ticket key (every TICKET_KEY_LIFE_S): a stolen key opens at most two
        periods of recorded traffic; tickets under the previous key still resume, once."""
        self.ticket_keys = (self.ticket_keys[-1], secrets.token_bytes(_tickets.KEY_BYTES))
        for w in self.workers:
            w.send({"cmd": "ticket_keys", "keys": self.ticket_keys[-1]})
        log.info("TLS session-ticket keys rotated")

    # -- health and sessions -------------------------------------------------------------
    def set_server_health(self, backend_id: int, server_key: str, up: bool) -> None:
        self.health[(backend_id, server_key)] = up
        for w in self.workers:
            w.send({"cmd": "health", "changes": [(backend_id, server_key, up)]})

    def close_server_sessions(self, backend_id: int, server_key: str) -> int:
        """Asks every worker to reset that server's sessions (they answer asynchronously:
        the count returned is 0)."""
        for w in self.workers:
            w.send({"cmd": "close_sessions", "backend_id": backend_id, "server_key": server_key})
        return 0

    def passive_failure(self, backend_id: int, server_key: str, reason: str) -> None:
        log.warning("passive check: %s of backend %d failed: %s", server_key, backend_id, reason)
        if self.on_passive_failure is not None:
            self.on_passive_failure(backend_id, server_key, reason)

    # -- statistics ------------------------------------------------------------------------
    async def _poll_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_EVERY_S)
            await self.refresh_stats()

    async def refresh_stats(self) -> dict:
        async def one(w: WorkerHandle):
            try:
                w.stats = await w.call({"cmd": "stats"}, timeout=5)
            except (WorkerError, TimeoutError):
                pass
        await asyncio.gather(*(one(w) for w in self.workers))
        return self.stats()

    def stats(self) -> dict:
        """Sums over the workers (as of their last report, at most a second old)."""
        frontends: dict[tuple, dict] = {}
        backends: dict[str, dict[str, dict]] = {}
        conns = {"idle": 0, "opened": 0, "reused": 0, "sessions": 0}
        for w in self.workers:
            if not w.stats:
                continue
            for f in w.stats["frontends"]:
                _add(frontends.setdefault((f["address"], f["port"]), {}), f)
            for bid, servers in w.stats["backends"].items():
                by_key = backends.setdefault(bid, {})
                for s in servers:
                    _add(by_key.setdefault(s["key"], {}), s)
            for k in conns:
                conns[k] += w.stats["connections"][k]
        for f in self.frontends.values():
            for s in f.backend.servers:
                entry = backends.get(str(f.backend.id), {}).get(s.key)
                if entry is not None:
                    entry["up"] = self.health.get((f.backend.id, s.key), True)
        return {"frontends": list(frontends.values()),
                "backends": {bid: list(v.values()) for bid, v in backends.items()},
                "connections": conns, "workers": [w.pid for w in self.workers]}

    def frontend_status(self) -> list[dict]:
        """Rows for the daemon's status: one per L7 frontend."""
        stats = self.stats()
        active = {(f["address"], f["port"]): f["active"] for f in stats["frontends"]}
        return [f.status_row(self.name, active.get((f.address, f.port), 0),
                             stats["backends"].get(str(f.backend.id), []))
                for f in self.frontends.values()]

    async def close(self) -> None:
        await self._stop_workers()
        for socks in self.sockets.values():
            for s in socks:
                s.close()
        self.sockets.clear()
        self.frontends = {}


IDENTITY = frozenset(("id", "port", "address", "name", "protocol", "key", "mode", "up"))


def _add(into: dict, item: dict) -> None:
    for k, v in item.items():
        if k in IDENTITY or isinstance(v, bool) or not isinstance(v, (int, dict)):
            into.setdefault(k, v)
        elif isinstance(v, dict):
            _add(into.setdefault(k, {}), v)
        else:
            into[k] = into.get(k, 0) + v
