"""Userspace UDP proxy: the data plane for UDP frontends where XDP does not run. Each client
address:port gets a session, a UDP socket connected to the server the backend's pool chose
(so the kernel hands back only that server's replies, and they go to that client), which
ends after the backend's `udp_session_timeout_ms` without a datagram either way."""
import asyncio
import logging
import socket
from collections.abc import Sequence

from lbfast.enums import Protocol, ProxyProtocol
from lbfast.listeners import datagram_socket
from lbfast.routing import Pool, ServerState, pools_for, switch_frontends
from lbfast.spec import BackendSpec, FrontendSpec

log = logging.getLogger("lbfast.udp")

SESSIONS_MAX = 10_000       # each session holds a descriptor; the open-files limit bounds them all
DATAGRAM_MAX = 65_535
READS_PER_WAKEUP = 64       # replies one session reads before other sessions get their turn


class FrontendState:
    __slots__ = ("spec", "pool", "transport", "sessions", "active", "total", "bytes_in",
                 "bytes_out", "refused", "timeouts", "capped", "dropped", "paused")

    def __init__(self, spec: FrontendSpec):
        self.spec = spec
        self.pool: Pool | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[tuple, Session] = {}    # client address -> its session
        self.active = 0
        self.total = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.refused = 0        # datagrams of new clients while no server was usable
        self.timeouts = 0       # sessions ended for inactivity
        self.capped = 0         # datagrams of new clients while the proxy held SESSIONS_MAX sessions
        self.dropped = 0        # datagrams a full socket buffer (ours or the kernel's) could not take
        self.paused = False     # the listener's send buffer is full: replies are dropped meanwhile

    def stats(self) -> dict:
        return {"id": self.spec.id, "name": self.spec.name, "address": self.spec.address,
                "port": self.spec.port, "active": self.active, "total": self.total,
                "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "refused": self.refused,
                "timeouts": self.timeouts, "capped": self.capped, "dropped": self.dropped}


class Session:
    """One client address:port and the connected socket towards its server."""
    __slots__ = ("proxy", "frontend", "client", "server", "sock", "last_activity", "timer",
                 "closed")

    def __init__(self, proxy: "UdpProxy", frontend: FrontendState, client: tuple,
                 server: ServerState, sock: socket.socket):
        self.proxy = proxy
        self.frontend = frontend
        self.client = client
        self.server = server
        self.sock = sock
        self.closed = False
        self.last_activity = proxy.loop.time()
        self.timer = proxy.loop.call_later(self._timeout_s(), self._check_idle)
        proxy.loop.add_reader(sock.fileno(), self.from_server)

    def _timeout_s(self) -> float:
        return self.server.pool.spec.udp_session_timeout_ms / 1000

    def _check_idle(self) -> None:
        # One timer per session, re-armed when it fires: datagrams only move last_activity.
        left = self.last_activity + self._timeout_s() - self.proxy.loop.time()
        if left > 0:
            self.timer = self.proxy.loop.call_later(left, self._check_idle)
            return
        self.frontend.timeouts += 1
        self.close()

    def to_server(self, data: bytes) -> bool:
        """False when the server's port is closed (an earlier datagram drew an ICMP error)."""
        try:
            self.sock.send(data)
        except BlockingIOError:
            self.frontend.dropped += 1
            return True
        except ConnectionRefusedError:
            return False
        except OSError as e:            # e.g. EMSGSIZE: this datagram cannot go, the session can
            log.debug("datagram to %s not sent: %s", self.server.key, e)
            self.frontend.dropped += 1
            return True
        n = len(data)
        self.last_activity = self.proxy.loop.time()
        self.frontend.bytes_in += n
        self.server.bytes_in += n
        return True

    def from_server(self) -> None:
        frontend = self.frontend
        for _ in range(READS_PER_WAKEUP):
            try:
                data = self.sock.recv(DATAGRAM_MAX)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                self.proxy.server_failed(self, "port unreachable")
                return
            except OSError as e:        # other ICMP errors (host unreachable...): the next datagram may pass
                log.debug("from %s: %s", self.server.key, e)
                return
            self.last_activity = self.proxy.loop.time()
            if frontend.paused:
                frontend.dropped += 1
                continue
            frontend.transport.sendto(data, self.client)
            n = len(data)
            frontend.bytes_out += n
            self.server.bytes_out += n

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.timer.cancel()
        self.proxy.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.frontend.active -= 1
        self.server.active -= 1
        if self.frontend.sessions.get(self.client) is self:
            del self.frontend.sessions[self.client]
        self.proxy.sessions -= 1


class ListenerProtocol(asyncio.DatagramProtocol):
    __slots__ = ("proxy", "frontend")

    def __init__(self, proxy: "UdpProxy", frontend: FrontendState):
        self.proxy = proxy
        self.frontend = frontend

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        session = self.frontend.sessions.get(addr)
        if session is not None:
            if session.to_server(data):
                return
            self.proxy.server_failed(session, "port unreachable")
        self.proxy.new_client(self.frontend, addr, data)

    def error_received(self, exc: Exception) -> None:
        log.debug("%s: %s", self.frontend.spec.name, exc)   # a client's ICMP error about a reply

    def pause_writing(self) -> None:
        self.frontend.paused = True

    def resume_writing(self) -> None:
        self.frontend.paused = False


