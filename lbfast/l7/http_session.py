"""One client connection of an http/https frontend: requests are parsed and checked (Cython
heads over llhttp), routed (cookie, table, algorithm), sent to a pooled or new server
connection with rewritten heads, and both bodies stream through with flow control.
Pipelined requests wait their turn; an accepted Upgrade turns the connection into a
tunnel. One lazily re-armed timer per connection enforces every timeout."""
import asyncio
import logging
from collections import deque

from lbfast import proxy_header
from lbfast.enums import ProxyProtocol
from lbfast.l7._http import FRAME_CHUNKED, FRAME_NONE, RequestReader, chunk_size_line
from lbfast.access_log import RequestLog, termination
from lbfast.l7.errors import BadRequest, BadResponse
from lbfast.l7.pages import error_page
from lbfast.l7.upstream import ServerConn

log = logging.getLogger("lbfast.l7")

WRITE_HIGH_WATER = 256 * 1024
NEVER = float("inf")


def client_address(peer) -> tuple[str, int]:
    if not peer:
        return "0.0.0.0", 0
    host = peer[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, peer[1]


def forwarded_lines(client_ip: str, proto: str, port: int) -> bytes:
    node = f'"[{client_ip}]"' if ":" in client_ip else client_ip
    return (f"X-Forwarded-For: {client_ip}\r\nX-Forwarded-Proto: {proto}\r\n"
            f"X-Forwarded-Port: {port}\r\nForwarded: for={node};proto={proto}\r\n").encode()


class Exchange:
    """One request and its response."""
    __slots__ = ("session", "head", "server", "conn", "set_cookie", "pending", "request_done",
                 "sent", "response", "framing", "closes", "tried", "is_head", "tunnel_rest",
                 "reused", "retried", "failed", "head_out", "log")

    def __init__(self, session: "HttpSession", head):
        self.session = session
        self.head = head
        self.server = None
        self.conn: ServerConn | None = None
        self.set_cookie = None
        self.pending: list[bytes] = []
        self.request_done = False
        self.sent = False
        self.response = None
        self.framing = FRAME_NONE
        self.closes = False
        self.tried: set[str] = set()
        self.is_head = head.method == b"HEAD"
        self.tunnel_rest: bytearray | None = None
        self.reused = False
        self.retried = False
        self.failed = False
        self.head_out: bytes | None = None     # response head, sent with the first body bytes
        self.log: RequestLog | None = None     # its access log line, while it is not written

    def assign(self, server) -> None:
        self.release()
        self.server = server
        server.active += 1
        server.total += 1

    def release(self) -> None:
        if self.server is not None:
            self.server.active -= 1
            self.server = None

    def forward(self, pieces) -> None:
        conn = self.conn
        if self.sent and conn is not None and not conn.closed:
            conn.transport.writelines(pieces)
            n = 0
            for p in pieces:
                n += len(p)
            conn.server.bytes_in += n
        elif not self.sent:
            self.pending.extend(pieces)


class HttpSession(asyncio.Protocol):
    def __init__(self, proxy, frontend):
        self.proxy = proxy
        self.frontend = frontend
        self.pool = frontend.pool
        self.loop = proxy.loop
        limits = proxy.limits
        self.reader = RequestReader(self, limits.max_request_line, limits.max_header_bytes,
                                    limits.max_headers)
        self.transport = None
        self.exchanges: deque[Exchange] = deque()
        self.current: Exchange | None = None
        self.parsing: Exchange | None = None
        self.upgrading: Exchange | None = None
        self.tunnel_conn: ServerConn | None = None
        self.tunnel_ex: Exchange | None = None
        self.private: ServerConn | None = None
        self.paused: set[str] = set()
        self.closed = False
        self.admitted = False       # counted in frontend.active (else queued or refused)
        self.queued_data = b""      # what arrived while queued
        self.client_eof = False
        self.client_ip = "0.0.0.0"
        self.client_port = 0
        self.local_ip = "0.0.0.0"
        self.local_port = 0
        self.extra = b""
        now = self.loop.time()
        self.client_at = now
        self.server_at = now
        self.head_start: float | None = None
        self.timer = None
        self.timer_at = NEVER
        self.received = 0           # bytes from the client, for the access log
        self.received_logged = 0
        self.ended_by = "C"         # access log: who closed the connection under live exchanges

    def loop_time(self) -> float:
        return self.loop.time()

    # -- client connection ------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER)
        self.client_ip, self.client_port = client_address(transport.get_extra_info("peername"))
        self.local_ip, self.local_port = client_address(transport.get_extra_info("sockname"))
        f = self.frontend
        self.extra = forwarded_lines(self.client_ip, "https" if f.tls is not None else "http", f.spec.port)
        self.proxy.sessions.add(self)
        self.proxy.reserve.accepted(self.loop, transport)
        if f.queue.full(f.active, self.pool.spec.max_connections):
            self.pause_reading("queue")     # its request waits in the kernel meanwhile
            f.queue.wait(self.loop, self, self.pool.spec.timeout_queue_ms / 1000)
            return
        self.admit()

    def admit(self) -> None:
        f = self.frontend
        f.active += 1
        f.total += 1
        self.admitted = True
        if "queue" in self.paused:
            self.client_at = self.loop.time()
            self.resume_reading("queue")
        self.head_start = self.client_at
        self.check_timer()
        if self.queued_data:
            data, self.queued_data = self.queued_data, b""
            self.data_received(data)

    def queue_expired(self) -> None:
        """No slot within timeout_queue: 503."""
        self.frontend.refused += 1
        self.frontend.responses[5] += 1
        self.send_page(503)

    def data_received(self, data):
        if not self.admitted:       # queued: uvloop reads once even if paused in connection_made
            self.queued_data += data
            self.transport.pause_reading()
            return
        now = self.loop.time()
        self.client_at = now
        n = len(data)
        self.frontend.bytes_in += n
        self.received += n
        if self.tunnel_conn is not None:
            self.tunnel_conn.server.bytes_in += n
            self.tunnel_conn.transport.write(data)
            return
        if self.upgrading is not None:
            self.upgrading.tunnel_rest += data
            self.pause_reading("upgrade")
            return
        if self.parsing is None and self.reader.idle:
            self.head_start = now
        try:
            self.reader.feed(data)
        except BadRequest as e:
            self.reject(e)
            return
        if self.current is None and self.exchanges:
            self.start(self.exchanges[0])
        self.check_timer()

    def eof_received(self):
        self.client_eof = True
        if self.tunnel_conn is not None:
            if self.tunnel_conn.transport.can_write_eof():
                self.tunnel_conn.transport.write_eof()
            return True
        if self.current is None:
            self.close()
            return False
        return True     # answer what is in flight, then close

    def connection_lost(self, exc):
        self.close()

    def pause_writing(self):        # the client reads slower than the server sends
        conn = self.tunnel_conn or (self.current.conn if self.current else None)
        if conn is not None and conn.transport is not None:
            conn.transport.pause_reading()

    def resume_writing(self):
        conn = self.tunnel_conn or (self.current.conn if self.current else None)
        self.server_at = self.client_at = self.loop.time()
        if conn is not None and conn.transport is not None and not conn.closed:
            conn.transport.resume_reading()

    def pause_reading(self, reason: str) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason in self.paused:
            self.paused.discard(reason)
            if not self.paused and not self.closed:
                self.transport.resume_reading()
                self.client_at = self.loop.time()

    # -- request pieces (from RequestReader) -------------------------------------
    def request_head(self, head):
        ex = Exchange(self, head)
        f = self.frontend.spec
        if f.access_log is not None:
            now = self.loop.time()
            ex.log = RequestLog(f.access_log, f.name, (self.client_ip, self.client_port), head,
                                self.head_start or now, now)
        self.exchanges.append(ex)
        self.parsing = ex
        self.head_start = None
        self.frontend.requests += 1
        if len(self.exchanges) > 1:
            self.pause_reading("pipeline")

    def request_body(self, data):
        ex = self.parsing
        if ex.head.chunked:
            ex.forward((chunk_size_line(len(data)), data, b"\r\n"))
        else:
            ex.forward((data,))

    def request_end(self):
        ex = self.parsing
        self.parsing = None
        ex.request_done = True
        if ex.log is not None:
            ex.log.bytes_in = self.received - self.received_logged
            self.received_logged = self.received
        if ex.head.chunked:
            ex.forward((b"0\r\n\r\n",))

    def request_upgrade(self, rest):
        ex = self.exchanges[-1]
        ex.tunnel_rest = bytearray(rest)
        self.upgrading = ex
        self.pause_reading("upgrade")

    # -- routing and server connections ---------------------------------------------
    def start(self, ex: Exchange) -> None:
        self.current = ex
        if ex.log is not None:
            ex.log.started_at = self.loop.time()
        if not ex.request_done:
            self.pause_reading("connect")       # body bytes wait in the kernel meanwhile
        pool = self.pool
        router = self.frontend.router
        if router is not None:
            server, ex.set_cookie = router.choose(pool, ex.head.cookies, self.client_ip)
        else:
            server = pool.choose(self.client_ip)
        if server is None:
            self.fail(ex, 503, "no server available")
            return
        ex.assign(server)
        conn = self.idle_conn(server)
        if conn is not None:
            ex.reused = True
            self.send(ex, conn)
        else:
            self.loop.create_task(self.open(ex))

    def idle_conn(self, server) -> ServerConn | None:
        if self.pool.spec.proxy_protocol != ProxyProtocol.NONE:
            conn = self.private
            if conn is not None and (conn.closed or conn.server is not server):
                conn.close()
                self.private = conn = None
            return conn
        return self.proxy.conns.get(self.pool.spec.id, server)

    async def open(self, ex: Exchange) -> None:
        backend = self.pool.spec
        private = backend.proxy_protocol != ProxyProtocol.NONE
        if ex.log is not None:
            ex.log.connect_at = self.loop.time()
        for _ in range(backend.retries + 1):
            server = ex.server
            try:
                async with asyncio.timeout(backend.timeout_connect_ms / 1000):
                    _, conn = await self.loop.create_connection(
                        lambda: ServerConn(server, private), server.spec.address, server.spec.port)
            except (OSError, TimeoutError) as e:
                server.failed += 1
                ex.tried.add(server.key)
                ex.release()
                self.proxy.connect_failed(backend, server, e)
                if self.closed or ex is not self.current:
                    return
                server = self.pool.choose(self.client_ip, ex.tried)
                if server is None:
                    break
                ex.assign(server)
                if self.frontend.router is not None:
                    ex.set_cookie = self.frontend.router.set_cookie(server)
                continue
            self.proxy.conns.opened += 1
            if self.closed or ex is not self.current:
                conn.close()
                return
            if private:
                version = 1 if backend.proxy_protocol == ProxyProtocol.V1 else 2
                conn.transport.write(proxy_header.encode(version, self.client_ip, self.client_port,
                                                         self.local_ip, self.local_port))
                if self.private is not None:
                    self.private.close()
                self.private = conn
            self.send(ex, conn)
            return
        self.fail(ex, 503, "no server could be reached")

    def send(self, ex: Exchange, conn: ServerConn) -> None:
        ex.conn = conn
        conn.exchange = ex
        conn.used += 1
        conn.reader.head_request = ex.is_head
        ex.sent = True
        pieces = [ex.head.serialize(self.extra)]
        if ex.pending:
            pieces.extend(ex.pending)
            ex.pending = []
        conn.transport.writelines(pieces)
        n = 0
        for p in pieces:
            n += len(p)
        conn.server.bytes_in += n
        self.server_at = self.loop.time()
        if ex.log is not None:
            ex.log.sent_at = self.server_at
            ex.log.server = conn.server
        self.resume_reading("connect")
        self.check_timer()

    # -- response pieces (from ServerConn) ----------------------------------------------
    def to_client(self, data: bytes) -> None:
        """Every byte written to the client is counted in bytes_out here or in
        response_body: what crosses the connection at the HTTP level (heads, framing,
        bodies, error pages), under TLS as in the clear."""
        self.frontend.bytes_out += len(data)
        self.transport.write(data)

    def response_head(self, ex: Exchange, head) -> None:
        status = head.status
        if status < 200 and status != 101:
            if ex.head.http_minor == 1:     # interim (100 Continue...): HTTP/1.0 clients get none
                self.to_client(head.serialize(True, True, False))
            return
        if status == 101 and ex.head.upgrade is None:
            raise BadResponse("101 Switching Protocols to a request without Upgrade")
        ex.response = head
        f = self.frontend
        f.responses[min(status // 100, 5)] += 1
        if self.pool.spec.health_check.passive:
            self.proxy.passive_response(self.pool.spec.id, ex.conn.server.key, status)
        keep = ex.head.keep_alive and not self.client_eof and ex.head.upgrade is None
        out = head.serialize(keep, ex.head.http_minor == 1, ex.is_head, ex.set_cookie or b"")
        ex.framing = head.framing
        ex.closes = head.closes
        if ex.log is not None:
            ex.log.response_at = self.loop.time()
            ex.log.status = status
            ex.log.bytes_out += len(out)
        if status == 101:
            self.to_client(out)
        else:
            ex.head_out = out       # one send for head and first body bytes

    def response_body(self, ex: Exchange, data) -> None:
        n = len(data)
        if ex.log is not None:
            ex.log.bytes_out += n
        head, ex.head_out = ex.head_out, None
        if ex.framing == FRAME_CHUNKED:
            size = chunk_size_line(n)
            if head is None:
                self.frontend.bytes_out += len(size) + n + 2
                self.transport.writelines((size, data, b"\r\n"))
            else:
                self.frontend.bytes_out += len(head) + len(size) + n + 2
                self.transport.writelines((head, size, data, b"\r\n"))
        elif ex.framing != FRAME_NONE:
            if head is None:
                self.frontend.bytes_out += n
                self.transport.write(data)
            else:
                self.frontend.bytes_out += len(head) + n
                self.transport.writelines((head, data))

    def response_end(self, ex: Exchange) -> None:
        head = ex.response
        if head is None or head.status == 101:
            return          # the end of an interim 1xx; a 101 goes on as a tunnel
        out, ex.head_out = ex.head_out, None
        if ex.framing == FRAME_CHUNKED:
            self.to_client(b"0\r\n\r\n" if out is None else out + b"0\r\n\r\n")
        elif out is not None:
            self.to_client(out)
        self.finish(ex, head.keep_alive and ex.request_done and not ex.is_head)

    def response_upgrade(self, ex: Exchange, rest) -> None:
        conn = ex.conn
        if ex.response is None or ex.response.status != 101:
            self.fail(ex, 502, "server switched protocols without 101")
            return
        conn.exchange = None
        conn.tunnel = self
        self.tunnel_conn = conn
        ex.conn = None
        self.exchanges.clear()
        self.current = self.upgrading = None
        if ex.log is not None:
            self.log_request(ex, "--")
        if rest:
            self.to_client(rest)
        if ex.tunnel_rest:
            conn.transport.write(bytes(ex.tunnel_rest))
        self.tunnel_ex = ex          # keeps the server counted active until the tunnel closes
        self.paused.discard("upgrade")
        self.paused.discard("pipeline")
        if not self.paused:
            self.transport.resume_reading()
        self.check_timer()

    def finish(self, ex: Exchange, reusable: bool) -> None:
        if ex.log is not None:
            self.log_request(ex, "--")
        conn = ex.conn
        ex.conn = None
        if conn is not None:
            conn.exchange = None
            if reusable and not conn.closed:
                if conn.private:
                    self.private = conn
                else:
                    self.proxy.conns.put(self.pool.spec.id, conn)
            else:
                if conn is self.private:
                    self.private = None
                conn.close()
        ex.release()
        if self.exchanges and self.exchanges[0] is ex:
            self.exchanges.popleft()
        self.current = None
        if ex.closes or not ex.request_done or ex.head.upgrade is not None or self.client_eof:
            self.close_after_flush()
            return
        self.resume_reading("pipeline")
        if self.exchanges:
            self.start(self.exchanges[0])
        self.check_timer()

    def server_eof(self, ex: Exchange) -> None:
        head = ex.response
        if head is not None and ex.framing != FRAME_NONE and head.content_length < 0 and not head.chunked:
            self.response_end_close_delimited(ex)

    def response_end_close_delimited(self, ex: Exchange) -> None:
        out, ex.head_out = ex.head_out, None
        if out is not None:
            self.to_client(out)
        if ex.framing == FRAME_CHUNKED:
            self.to_client(b"0\r\n\r\n")
        self.finish(ex, False)

    def server_lost(self, ex: Exchange, exc) -> None:
        if ex is not self.current or ex.conn is None:
            return
        ex.conn.exchange = None
        if ex.conn is self.private:
            self.private = None
        ex.conn = None
        if ex.response is None:
            if ex.reused and not ex.retried and ex.request_done and not ex.head.has_body:
                # a pooled connection the server closed just as we reused it: one more try
                ex.retried = True
                ex.sent = False
                ex.reused = False
                ex.pending = [b"0\r\n\r\n"] if ex.head.chunked else []
                self.loop.create_task(self.open(ex))
                return
            # not the server's fault if it gave up on a request the client was still sending
            if self.pool.spec.health_check.passive and ex.server is not None and ex.request_done:
                self.proxy.passive.failure(self.pool.spec.id, ex.server.key, "connection closed before a response")
            self.fail(ex, 502, "server closed the connection")
        else:
            self.ended_by = "S"
            self.abort()

    def server_failed(self, ex: Exchange, status: int, reason: str) -> None:
        if ex.conn is not None:
            if ex.conn is self.private:
                self.private = None
            ex.conn.exchange = None
            ex.conn.close()
            ex.conn = None
        if ex.response is None:
            self.fail(ex, status, reason)
        else:
            self.ended_by = "S"
            self.abort()

    # -- errors and timeouts ---------------------------------------------------------
    def fail(self, ex: Exchange, status: int, reason: str) -> None:
        log.info("%s %s %s -> %d: %s", self.frontend.spec.name, self.client_ip,
                 ex.head.target[:200].decode("latin-1"), status, reason)
        ex.failed = True
        if ex.log is not None:
            if ex.response is None:
                ex.log.status = status
                ex.log.bytes_out = len(error_page(status))
            self.log_request(ex, termination("s" if status == 504 else "S", ex.log, ex.request_done))
        ex.release()
        if ex.conn is not None:
            ex.conn.exchange = None
            ex.conn.abort()
            ex.conn = None
        if ex.response is not None:
            self.abort()
            return
        self.frontend.responses[5] += 1
        self.frontend.errors += 1
        if status == 503:
            self.frontend.refused += 1
        self.send_page(status)

    def reject(self, e: BadRequest) -> None:
        """A malformed request: nothing of it is forwarded; 400 and close."""
        self.frontend.bad_requests += 1
        log.info("%s %s: 400 %s", self.frontend.spec.name, self.client_ip, e.reason)
        ex = self.current
        if ex is not None and ex.response is not None:
            self.abort()
            return
        self.drop_exchanges()
        self.frontend.responses[4] += 1
        self.send_page(e.status)

    def send_page(self, status: int) -> None:
        if not self.closed:
            self.to_client(error_page(status))
        self.close_after_flush()

    def close_after_flush(self) -> None:
        """Stop reading; the transport closes once what we wrote is sent."""
        if not self.closed:
            self.close()

    def check_timer(self) -> None:
        if self.closed:
            return
        at = self.deadline()[0]
        if at < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = at
            if at != NEVER:
                self.timer = self.loop.call_at(at, self.on_timer)

    def deadline(self) -> tuple[float, str]:
        spec = self.frontend.spec
        backend = self.pool.spec
        if self.tunnel_conn is not None:
            return max(self.client_at, self.server_at) + backend.timeout_tunnel_ms / 1000, "tunnel"
        client_s = spec.timeout_client_ms / 1000
        best = (NEVER, "")
        ex = self.current
        if ex is not None and ex.sent:
            best = (self.server_at + backend.timeout_server_ms / 1000, "server")
        if self.parsing is not None:
            if "connect" not in self.paused and "pipeline" not in self.paused:
                at = self.client_at + client_s
                if at < best[0]:
                    best = (at, "client")
        elif not self.exchanges:
            at = self.client_at + client_s
            if self.head_start is not None:     # slowloris: the whole head has a deadline
                at = min(at, self.head_start + min(client_s, self.proxy.limits.head_timeout_ms / 1000))
            if at < best[0]:
                best = (at, "head")
        return best

    def on_timer(self) -> None:
        self.timer = None
        self.timer_at = NEVER
        if self.closed:
            return
        at, kind = self.deadline()
        if at > self.loop.time():
            self.check_timer()
            return
        self.frontend.timeouts += 1
        self.ended_by = "s" if kind == "server" else "c"
        if kind == "server":
            ex = self.current
            # a slow upload outlasting timeout_server is the client's doing, not the server's
            if ex.server is not None and ex.request_done and self.pool.spec.health_check.passive:
                self.proxy.passive.failure(self.pool.spec.id, ex.server.key, "server timeout")
            self.fail(ex, 504, "server timeout")
        elif kind in ("client", "head"):
            if kind == "head" and self.reader.idle:
                self.close()            # an idle keep-alive connection: just close it
            elif self.current is not None and self.current.response is not None:
                self.abort()
            else:
                self.drop_exchanges()
                self.send_page(408)
        else:
            self.abort()

    # -- teardown ----------------------------------------------------------------------
    def drop_exchanges(self) -> None:
        """Forget every queued exchange; their server connections are aborted, as a
        request may be half sent on them."""
        for ex in self.exchanges:
            if ex.log is not None:
                self.log_request(ex, termination(self.ended_by, ex.log, ex.request_done))
            ex.release()
            if ex.conn is not None:
                ex.conn.exchange = None
                ex.conn.abort()
                ex.conn = None
        self.exchanges.clear()
        self.current = None

    def abort(self) -> None:
        if not self.closed:
            self.close()
            self.transport.abort()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport.close()
        self.drop_exchanges()
        f = self.frontend
        if self.admitted:
            f.active -= 1
            f.queue.released(f.active, self.pool.spec.max_connections)
        else:
            f.queue.leave(self)
        if self.tunnel_conn is not None:
            self.tunnel_conn.tunnel = None
            self.tunnel_conn.close()
            self.tunnel_conn = None
            self.tunnel_ex.release()
        if self.private is not None:
            self.private.close()
            self.private = None
        self.proxy.sessions.discard(self)

    def log_request(self, ex: Exchange, state: str) -> None:
        rec, ex.log = ex.log, None
        if not ex.request_done:
            rec.bytes_in = self.received - self.received_logged
        rec.write(self.loop, state, self.pool.spec.name)

    # -- tunnel (after 101) -----------------------------------------------------------
    def tunnel_from_server(self, data) -> None:
        self.server_at = self.loop.time()
        self.tunnel_conn.server.bytes_out += len(data)
        self.to_client(data)

    def tunnel_server_eof(self) -> None:
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.client_eof:
            self.close()

    def server_key(self) -> str | None:
        conn = self.tunnel_conn or (self.current.conn if self.current else None)
        if conn is not None:
            return conn.server.key
        if self.current is not None and self.current.server is not None:
            return self.current.server.key
        return None

