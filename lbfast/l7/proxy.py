"""The L7 proxy of one worker process: listeners (sockets handed over by the daemon, or
bound here when run in-process), pools and cookie routes per backend, TLS contexts per
frontend, the shared pool of idle server connections, and every open session."""
import asyncio
import logging
import socket
from collections.abc import Mapping, Sequence

from lbfast.enums import Protocol, ProxyProtocol, Stickiness
from lbfast.admission import ConnectionQueue, DescriptorReserve, close_servers
from lbfast.l7 import _tickets
from lbfast.l7._cookie import CookieRouter
from lbfast.l7.http_session import HttpSession
from lbfast.l7.limits import L7Limits
from lbfast.l7.tls import TlsFrontend
from lbfast import l4proxy
from lbfast.listeners import listening_socket
from lbfast.passive import PassiveReports, failed_connect, failed_status
from lbfast.routing import Pool, ServerState
from lbfast.spec import BackendSpec, FrontendSpec

log = logging.getLogger("lbfast.l7")



def handles(spec: FrontendSpec) -> bool:
    """http/https frontends, and TCP frontends whose backend wants PROXY protocol."""
    if spec.protocol in (Protocol.HTTP, Protocol.HTTPS):
        return True
    return spec.protocol == Protocol.TCP and spec.backend.proxy_protocol != ProxyProtocol.NONE


def cipher_suite(spec: FrontendSpec):
    return getattr(spec, "cipher_suite", None) or spec.backend.cipher_suite


class FrontendState:
    __slots__ = ("spec", "pool", "router", "tls", "server", "server_tls", "queue", "active", "total",
                 "requests", "bytes_in", "bytes_out", "bad_requests", "responses", "errors",
                 "refused", "timeouts")

    def __init__(self, spec: FrontendSpec):
        self.spec = spec
        self.pool: Pool | None = None
        self.router: CookieRouter | None = None
        self.tls: TlsFrontend | None = None
        self.server: asyncio.AbstractServer | None = None
        self.server_tls = False
        self.queue = ConnectionQueue()      # connections beyond max_connections
        self.active = 0
        self.total = 0
        self.requests = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.bad_requests = 0
        self.responses = [0, 0, 0, 0, 0, 0]    # index = status // 100 (1..5)
        self.errors = 0         # 5xx pages written by the proxy itself
        self.refused = 0        # no usable server
        self.timeouts = 0

    def stats(self) -> dict:
        r = self.responses
        return {"id": self.spec.id, "name": self.spec.name, "address": self.spec.address,
                "port": self.spec.port, "protocol": str(self.spec.protocol),
                "active": self.active, "total": self.total, "requests": self.requests,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "bad_requests": self.bad_requests, "errors": self.errors, "refused": self.refused,
                "timeouts": self.timeouts, "queued": len(self.queue.waiting),
                "responses": {"1xx": r[1], "2xx": r[2], "3xx": r[3], "4xx": r[4], "5xx": r[5]}}