class UdpProxy:
    """All userspace UDP frontends of one daemon. `apply` diffs frontend specs like the L4
    proxy: sockets of unchanged VIP:port stay bound and keep their sessions."""

    name = "userspace"

    def __init__(self):
        self.loop: asyncio.AbstractEventLoop | None = None
        self.frontends: dict[tuple, FrontendState] = {}
        self.pools: dict[int, Pool] = {}
        self.sessions = 0                   # open sessions of every frontend
        self.sessions_max = SESSIONS_MAX
        self.on_connect_failure = None      # hook(backend_id, server_key, reason): passive checks

    @staticmethod
    def handles(spec: FrontendSpec) -> bool:
        # PROXY protocol is a stream header: it has no meaning in front of datagrams
        return spec.protocol == Protocol.UDP and spec.backend.proxy_protocol == ProxyProtocol.NONE

    async def apply(self, frontends: Sequence[FrontendSpec]) -> None:
        """Bind new sockets first (if one fails, nothing changes and the error is raised),
        then switch specs; frontends that are gone end their sessions with their socket."""
        self.loop = asyncio.get_running_loop()
        wanted = {f.listen_key: f for f in frontends if self.handles(f)}
        pools = pools_for(wanted.values(), self.pools)
        added = {k: FrontendState(f) for k, f in wanted.items() if k not in self.frontends}
        try:
            for state in added.values():
                sock = datagram_socket(state.spec.address, state.spec.port, name=state.spec.name)
                state.transport, _ = await self.loop.create_datagram_endpoint(
                    lambda s=state: ListenerProtocol(self, s), sock=sock)
        except OSError:
            for state in added.values():
                if state.transport is not None:
                    state.transport.close()
            raise
        for key in set(self.frontends) - set(wanted):
            self._close_frontend(self.frontends.pop(key))
        switch_frontends(self.frontends, wanted, added, pools)
        self.pools = pools

    def new_client(self, frontend: FrontendState, client: tuple, data: bytes) -> None:
        """A datagram from a client without a session: choose a server and open one. A server
        whose port turns out closed is passed over for this datagram, like a failed connect."""
        if self.sessions >= self.sessions_max:
            if not frontend.capped:
                log.warning("%d UDP sessions open: datagrams of new clients are dropped", self.sessions)
            frontend.capped += 1
            return
        pool = frontend.pool
        tried: set[str] = set()
        for _ in range(pool.spec.retries + 1):
            server = pool.choose(client[0], tried)
            if server is None:
                break
            try:
                sock = self._connected_socket(server)
            except OSError as e:
                tried.add(server.key)
                self._failed(pool.spec, server, str(e))
                continue
            server.active += 1
            server.total += 1
            frontend.active += 1
            frontend.total += 1
            self.sessions += 1
            session = Session(self, frontend, client, server, sock)
            frontend.sessions[client] = session
            if session.to_server(data):
                return
            tried.add(server.key)
            self.server_failed(session, "port unreachable")
        frontend.refused += 1

    @staticmethod
    def _connected_socket(server: ServerState) -> socket.socket:
        address = server.spec.address
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect((address, server.spec.port))
        except BaseException:
            sock.close()
            raise
        return sock

    def server_failed(self, session: Session, reason: str) -> None:
        """The server's port is closed: end the session (the client's next datagram chooses
        again) and tell passive health checks."""
        session.close()
        self._failed(session.server.pool.spec, session.server, reason)

    def _failed(self, backend: BackendSpec, server: ServerState, reason: str) -> None:
        server.failed += 1
        log.warning("UDP to %s failed: %s", server.key, reason)
        if self.on_connect_failure is not None:
            self.on_connect_failure(backend.id, server.key, reason)

    def _close_frontend(self, state: FrontendState) -> None:
        state.transport.close()
        for session in list(state.sessions.values()):
            session.close()

    def set_server_health(self, backend_id: int, server_key: str, up: bool) -> None:
        pool = self.pools.get(backend_id)
        if pool is not None:
            pool.set_health(server_key, up)

    def close_server_sessions(self, backend_id: int, server_key: str) -> int:
        """on_marked_down_action shutdown_sessions: end that server's sessions; their clients'
        next datagrams open sessions on other servers."""
        doomed = [s for f in self.frontends.values() for s in f.sessions.values()
                  if s.server.pool.spec.id == backend_id and s.server.key == server_key]
        for s in doomed:
            s.close()
        return len(doomed)

    def stats(self) -> dict:
        return {"frontends": [f.stats() for f in self.frontends.values()],
                "backends": {str(bid): p.stats() for bid, p in self.pools.items()}}

    async def close(self) -> None:
        for state in self.frontends.values():
            self._close_frontend(state)
        self.frontends.clear()
