"""A TCP frontend whose backend wants PROXY protocol: the L4 relay plus the header, which
must be the first bytes the server reads, written before any client byte."""
import asyncio
import socket

from lbfast import proxy_header
from lbfast.enums import ProxyProtocol
from lbfast.l7.http_session import WRITE_HIGH_WATER, client_address


class TcpSession(asyncio.Protocol):
    def __init__(self, proxy, frontend):
        self.proxy = proxy
        self.frontend = frontend
        self.pool = frontend.pool
        self.loop = proxy.loop
        self.transport = None
        self.server = None          # _ServerSide
        self.server_state = None
        self.held: list[bytes] = []
        self.client_eof = False
        self.server_eof = False
        self.closed = False
        self.at = self.loop.time()
        self.timer = None

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_HIGH_WATER)
        self.frontend.active += 1
        self.frontend.total += 1
        self.proxy.sessions.add(self)
        self.loop.create_task(self.connect())
        self.arm()

    async def connect(self) -> None:
        client_ip, client_port = client_address(self.transport.get_extra_info("peername"))
        local_ip, local_port = client_address(self.transport.get_extra_info("sockname"))
        backend = self.pool.spec
        tried: set[str] = set()
        for _ in range(backend.retries + 1):
            state = self.pool.choose(client_ip, tried)
            if state is None or self.closed:
                break
            state.active += 1
            try:
                async with asyncio.timeout(backend.timeout_connect_ms / 1000):
                    _, side = await self.loop.create_connection(
                        lambda: _ServerSide(self), state.spec.address, state.spec.port)
            except (OSError, TimeoutError) as e:
                state.active -= 1
                state.failed += 1
                tried.add(state.key)
                self.proxy.connect_failed(backend, state, e)
                continue
            state.total += 1
            self.server_state = state
            if self.closed:
                side.transport.close()
                state.active -= 1
                return
            version = 1 if backend.proxy_protocol == ProxyProtocol.V1 else 2
            side.transport.write(proxy_header.encode(version, client_ip, client_port, local_ip, local_port))
            if self.held:
                side.transport.writelines(self.held)
                state.bytes_in += sum(len(b) for b in self.held)
                self.held = []
            self.server = side
            if self.client_eof:
                if side.transport.can_write_eof():
                    side.transport.write_eof()
            else:
                self.transport.resume_reading()
            return
        self.frontend.refused += 1
        self.abort()

    def data_received(self, data):
        self.at = self.loop.time()
        n = len(data)
        self.frontend.bytes_in += n
        if self.server is None:
            self.held.append(data)      # the server is not connected yet: at most a few reads
            self.transport.pause_reading()
            return
        self.server_state.bytes_in += n
        self.server.transport.write(data)

    def from_server(self, data) -> None:
        self.at = self.loop.time()
        n = len(data)
        self.frontend.bytes_out += n
        self.server_state.bytes_out += n
        self.transport.write(data)

    def eof_received(self):
        self.client_eof = True
        if self.server is not None and self.server.transport.can_write_eof():
            self.server.transport.write_eof()
        if self.server_eof:
            self.close()
        return True

    def server_eof_received(self) -> None:
        self.server_eof = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.client_eof:
            self.close()

    def connection_lost(self, exc):
        self.close()

    def pause_writing(self):
        if self.server is not None:
            self.server.transport.pause_reading()

    def resume_writing(self):
        if self.server is not None:
            self.server.transport.resume_reading()

    def resume_from_server_pause(self) -> None:
        if not self.closed and not self.client_eof:
            self.transport.resume_reading()

    # -- inactivity: min(timeout_client, timeout_server), like the L4 proxy ------------
    def timeout_s(self) -> float:
        return min(self.frontend.spec.timeout_client_ms, self.pool.spec.timeout_server_ms) / 1000

    def arm(self) -> None:
        self.timer = self.loop.call_at(self.at + self.timeout_s(), self.check)

    def check(self) -> None:
        if self.closed:
            return
        if self.loop.time() >= self.at + self.timeout_s():
            self.frontend.timeouts += 1
            self.abort()
        else:
            self.arm()

    def server_key(self) -> str | None:
        return self.server_state.key if self.server_state is not None else None

    def abort(self) -> None:
        if not self.closed:
            self.close()
            self.transport.abort()
            if self.server is not None:
                self.server.transport.abort()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        self.transport.close()
        if self.server is not None:
            self.server.transport.close()
        if self.server_state is not None:
            self.server_state.active -= 1
        self.frontend.active -= 1
        self.proxy.sessions.discard(self)


class _ServerSide(asyncio.Protocol):
    __slots__ = ("session", "transport")

    def __init__(self, session: TcpSession):
        self.session = session
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.session.from_server(data)

    def eof_received(self):
        self.session.server_eof_received()
        return True

    def connection_lost(self, exc):
        self.session.close()

    def pause_writing(self):
        self.session.transport.pause_reading()

    def resume_writing(self):
        self.session.resume_from_server_pause()