class L7Proxy:
    name = "l7"

    def __init__(self, secret: bytes, limits: L7Limits = L7Limits(), ticket_keys: Sequence[bytes] = ()):
        from lbfast.l7.upstream import ConnPool
        self.secret = secret
        self.ticket_keys = bool(ticket_keys)    # the daemon's keys: tickets resume on any worker
        for key in ticket_keys:                 # oldest first
            _tickets.rotate(key)
        self.limits = limits
        self.loop: asyncio.AbstractEventLoop | None = None
        self.frontends: dict[tuple, FrontendState] = {}
        self.listen_socks: dict[tuple, socket.socket] = {}
        self.pools: dict[int, Pool] = {}
        self.routers: dict[tuple[int, bool], CookieRouter] = {}
        self.conns = ConnPool(limits.max_idle_per_server, limits.idle_server_ms / 1000)
        self.sessions: set = set()
        self.reserve = DescriptorReserve(self._pause_accepting, self._resume_accepting)
        self.sweeper: asyncio.TimerHandle | None = None
        self.passive = PassiveReports()     # check_passive: hooks (backend_id, server_key, reason)

    handles = staticmethod(handles)

    async def apply(self, frontends: Sequence[FrontendSpec],
                    sockets: Mapping[tuple, socket.socket] | None = None) -> None:
        """Take the frontends this proxy handles. New listeners come from `sockets` (by
        listen key) or are bound here; if one cannot be bound or a certificate cannot be
        loaded, nothing changes and the error is raised. Listeners that stay keep
        accepting; sessions of removed frontends finish."""
        self.loop = asyncio.get_running_loop()
        self.reserve.refresh()
        wanted = {f.listen_key: f for f in frontends if handles(f)}
        new_socks: dict[tuple, socket.socket] = {}
        tls: dict[tuple, TlsFrontend] = {}
        try:
            for key, f in wanted.items():
                if key not in self.listen_socks:
                    given = (sockets or {}).get(key)
                    new_socks[key] = given if given is not None else listening_socket(
                        f.address, f.port, reuseport=True, name=f.name)
                if f.protocol == Protocol.HTTPS:
                    state = self.frontends.get(key)
                    if state is not None and state.tls is not None:
                        state.tls.update(f.certificates, cipher_suite(f))
                        tls[key] = state.tls
                    else:
                        tls[key] = TlsFrontend(f.certificates, cipher_suite(f), self.ticket_keys)
        except (OSError, ValueError):
            for key, sock in new_socks.items():
                if sockets is None or sockets.get(key) is not sock:
                    sock.close()
            raise
        self.listen_socks.update(new_socks)
        pools: dict[int, Pool] = {}
        for f in wanted.values():
            bid = f.backend.id
            pool = pools.get(bid) or self.pools.get(bid)
            if pool is None:
                pool = Pool(f.backend)
            elif pool.spec != f.backend:
                gone = set(pool.servers)
                pool.update(f.backend)
                for key in gone - set(pool.servers):
                    self.conns.drop(bid, key)
            pools[bid] = pool
        for bid in set(self.pools) - set(pools):
            self.conns.drop(bid)
        self.pools = pools
        routers: dict[tuple[int, bool], CookieRouter] = {}
        for f in wanted.values():
            if f.backend.stickiness != Stickiness.COOKIE or f.protocol == Protocol.TCP:
                continue
            rkey = (f.backend.id, f.protocol == Protocol.HTTPS)
            if rkey not in routers:
                router = self.routers.get(rkey)
                if (router is None or router.name != f.backend.sticky_cookie_name.encode()
                        or router.max_age != f.backend.cookie_max_age_s):
                    router = CookieRouter(self.secret, f.backend.id, f.backend.sticky_cookie_name, rkey[1],
                                          f.backend.cookie_max_age_s)
                router.update(pools[f.backend.id].servers.values())
                routers[rkey] = router
        self.routers = routers
        for key in set(self.frontends) - set(wanted):
            state = self.frontends.pop(key)
            if state.server is not None:
                state.server.close()
            self.listen_socks.pop(key).close()
        for key, f in wanted.items():
            state = self.frontends.get(key) or FrontendState(f)
            state.spec = f
            state.pool = pools[f.backend.id]
            state.router = (routers.get((f.backend.id, f.protocol == Protocol.HTTPS))
                            if f.protocol != Protocol.TCP else None)
            state.tls = tls.get(key)
            want_tls = state.tls is not None
            if (state.server is None and not self.reserve.paused) or state.server_tls != want_tls:
                if state.server is not None:
                    state.server.close()
                state.server = await self._serve(state, self.listen_socks[key])
                state.server_tls = want_tls
            self.frontends[key] = state
        if self.sweeper is None:
            self.sweeper = self.loop.call_later(1.0, self._sweep)

    async def _serve(self, state: FrontendState, sock: socket.socket) -> asyncio.AbstractServer:
        def factory():
            if state.spec.protocol == Protocol.TCP:     # TCP with PROXY protocol: the L4 relay
                return l4proxy.ClientProtocol(l4proxy.Session(self, state, state.pool))
            return HttpSession(self, state)
        kw = {}
        if state.tls is not None:
            kw = {"ssl": state.tls.context,
                  "ssl_handshake_timeout": min(state.spec.timeout_client_ms, self.limits.head_timeout_ms) / 1000}
        return await self.loop.create_server(factory, sock=sock.dup(), backlog=4096, **kw)

    def _pause_accepting(self) -> None:
        close_servers(self.frontends)

    def _resume_accepting(self) -> None:
        async def serve(key: tuple, state: FrontendState) -> None:
            if state.server is None and not self.reserve.paused and self.frontends.get(key) is state:
                state.server = await self._serve(state, self.listen_socks[key])
                state.server_tls = state.tls is not None
        for key, state in self.frontends.items():
            self.loop.create_task(serve(key, state))

    def _sweep(self) -> None:
        self.conns.sweep()
        self.sweeper = self.loop.call_later(1.0, self._sweep)

    # -- control --------------------------------------------------------------------
    def set_server_health(self, backend_id: int, server_key: str, up: bool) -> None:
        pool = self.pools.get(backend_id)
        if pool is not None:
            pool.set_health(server_key, up)
            if not up:
                self.conns.drop(backend_id, server_key)

    def close_server_sessions(self, backend_id: int, server_key: str) -> int:
        """on_marked_down_action shutdown_sessions: reset client connections served by it."""
        doomed = [s for s in self.sessions
                  if s.pool.spec.id == backend_id and s.server_key() == server_key]
        for s in doomed:
            s.abort()
        self.conns.drop(backend_id, server_key)
        return len(doomed)

    def connect_failed(self, backend: BackendSpec, server: ServerState, exc: Exception) -> None:
        reason = str(exc) or "connect timeout"
        log.warning("connect to %s failed: %s", server.key, reason)
        if backend.health_check.passive and failed_connect(exc):
            self.passive.failure(backend.id, server.key, f"connect failed: {reason}")

    def use_secret(self, secret: bytes) -> None:
        """A new cookie secret (from the config): routers are made again by the next apply."""
        if secret != self.secret:
            self.secret = secret
            self.routers = {}

    @staticmethod
    def rotate_ticket_keys(key: bytes) -> None:
        """Tickets are issued under `key` from now on; the previous key still resumes."""
        _tickets.rotate(key)

    def passive_response(self, backend_id: int, server_key: str, status: int) -> None:
        """A response of a server whose backend has check_passive: a failure or a success."""
        if failed_status(status):
            self.passive.failure(backend_id, server_key, f"HTTP {status}")
        else:
            self.passive.ok(backend_id, server_key, f"HTTP {status}")

    def stats(self) -> dict:
        return {"frontends": [f.stats() for f in self.frontends.values()],
                "backends": {str(bid): p.stats() for bid, p in self.pools.items()},
                "connections": {"idle": self.conns.count(), "opened": self.conns.opened,
                                "reused": self.conns.reused, "sessions": len(self.sessions)}}

    async def drain(self, grace_s: float) -> None:
        """No new connections; open sessions get `grace_s` to finish."""
        self.reserve.stop()
        for state in self.frontends.values():
            if state.server is not None:
                state.server.close()
                state.server = None
        deadline = asyncio.get_running_loop().time() + grace_s
        while self.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.reserve.stop()
        if self.sweeper is not None:
            self.sweeper.cancel()
            self.sweeper = None
        for state in self.frontends.values():
            if state.server is not None:
                state.server.close()
        for s in list(self.sessions):
            s.abort()
        self.conns.drop()
        for sock in self.listen_socks.values():
            sock.close()
        self.listen_socks.clear()
        self.frontends.clear()
