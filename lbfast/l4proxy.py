"""Userspace L4 TCP proxy: the data plane that runs anywhere (no root, no bcc, no
interface), one listener per frontend VIP:port. Bytes go from one transport to the other
with asyncio's flow control and are never buffered beyond a socket's high-water mark."""
import asyncio
import logging
import socket
import time
from collections.abc import Sequence

from lbfast import proxy_header
from lbfast.access_log import ConnectionLog
from lbfast.enums import Protocol, ProxyProtocol
from lbfast.admission import ConnectionQueue, DescriptorReserve, close_servers
from lbfast.listeners import listening_socket
from lbfast.passive import PassiveReports, failed_connect
from lbfast.routing import Pool, ServerState, pools_for, switch_frontends
from lbfast.spec import BackendSpec, FrontendSpec

log = logging.getLogger("lbfast.l4")

L4_PROTOCOLS = (Protocol.TCP,)
class FrontendState:
    __slots__ = ("spec", "pool", "sock", "server", "queue", "active", "total", "bytes_in", "bytes_out",
                 "refused", "timeouts")

    def __init__(self, spec: FrontendSpec):
        self.spec = spec
        self.pool: Pool | None = None
        self.sock: socket.socket | None = None                   # the listener; kept while paused
        self.server: asyncio.base_events.Server | None = None   # accepting on a dup of it, or None
        self.queue = ConnectionQueue()      # connections beyond max_connections
        self.active = 0
        self.total = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.refused = 0        # no usable server, or every connect attempt failed
        self.timeouts = 0       # sessions closed for inactivity

    def stats(self) -> dict:
        return {"id": self.spec.id, "name": self.spec.name, "address": self.spec.address,
                "port": self.spec.port, "active": self.active, "total": self.total,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "refused": self.refused,
                "timeouts": self.timeouts, "queued": len(self.queue.waiting)}


