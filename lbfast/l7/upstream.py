"""Server side of the L7 proxy: one protocol object per server connection, parsing the
responses of the exchange it carries, and the per-server pool of idle keep-alive
connections that later requests reuse."""
import asyncio
import socket
import time
from collections import deque

from lbfast.l7._http import ResponseReader
from lbfast.l7.errors import BadResponse
from lbfast.routing import ServerState


class ServerConn(asyncio.Protocol):
    """A connection to one server. While it carries an exchange, parsed response pieces go
    to that exchange; idle, any byte from the server is an error and closes it."""

    __slots__ = ("server", "transport", "exchange", "reader", "closed", "idle_since", "tunnel",
                 "used", "private")

    def __init__(self, server: ServerState, private: bool = False):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.exchange = None
        self.reader = ResponseReader(self)
        self.closed = False
        self.idle_since = 0.0
        self.tunnel = None          # the HttpSession once switched to a raw tunnel
        self.used = 0               # requests carried so far
        self.private = private      # bound to one client connection (PROXY protocol)

    # -- asyncio ------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        if self.tunnel is not None:
            self.tunnel.tunnel_from_server(data)
            return
        ex = self.exchange
        if ex is None:
            self.close()        # a response nobody asked for: this connection is out of step
            return
        ex.session.server_at = ex.session.loop_time()
        n = len(data)
        self.server.bytes_out += n
        try:
            self.reader.feed(data)
        except BadResponse as e:
            if self.exchange is not None:
                self.exchange.session.server_failed(self.exchange, 502, e.reason)
            self.close()
            return
        ex = self.exchange
        if ex is not None and ex.head_out is not None:     # no body bytes in this read: head now
            head, ex.head_out = ex.head_out, None
            ex.session.to_client(head)

    def eof_received(self):
        if self.tunnel is not None:
            self.tunnel.tunnel_server_eof()
            return True
        ex = self.exchange
        if ex is not None:
            ex.session.server_eof(ex)
        return False

    def connection_lost(self, exc):
        self.closed = True
        ex = self.exchange
        if self.tunnel is not None:
            self.tunnel.close()
        elif ex is not None:
            ex.session.server_lost(ex, exc)

    def pause_writing(self):
        if self.tunnel is not None:
            self.tunnel.pause_reading("server")
        elif self.exchange is not None:
            self.exchange.session.pause_reading("server")

    def resume_writing(self):
        if self.tunnel is not None:
            self.tunnel.resume_reading("server")
        elif self.exchange is not None:
            self.exchange.session.resume_reading("server")

    # -- response pieces (from ResponseReader) -------------------------------------
    def response_head(self, head):
        self.exchange.session.response_head(self.exchange, head)

    def response_body(self, data):
        self.exchange.session.response_body(self.exchange, data)

    def response_end(self):
        self.exchange.session.response_end(self.exchange)

    def response_upgrade(self, rest):
        self.exchange.session.response_upgrade(self.exchange, rest)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.exchange = None
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()


class ConnPool:
    """Idle connections per server key, newest first; closed after `idle_s` or when the
    server leaves the pool."""

    def __init__(self, max_idle: int, idle_s: float):
        self.max_idle = max_idle
        self.idle_s = idle_s
        self.idle: dict[tuple[int, str], deque[ServerConn]] = {}
        self.reused = 0
        self.opened = 0

    def get(self, backend_id: int, server: ServerState) -> ServerConn | None:
        conns = self.idle.get((backend_id, server.key))
        while conns:
            conn = conns.pop()
            if not conn.closed and not conn.transport.is_closing():
                self.reused += 1
                return conn
        return None

    def put(self, backend_id: int, conn: ServerConn) -> None:
        conns = self.idle.setdefault((backend_id, conn.server.key), deque())
        if len(conns) >= self.max_idle or conn.closed:
            conn.close()
            return
        conn.exchange = None
        conn.idle_since = time.monotonic()
        conns.append(conn)

    def sweep(self) -> None:
        """Close connections idle for longer than idle_s (oldest are at the left)."""
        limit = time.monotonic() - self.idle_s
        for key in list(self.idle):
            conns = self.idle[key]
            while conns and (conns[0].closed or conns[0].idle_since < limit):
                conns.popleft().close()
            if not conns:
                del self.idle[key]

    def drop(self, backend_id: int | None = None, server_key: str | None = None) -> None:
        for key in list(self.idle):
            if (backend_id is None or key[0] == backend_id) and (server_key is None or key[1] == server_key):
                for conn in self.idle.pop(key):
                    conn.close()

    def count(self) -> int:
        return sum(len(c) for c in self.idle.values())
