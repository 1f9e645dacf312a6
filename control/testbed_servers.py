"""Small test backends run inside testbed namespaces.

    python -m control.testbed_servers --name b0 [--http PORT] [--tcp-echo PORT]
                                      [--udp-echo PORT] [--bind ADDR ...]
                                      [--parent-pid PID]

With none of ``--http/--tcp-echo/--udp-echo`` all three run on the default ports.
``--bind`` may be repeated; default: ``0.0.0.0`` and ``::`` (two sockets, v6-only on the
IPv6 one; a lone ``::`` is dual-stack).  SIGTERM/SIGINT stop the process.

HTTP/1.1 (keep-alive, Content-Length or chunked request bodies); every response carries
``X-Backend: <name>``:

    GET  /              200, body = name
    GET  /bytes/N       N bytes of ``pattern(N)`` (repeating 0..255)
    POST /sink          reads the whole body, answers JSON {"length": n, "sha256": hex}
    GET  /headers       JSON object of the request headers (names lower-cased,
                        repeated headers joined with ", ")
    GET  /peer          JSON {"name", "peer": [ip, port], "local": [ip, port],
                        "proxy": null | {"version", "src": [ip, port], "dst": [ip, port]}}
    GET  /delay/MS      waits MS milliseconds, then answers like GET /
    GET  /status/CODE   answers CODE with body = name
    GET  /health        200 "ok", or 503 after POST /health/down (POST /health/up undoes)

A connection may start with a PROXY protocol v1 or v2 header; it is parsed and reported
by /peer.  TCP echo echoes until EOF, then half-closes back.  UDP echo answers
``<name>:<payload>``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import json
import os
import signal
import socket
import struct
import sys

HTTP_PORT = 8080
TCP_ECHO_PORT = 9000
UDP_ECHO_PORT = 9001

PROXY_V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable"}
_CHUNK = 65536
_PATTERN = bytes(range(256)) * (_CHUNK // 256)


def pattern(n: int, offset: int = 0) -> bytes:
    """The body of ``GET /bytes/N`` (bytes ``offset .. offset+n`` of it)."""
    out = bytearray()
    pos = offset
    while len(out) < n:
        start = pos % 256
        take = min(n - len(out), _CHUNK - start)
        out += _PATTERN[start:start + take]
        pos += take
    return bytes(out)


class BadRequest(Exception):
    pass


def _addr(sockaddr) -> list | None:
    if not sockaddr:
        return None
    host = sockaddr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return [host, sockaddr[1]]


async def read_proxy_header(reader: asyncio.StreamReader) -> dict | None:
    """Consume a PROXY v1/v2 header if the stream starts with one."""
    try:
        head = await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        return None
    # put the byte back: StreamReader has no unread, so use its internal buffer
    reader._buffer[0:0] = head  # type: ignore[attr-defined]
    if head == b"P":
        try:
            peek = await reader.readexactly(6)
        except asyncio.IncompleteReadError as e:
            reader._buffer[0:0] = e.partial  # type: ignore[attr-defined]
            return None
        if peek != b"PROXY ":
            reader._buffer[0:0] = peek  # type: ignore[attr-defined]
            return None
        line = (await reader.readuntil(b"\r\n"))[:-2].decode("ascii", "replace")
        parts = line.split(" ")
        if parts[0] == "UNKNOWN":
            return {"version": 1, "src": None, "dst": None}
        if len(parts) != 5 or parts[0] not in ("TCP4", "TCP6"):
            raise BadRequest(f"bad PROXY v1 line: {line!r}")
        return {"version": 1, "src": [parts[1], int(parts[3])], "dst": [parts[2], int(parts[4])]}
    if head == b"\r":
        try:
            sig = await reader.readexactly(12)
        except asyncio.IncompleteReadError as e:
            reader._buffer[0:0] = e.partial  # type: ignore[attr-defined]
            return None
        if sig != PROXY_V2_SIG:
            reader._buffer[0:0] = sig  # type: ignore[attr-defined]
            return None
        ver_cmd, fam, length = struct.unpack("!BBH", await reader.readexactly(4))
        body = await reader.readexactly(length)
        if ver_cmd >> 4 != 2:
            raise BadRequest("bad PROXY v2 version")
        info: dict = {"version": 2, "src": None, "dst": None, "command": ver_cmd & 0xF}
        if ver_cmd & 0xF == 1:  # PROXY (not LOCAL)
            if fam >> 4 == 1 and len(body) >= 12:
                s, d, sp, dp = struct.unpack("!4s4sHH", body[:12])
                info["src"] = [str(ipaddress.IPv4Address(s)), sp]
                info["dst"] = [str(ipaddress.IPv4Address(d)), dp]
            elif fam >> 4 == 2 and len(body) >= 36:
                s, d, sp, dp = struct.unpack("!16s16sHH", body[:36])
                info["src"] = [str(ipaddress.IPv6Address(s)), sp]
                info["dst"] = [str(ipaddress.IPv6Address(d)), dp]
        return info
    return None


class HttpServer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = {"peer": _addr(writer.get_extra_info("peername")),
                "local": _addr(writer.get_extra_info("sockname")), "proxy": None}
        try:
            conn["proxy"] = await read_proxy_header(reader)
            while await self.one_request(reader, writer, conn):
                pass
        except BadRequest as e:
            await self.respond(writer, 400, str(e).encode(), close=True)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def one_request(self, reader, writer, conn) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if e.partial.strip():
                raise BadRequest("truncated request head")
            return False
        lines = head[:-4].decode("latin-1").split("\r\n")
        while lines and not lines[0]:  # tolerate stray CRLF between requests
            lines.pop(0)
        try:
            method, target, version = lines[0].split(" ")
        except (ValueError, IndexError):
            raise BadRequest("bad request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, sep, v = line.partition(":")
            if not sep:
                raise BadRequest(f"bad header line {line!r}")
            k = k.strip().lower()
            v = v.strip()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
        conn_hdr = headers.get("connection", "").lower()
        if version == "HTTP/1.0":
            keep = "keep-alive" in conn_hdr
        else:
            keep = "close" not in conn_hdr
        head_only = method == "HEAD"

        # request body (consumed for every request so keep-alive stays in sync)
        sink = hashlib.sha256()
        length = 0
        async for chunk in self.body(reader, headers):
            sink.update(chunk)
            length += len(chunk)

        path = target.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        if method in ("GET", "HEAD") and not parts:
            await self.respond(writer, 200, self.name.encode(), keep=keep, head_only=head_only)
        elif method in ("GET", "HEAD") and len(parts) == 2 and parts[0] == "bytes":
            try:
                n = int(parts[1])
            except ValueError:
                raise BadRequest("bad size")
            await self.send_bytes(writer, n, keep, head_only)
        elif method in ("POST", "PUT") and parts == ["sink"]:
            body = json.dumps({"length": length, "sha256": sink.hexdigest()}).encode()
            await self.respond(writer, 200, body, keep=keep, ctype="application/json")
        elif method == "GET" and parts == ["headers"]:
            await self.respond(writer, 200, json.dumps(headers).encode(), keep=keep,
                               ctype="application/json")
        elif method == "GET" and parts == ["peer"]:
            body = json.dumps({"name": self.name, **conn}).encode()
            await self.respond(writer, 200, body, keep=keep, ctype="application/json")
        elif method == "GET" and len(parts) == 2 and parts[0] == "delay":
            await asyncio.sleep(int(parts[1]) / 1000)
            await self.respond(writer, 200, self.name.encode(), keep=keep)
        elif method == "GET" and len(parts) == 2 and parts[0] == "status":
            await self.respond(writer, int(parts[1]), self.name.encode(), keep=keep)
        elif method in ("GET", "HEAD") and parts == ["health"]:
            code = 200 if self.healthy else 503
            await self.respond(writer, code, b"ok" if self.healthy else b"down", keep=keep,
                               head_only=head_only)
        elif method == "POST" and parts in (["health", "up"], ["health", "down"]):
            self.healthy = parts[1] == "up"
            await self.respond(writer, 200, parts[1].encode(), keep=keep)
        else:
            await self.respond(writer, 404, b"not found", keep=keep)
        return keep

    async def body(self, reader, headers):
        te = headers.get("transfer-encoding", "").lower()
        if "chunked" in te:
            while True:
                line = await reader.readuntil(b"\r\n")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BadRequest("bad chunk size")
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    return
                while size:
                    data = await reader.read(min(size, _CHUNK))
                    if not data:
                        raise asyncio.IncompleteReadError(b"", size)
                    size -= len(data)
                    yield data
                if await reader.readexactly(2) != b"\r\n":
                    raise BadRequest("bad chunk terminator")
        elif "content-length" in headers:
            try:
                left = int(headers["content-length"])
            except ValueError:
                raise BadRequest("bad content-length")
            while left > 0:
                data = await reader.read(min(left, _CHUNK))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                left -= len(data)
                yield data

    def head(self, code: int, length: int, keep: bool, ctype: str) -> bytes:
        return (f"HTTP/1.1 {code} {_REASONS.get(code, 'Status')}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {length}\r\n"
                f"X-Backend: {self.name}\r\n"
                f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n").encode()

    async def respond(self, writer, code: int, body: bytes, keep: bool = True,
                      close: bool = False, head_only: bool = False,
                      ctype: str = "text/plain") -> None:
        keep = keep and not close
        writer.write(self.head(code, len(body), keep, ctype) + (b"" if head_only else body))
        await writer.drain()

    async def send_bytes(self, writer, n: int, keep: bool, head_only: bool) -> None:
        writer.write(self.head(200, n, keep, "application/octet-stream"))
        if not head_only:
            sent = 0
            while sent < n:
                take = min(_CHUNK, n - sent)
                start = sent % 256
                writer.write(_PATTERN[start:start + take] if start + take <= _CHUNK
                             else pattern(take, sent))
                sent += take
                await writer.drain()
        await writer.drain()


async def tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # half-close back, then wait for the peer to finish
        await reader.read()
    except ConnectionError:
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, name: str) -> None:
        self.prefix = name.encode() + b":"

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(self.prefix + data, addr)


def make_socket(addr: str, port: int, kind: int, v6only: bool = False) -> socket.socket:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
    # bind even to an address not (yet) configured: lets a server sit on a VIP
    s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
    s.bind((addr, port))
    if kind == socket.SOCK_STREAM:
        s.listen(1024)
    s.setblocking(False)
    return s


async def watch_parent(pid: int, stop: asyncio.Event) -> None:
    """Stop when process ``pid`` (the test run that started us) is gone."""
    while not stop.is_set():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            stop.set()
        except PermissionError:
            pass
        await asyncio.sleep(0.5)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    binds = args.bind or ["0.0.0.0", "::"]
    v6only = "0.0.0.0" in binds  # else a lone "::" is dual-stack
    http = HttpServer(args.name)
    closers = []
    # UDP first, so once the TCP ports accept the whole server is up
    if args.udp_echo:
        for a in binds:
            sock = make_socket(a, args.udp_echo, socket.SOCK_DGRAM, v6only)
            t, _ = await loop.create_datagram_endpoint(lambda: UdpEcho(args.name), sock=sock)
            closers.append(t)
    for port, handler in ((args.tcp_echo, tcp_echo), (args.http, http.handle)):
        if port:
            for a in binds:
                sock = make_socket(a, port, socket.SOCK_STREAM, v6only)
                srv = await asyncio.start_server(handler, sock=sock, limit=1 << 20)
                closers.append(srv)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.parent_pid:
        loop.create_task(watch_parent(args.parent_pid, stop))
    await stop.wait()
    for c in closers:
        c.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m control.testbed_servers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="backend")
    ap.add_argument("--http", type=int, metavar="PORT")
    ap.add_argument("--tcp-echo", type=int, metavar="PORT")
    ap.add_argument("--udp-echo", type=int, metavar="PORT")
    ap.add_argument("--bind", action="append", metavar="ADDR",
                    help="address to listen on (repeatable; default 0.0.0.0 and ::)")
    ap.add_argument("--parent-pid", type=int, metavar="PID",
                    help="exit when this process is gone")
    args = ap.parse_args(argv)
    if not (args.http or args.tcp_echo or args.udp_echo):
        args.http, args.tcp_echo, args.udp_echo = HTTP_PORT, TCP_ECHO_PORT, UDP_ECHO_PORT
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