class Session:
    """One proxied connection: the client transport, the server transport, and the
    inactivity timer that closes both."""

    def __init__(self, proxy: "L4Proxy", frontend: FrontendState, pool: Pool):
        self.proxy = proxy
        self.frontend = frontend
        self.pool = pool
        self.client: asyncio.Transport | None = None
        self.server: asyncio.Transport | None = None
        self.server_state: ServerState | None = None
        self.client_eof = False
        self.server_eof = False
        self.closed = False
        self.admitted = False               # counted in frontend.active (else queued or refused)
        self.connecting = True
        self.connect_expired = False
        self.task: asyncio.Task | None = None
        self.early: list[bytes] = []       # client bytes that arrived before the server was up
        self.last_activity = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self.log: ConnectionLog | None = None   # its access log line, when the frontend logs

    # -- life cycle -------------------------------------------------------------
    def client_connected(self, transport: asyncio.Transport) -> None:
        self.client = transport
        transport.pause_reading()           # client data waits in the kernel until a server is up
        self.proxy.sessions.add(self)
        spec = self.frontend.spec
        if spec.access_log is not None:
            peer = transport.get_extra_info("peername") or ("0.0.0.0", 0)
            self.log = ConnectionLog(spec.access_log, spec.name, (peer[0], peer[1]), self.proxy.loop.time())
        # The loop is passed around, never looked up: each asyncio.get_running_loop()
        # (ensure_future, asyncio.timeout) costs a getpid syscall, 13% of a short connection.
        loop = self.proxy.loop
        self.proxy.reserve.accepted(loop, transport)
        backend = self.pool.spec
        if self.frontend.queue.full(self.frontend.active, backend.max_connections):
            self.frontend.queue.wait(loop, self, backend.timeout_queue_ms / 1000)
            return
        self.admit()

    def admit(self) -> None:
        self.admitted = True
        self.frontend.active += 1
        self.frontend.total += 1
        self.task = self.proxy.loop.create_task(self._connect_server())

    def queue_expired(self) -> None:
        """No slot within timeout_queue: the connection is closed unserved."""
        self.frontend.refused += 1
        self.close(abort=True)

    async def _connect_server(self) -> None:
        peer = self.client.get_extra_info("peername")
        client_ip = peer[0] if peer else "0.0.0.0"
        backend = self.pool.spec
        tried: set[str] = set()
        loop = self.proxy.loop
        for _ in range(backend.retries + 1):
            state = self.pool.choose(client_ip, tried)
            if state is None or self.closed:
                break
            state.active += 1       # counted from the attempt so leastconn sees it at once
            self.server_state = state   # a server may speak first: data can arrive before the await returns
            deadline = loop.call_later(backend.timeout_connect_ms / 1000, self._connect_expired)
            try:
                await loop.create_connection(lambda: ServerProtocol(self), state.spec.address, state.spec.port)
            except asyncio.CancelledError:
                if not self.connect_expired:
                    raise
                self.connect_expired = False
                self.task.uncancel()
                e = TimeoutError("connect timeout")
            except OSError as err:
                e = err
            else:
                e = None
            finally:
                deadline.cancel()
            if e is not None:
                self.server_state = None
                state.active -= 1
                state.failed += 1
                tried.add(state.key)
                self.proxy.connect_failed(backend, state, e)
                continue
            state.total += 1
            if self.log is not None:
                self.log.connected_at = loop.time()
                self.log.server = state
            if self.proxy.passive.failing:
                self.proxy.passive.ok(backend.id, state.key, "connected")
            if self.closed:             # the client left while we connected
                self.server.close()
                return
            self.connecting = False
            if backend.proxy_protocol != ProxyProtocol.NONE:
                self.server.write(self.proxy_header())     # the first bytes the server reads
            if self.early:
                state.bytes_in += sum(map(len, self.early))
                self.server.writelines(self.early)
                self.early.clear()
            if self.client_eof:
                self.server.write_eof()
            self._arm_timer()
            self.client.resume_reading()
            return
        self.frontend.refused += 1
        if self.log is not None:
            self.log.state = "SC"
        self.close(abort=True)

    def proxy_header(self) -> bytes:
        client = self.client.get_extra_info("peername")
        local = self.client.get_extra_info("sockname")
        version = 1 if self.pool.spec.proxy_protocol == ProxyProtocol.V1 else 2
        return proxy_header.encode(version, client[0], client[1], local[0], local[1])

    def server_key(self) -> str | None:
        return self.server_state.key if self.server_state is not None else None

    def abort(self) -> None:
        self.close(abort=True)

    def _connect_expired(self) -> None:
        self.connect_expired = True
        self.task.cancel()

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer:
            self.timer.cancel()
        for t in (self.client, self.server):
            if t is not None:
                t.abort() if abort else t.close()
        if self.admitted:
            self.frontend.active -= 1
            self.frontend.queue.released(self.frontend.active, self.pool.spec.max_connections)
        else:
            self.frontend.queue.leave(self)
        if self.server_state is not None:
            self.server_state.active -= 1
        self.proxy.sessions.discard(self)
        if self.log is not None:
            self.log.write(self.proxy.loop, self.pool.spec.name, abort)
            self.log = None

    # -- inactivity ------------------------------------------------------------
    def _timeout_s(self) -> float:
        return min(self.frontend.spec.timeout_client_ms, self.pool.spec.timeout_server_ms) / 1000

    def _arm_timer(self) -> None:
        delay = self.last_activity + self._timeout_s() - time.monotonic()
        self.timer = self.proxy.loop.call_later(max(delay, 0.0), self._check_idle)

    def _check_idle(self) -> None:
        if self.closed:
            return
        if time.monotonic() - self.last_activity >= self._timeout_s():
            log.debug("closing idle session on %s", self.frontend.spec.name)
            self.frontend.timeouts += 1
            if self.log is not None:
                self.log.state = "cD"
            self.close(abort=True)
        else:
            self._arm_timer()

    # -- data both ways ----------------------------------------------------------
    def from_client(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        n = len(data)
        self.frontend.bytes_in += n
        if self.log is not None:
            self.log.bytes_in += n
        if self.server is None or self.connecting:
            # Reading is paused until the server is up, but a transport may deliver what
            # it had already read: keep it for the server.
            self.early.append(data)
            self.client.pause_reading()
            return
        self.server_state.bytes_in += n
        self.server.write(data)

    def from_server(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        n = len(data)
        self.frontend.bytes_out += n
        self.server_state.bytes_out += n
        if self.log is not None:
            self.log.bytes_out += n
        self.client.write(data)

    def client_eof_received(self) -> None:
        """Half-close: pass the FIN on and keep the other direction open."""
        self.client_eof = True
        if self.connecting:
            return                      # passed on once the server is up
        if self.server.can_write_eof():
            self.server.write_eof()
        if self.server_eof:
            self.close()

    def server_eof_received(self) -> None:
        self.server_eof = True
        if self.client.can_write_eof():
            self.client.write_eof()
        if self.client_eof:
            self.close()


class ClientProtocol(asyncio.Protocol):
    __slots__ = ("session",)

    def __init__(self, session: Session):
        self.session = session

    def connection_made(self, transport):
        self.session.client_connected(transport)

    def data_received(self, data):
        self.session.from_client(data)

    def eof_received(self):
        self.session.client_eof_received()
        return True

    def connection_lost(self, exc):
        self.session.close()

    def pause_writing(self):            # client is slow: stop reading the server
        if self.session.server:
            self.session.server.pause_reading()

    def resume_writing(self):
        if self.session.server:
            self.session.server.resume_reading()


class ServerProtocol(asyncio.Protocol):
    __slots__ = ("session",)

    def __init__(self, session: Session):
        self.session = session

    def connection_made(self, transport):
        self.session.server = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.session.from_server(data)

    def eof_received(self):
        self.session.server_eof_received()
        return True

    def connection_lost(self, exc):
        self.session.close()

    def pause_writing(self):            # server is slow: stop reading the client
        self.session.client.pause_reading()

    def resume_writing(self):
        if not self.session.client_eof:
            self.session.client.resume_reading()


class L4Proxy:
    """All userspace L4 listeners of one daemon. `apply` diffs frontend specs: listeners
    of unchanged VIP:port stay open, pools keep their server state."""

    name = "userspace"

    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None
        self.frontends: dict[tuple, FrontendState] = {}
        self.pools: dict[int, Pool] = {}
        self.sessions: set[Session] = set()
        self.reserve = DescriptorReserve(self._pause_accepting, self._resume_accepting)
        self.passive = PassiveReports()     # check_passive: failed and recovered connects

    @staticmethod
    def handles(spec: FrontendSpec) -> bool:
        # PROXY protocol must be written into the stream: the L7 data plane serves those
        return spec.protocol in L4_PROTOCOLS and spec.backend.proxy_protocol == ProxyProtocol.NONE

    async def apply(self, frontends: Sequence[FrontendSpec]) -> None:
        """Bind new listeners first (if one fails, nothing changes and the error is raised),
        then switch specs and close listeners that are gone; their sessions finish."""
        self.loop = asyncio.get_running_loop()
        self.reserve.refresh()
        wanted = {f.listen_key: f for f in frontends if self.handles(f)}
        pools = pools_for(wanted.values(), self.pools)
        added = {k: FrontendState(f) for k, f in wanted.items() if k not in self.frontends}
        for state in added.values():
            state.pool = pools[state.spec.backend.id]
        try:
            for state in added.values():
                state.sock = listening_socket(state.spec.address, state.spec.port, name=state.spec.name)
                state.server = await self._listen(state)
        except OSError:
            for state in added.values():
                self._stop_listening(state)
            raise
        for key in set(self.frontends) - set(wanted):
            self._stop_listening(self.frontends.pop(key))
        switch_frontends(self.frontends, wanted, added, pools)
        self.pools = pools

    async def _listen(self, state: FrontendState) -> asyncio.base_events.Server:
        # on a duplicate: pausing closes the server, the listener and its backlog stay
        return await asyncio.get_running_loop().create_server(
            lambda: ClientProtocol(Session(self, state, state.pool)), sock=state.sock.dup())

    @staticmethod
    def _stop_listening(state: FrontendState) -> None:
        if state.server is not None:
            state.server.close()
            state.server = None
        if state.sock is not None:
            state.sock.close()
            state.sock = None

    def listening(self, state: FrontendState) -> bool:
        """The frontend's listener is open: accepting, or paused for descriptors (then
        connections wait in its backlog)."""
        if state.server is not None:
            return state.server.is_serving()
        return state.sock is not None and self.reserve.paused

    def _pause_accepting(self) -> None:
        close_servers(self.frontends)

    def _resume_accepting(self) -> None:
        async def listen(state: FrontendState) -> None:
            if state.server is None and state.sock is not None and not self.reserve.paused:
                state.server = await self._listen(state)
        for state in self.frontends.values():
            self.loop.create_task(listen(state))

    def set_server_health(self, backend_id: int, server_key: str, up: bool) -> None:
        pool = self.pools.get(backend_id)
        if pool is not None:
            pool.set_health(server_key, up)

    def close_server_sessions(self, backend_id: int, server_key: str) -> int:
        """on_marked_down_action shutdown_sessions: reset that server's sessions."""
        doomed = [s for s in self.sessions if s.pool.spec.id == backend_id and s.server_key() == server_key]
        for s in doomed:
            s.close(abort=True)
        return len(doomed)

    def connect_failed(self, backend: BackendSpec, state: ServerState, exc: Exception) -> None:
        log.warning("connect to %s failed: %s", state.key, exc or "timeout")
        if backend.health_check.passive and failed_connect(exc):
            self.passive.failure(backend.id, state.key, f"connect failed: {str(exc) or 'connect timeout'}")

    def stats(self) -> dict:
        return {"frontends": [f.stats() for f in self.frontends.values()],
                "backends": {str(bid): p.stats() for bid, p in self.pools.items()}}

    async def drain(self, grace_s: float) -> None:
        """Graceful stop: no new connections; open sessions get `grace_s` to finish."""
        self.reserve.stop()
        for state in self.frontends.values():   # the listeners too: their backlogs would still accept
            self._stop_listening(state)
        deadline = asyncio.get_running_loop().time() + grace_s
        while self.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        self.reserve.stop()
        for state in self.frontends.values():
            self._stop_listening(state)
        for s in list(self.sessions):
            s.close()
        self.frontends.clear()
