"""Active health checks, one coroutine per check type speaking its protocol over asyncio
sockets and streams; `run_check` bounds any of them by the check's timeout and never raises."""
from __future__ import annotations

import asyncio
import errno
import functools
import os
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NamedTuple

import httptools

from lbfast.enums import CheckType
from lbfast.hostports import use_host_ports
from lbfast.spec import HealthCheckSpec

# HAProxy reads one 16 kB buffer for http-check expect; a body match looks a little further.
HTTP_BODY_LIMIT = 64 * 1024
# No greeting, packet or LDAP message a healthy server sends a check comes near this.
PACKET_LIMIT = 64 * 1024
# SO_LINGER {on, 0 s}: close() sends RST instead of FIN, so a check leaves no TIME_WAIT
# socket behind on the load balancer (HAProxy closes its checks the same way).
LINGER_RESET = struct.pack("ii", 1, 0)


class CheckResult(NamedTuple):  # a tuple: thousands are made per second
    ok: bool
    reason: str         # what passed ("HTTP 200") or why it failed ("connect: Connection refused")
    duration: float     # seconds, connect included


class CheckFailed(Exception):
    """The server could be reached but did not answer as a healthy one does."""


async def run_check(check: HealthCheckSpec, address: str, port: int) -> CheckResult:
    """Run `check` once against address:port; a failure of any kind is a failed result."""
    started = time.perf_counter()
    ok, reason = False, ""
    try:
        if check.type is CheckType.TCP and not check.send_proxy:
            # The check thousands of servers run: its deadline rides on the connect wait,
            # a fraction of the cost of an asyncio.timeout scope.
            reason = await check_tcp_connect(address, port, check.timeout_ms / 1000)
        else:
            async with asyncio.timeout(check.timeout_ms / 1000):
                reason = await CHECKS[check.type](check, address, port)
        ok = True
    except TimeoutError:
        reason = f"timeout after {check.timeout_ms} ms"
    except CheckFailed as e:
        reason = str(e)
    except asyncio.IncompleteReadError:
        reason = "connection closed by the server"
    except ssl.SSLCertVerificationError as e:
        reason = f"tls: {e.verify_message}"
    except ssl.SSLError as e:
        reason = f"tls: {e.reason or e}"
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else f"{type(e).__name__}: {e}"
    except Exception as e:  # a malformed answer must fail the check, not the loop running it
        reason = f"{type(e).__name__}: {e}"
    return CheckResult(ok, reason, time.perf_counter() - started)


# ---------------------------------------------------------------- connecting

def proxy_v1_header(sock: socket.socket) -> bytes:
    """PROXY protocol v1 line describing this connection, as HAProxy's send-proxy checks do."""
    src, sport = sock.getsockname()[:2]
    dst, dport = sock.getpeername()[:2]
    family = "TCP6" if sock.family == socket.AF_INET6 else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def close_with_reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    except OSError:
        pass
    sock.close()


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def new_socket(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                         socket.SOCK_STREAM | socket.SOCK_NONBLOCK)  # no extra ioctl
    use_host_ports(sock)
    return sock


async def connect_socket(sock: socket.socket, address: tuple[str, int], timeout: float | None = None) -> int:
    """Non-blocking connect of an IP literal: 0, or the errno it failed with; TimeoutError
    after `timeout` s. Not loop.sock_connect: uvloop's resolves the address in its thread
    pool on every call, and errnos rather than exceptions leave less for the GC."""
    error = sock.connect_ex(address)
    if error != errno.EINPROGRESS:
        return error
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, _wake, waiter)  # writable once the handshake is done or failed
    timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
    try:
        await waiter
    finally:
        loop.remove_writer(fd)
        if timer is not None:
            timer.cancel()
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


async def connect(check: HealthCheckSpec, address: str, port: int) -> socket.socket:
    """A connected non-blocking socket, the PROXY header already sent if configured.

    Plain sockets rather than open_connection: TLS can start after the PROXY header."""
    sock = new_socket(address)
    try:
        error = await connect_socket(sock, (address, port))
        if error:
            raise CheckFailed(f"connect: {os.strerror(error)}")
        if check.send_proxy:
            await asyncio.get_running_loop().sock_sendall(sock, proxy_v1_header(sock))
    except BaseException:
        close_with_reset(sock)
        raise
    return sock


@functools.cache
def tls_context(verify: bool) -> ssl.SSLContext:
    """Built once: loading the system CA store costs milliseconds."""
    if verify:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE   # HAProxy check-ssl without `verify required`
    return context


def tls_server_name(check: HealthCheckSpec, address: str) -> str:
    # "" sends no SNI (HAProxy sends none without check-sni); verification needs a name
    # to match, and an IP literal is matched against the certificate's IP SANs.
    return check.sni or (address if check.verify_tls else "")


@asynccontextmanager
async def open_stream(check: HealthCheckSpec, address: str, port: int, tls: bool = False
                      ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    sock = await connect(check, address, port)
    try:
        if tls:
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=tls_context(check.verify_tls),
                server_hostname=tls_server_name(check, address))
        else:
            reader, writer = await asyncio.open_connection(sock=sock)
    except BaseException:
        close_with_reset(sock)
        raise
    try:
        yield reader, writer
    finally:
        # abort, not close: no TLS close_notify exchange or buffered data can hold the
        # connection open past the check.
        writer.transport.abort()


# ---------------------------------------------------------------- tcp

async def check_tcp(check: HealthCheckSpec, address: str, port: int) -> str:
    sock = await connect(check, address, port)
    if check.send_proxy:
        sock.close()  # a FIN, so the PROXY header is not discarded by a reset
    else:
        close_with_reset(sock)
    return "connected"


async def check_tcp_connect(address: str, port: int, timeout: float) -> str:
    """check_tcp without a PROXY header, bounded by its own connect deadline."""
    sock = new_socket(address)
    try:
        error = await connect_socket(sock, (address, port), timeout)
    finally:
        close_with_reset(sock)
    if error:
        raise CheckFailed(f"connect: {os.strerror(error)}")
    return "connected"


# ---------------------------------------------------------------- http, https, http_body

class HttpResponse:
    """httptools callbacks: collects what a check looks at and no more."""

    def __init__(self) -> None:
        self.headers_done = False
        self.complete = False
        self.body = bytearray()

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, chunk: bytes) -> None:
        if len(self.body) < HTTP_BODY_LIMIT:
            self.body += chunk[:HTTP_BODY_LIMIT - len(self.body)]

    def on_message_complete(self) -> None:
        self.complete = True


def http_request(check: HealthCheckSpec, address: str, port: int, tls: bool) -> bytes:
    host = check.http_host
    if not host:
        host = f"[{address}]" if ":" in address else address
        if port != (443 if tls else 80):
            host = f"{host}:{port}"
    for name, value in (("method", check.http_method), ("URI", check.http_uri), ("host", host)):
        if not value.isascii() or any(c in value for c in "\r\n\0") or (name != "host" and " " in value):
            raise CheckFailed(f"invalid HTTP {name} {value!r}")
    return (f"{check.http_method} {check.http_uri} HTTP/1.1\r\n"
            f"Host: {host}\r\n"
            "User-Agent: lbfast-health-check\r\n"
            "Accept: */*\r\n"
            "Connection: close\r\n\r\n").encode("ascii")


async def check_http(check: HealthCheckSpec, address: str, port: int, tls: bool = False) -> str:
    """Status code check; with http_body set (any HTTP type) the body must contain it too."""
    needle = check.http_body.encode() if check.http_body else None
    async with open_stream(check, address, port, tls) as (reader, writer):
        writer.write(http_request(check, address, port, tls))
        response = HttpResponse()
        parser = httptools.HttpResponseParser(response)
        while not (response.headers_done and (
                needle is None or response.complete or needle in response.body
                or len(response.body) >= HTTP_BODY_LIMIT)):
            data = await reader.read(16384)
            if not data:
                break
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as e:
                # Junk after what the check needs (say, a body sent with a 204) is the
                # server's business, as it is for HAProxy, which reads the status line.
                if not (response.headers_done and (needle is None or response.complete)):
                    raise CheckFailed(f"invalid HTTP response: {e}") from None
                break
        if not response.headers_done:
            raise CheckFailed("connection closed before a complete HTTP response")
    status = parser.get_status_code()
    if check.http_code is None:
        if not 200 <= status < 400:
            raise CheckFailed(f"HTTP {status}, expected 2xx or 3xx")
    elif status != check.http_code:
        raise CheckFailed(f"HTTP {status}, expected {check.http_code}")
    if needle is not None and needle not in response.body:
        shown = check.http_body if len(check.http_body) <= 40 else check.http_body[:40] + "..."
        raise CheckFailed(f"HTTP {status}, body does not contain {shown!r}")
    return f"HTTP {status}"


async def check_https(check: HealthCheckSpec, address: str, port: int) -> str:
    return await check_http(check, address, port, tls=True)


# ---------------------------------------------------------------- mysql

CLIENT_LONG_PASSWORD = 0x0001
CLIENT_PROTOCOL_41 = 0x0200
CLIENT_SECURE_CONNECTION = 0x8000
CHARSET_UTF8 = 33


async def read_mysql_packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await reader.readexactly(4)
    length, sequence = int.from_bytes(header[:3], "little"), header[3]
    if length > PACKET_LIMIT:
        raise CheckFailed(f"mysql: oversized packet ({length} bytes)")
    return sequence, await reader.readexactly(length)


def mysql_packet(sequence: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence & 0xFF]) + payload


def mysql_error(payload: bytes) -> str:
    code = int.from_bytes(payload[1:3], "little")
    message = payload[3:]
    if message[:1] == b"#":  # SQLSTATE marker and its five characters
        message = message[6:]
    return f"mysql error {code}: {message.decode(errors='replace')}"


def mysql_login(user: str) -> bytes:
    """HandshakeResponse41 with an empty password (HAProxy's `mysql-check user ... post-41`):
    no CLIENT_PLUGIN_AUTH, so a server never asks to switch to another auth method."""
    flags = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION
    return (struct.pack("<IIB23x", flags, 1 << 24, CHARSET_UTF8)
            + user.encode() + b"\0"
            + b"\0")  # length of the auth response: empty password


async def check_mysql(check: HealthCheckSpec, address: str, port: int) -> str:
    """Without `user` only the greeting is read; servers count that as an aborted
    handshake towards max_connect_errors, as with HAProxy, so prefer a check user."""
    async with open_stream(check, address, port) as (reader, writer):
        sequence, greeting = await read_mysql_packet(reader)
        if greeting[:1] == b"\xff":
            raise CheckFailed(mysql_error(greeting))
        if greeting[:1] != b"\x0a" or b"\0" not in greeting[1:]:
            raise CheckFailed(f"mysql: unexpected greeting {greeting[:16]!r}")
        version = greeting[1:greeting.index(b"\0", 1)].decode(errors="replace")
        if not check.user:
            return f"mysql {version} greeting"
        writer.write(mysql_packet(sequence + 1, mysql_login(check.user)))
        _, reply = await read_mysql_packet(reader)
        if reply[:1] == b"\xff":
            raise CheckFailed(mysql_error(reply))
        if reply[:1] != b"\x00":
            raise CheckFailed(f"mysql: login as {check.user!r} with an empty password not accepted "
                              f"(reply {reply[:1].hex() or 'empty'})")
        writer.write(mysql_packet(0, b"\x01"))  # COM_QUIT: the server logs no aborted connection
        return f"mysql {version} login ok"


# ---------------------------------------------------------------- pgsql

PG_PROTOCOL_3 = 196608
PG_AUTH_NAMES = {0: "ok", 2: "Kerberos", 3: "cleartext password", 5: "MD5 password",
                 7: "GSSAPI", 9: "SSPI", 10: "SASL"}


def pg_startup(user: str) -> bytes:
    body = (struct.pack("!I", PG_PROTOCOL_3)
            + b"user\0" + user.encode() + b"\0"
            + b"application_name\0lbfast-health-check\0"
            + b"\0")
    return struct.pack("!I", len(body) + 4) + body


def pg_error(payload: bytes) -> str:
    fields = {}
    for field in payload.split(b"\0"):
        if field:
            fields[field[:1]] = field[1:].decode(errors="replace")
    return f"pgsql {fields.get(b'C', '?')}: {fields.get(b'M', 'error')}"


async def check_pgsql(check: HealthCheckSpec, address: str, port: int) -> str:
    if not check.user:
        raise CheckFailed("pgsql check needs a user")
    async with open_stream(check, address, port) as (reader, writer):
        writer.write(pg_startup(check.user))
        while True:
            kind = await reader.readexactly(1)
            (length,) = struct.unpack("!I", await reader.readexactly(4))
            if not 4 <= length <= PACKET_LIMIT:
                raise CheckFailed(f"pgsql: bad message length {length}")
            payload = await reader.readexactly(length - 4)
            if kind == b"E":
                raise CheckFailed(pg_error(payload))
            if kind == b"R" and len(payload) >= 4:
                (code,) = struct.unpack("!I", payload[:4])
                if code != 0:
                    # Asked for credentials: the server is up; leaving here is silent in
                    # its log, where a Terminate would log a protocol error.
                    return f"pgsql auth request ({PG_AUTH_NAMES.get(code, code)})"
                # AuthenticationOk (trust): the role, the database and the connection
                # limit are checked after it, so wait for ReadyForQuery or the error.
            elif kind == b"Z":
                writer.write(b"X\0\0\0\x04")  # Terminate
                return "pgsql ready for query"
            elif kind not in (b"S", b"K", b"N"):  # ParameterStatus, BackendKeyData, Notice
                raise CheckFailed(f"pgsql: unexpected message {kind!r}")


# ---------------------------------------------------------------- redis

async def check_redis(check: HealthCheckSpec, address: str, port: int) -> str:
    async with open_stream(check, address, port) as (reader, writer):
        writer.write(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n")
        line = await reader.readline()
    if line.rstrip(b"\r\n") == b"+PONG":
        return "PONG"
    reply = line.strip().decode(errors="replace")[:120]
    raise CheckFailed(f"redis: {reply!r}" if reply else "redis: no reply")


# ---------------------------------------------------------------- ldap

BER_INTEGER, BER_OCTET_STRING, BER_ENUMERATED, BER_SEQUENCE = 0x02, 0x04, 0x0A, 0x30
LDAP_BIND_REQUEST, LDAP_BIND_RESPONSE = 0x60, 0x61        # [APPLICATION 0], [APPLICATION 1]
LDAP_UNBIND_REQUEST, LDAP_EXTENDED_RESPONSE = 0x42, 0x78  # [APPLICATION 2], [APPLICATION 24]
LDAP_AUTH_SIMPLE = 0x80                                   # [0] in AuthenticationChoice
LDAP_RESULT_NAMES = {1: "operationsError", 2: "protocolError", 7: "authMethodNotSupported",
                     13: "confidentialityRequired", 48: "inappropriateAuthentication",
                     49: "invalidCredentials", 50: "insufficientAccessRights", 51: "busy",
                     52: "unavailable", 53: "unwillingToPerform", 80: "other"}


def ber(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        digits = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(digits)]) + digits
    return bytes([tag]) + length + content


def ber_int(value: int, tag: int = BER_INTEGER) -> bytes:
    return ber(tag, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def ber_items(data: bytes) -> list[tuple[int, bytes]]:
    """The TLVs one after another in `data` (the content of a constructed element)."""
    items, i = [], 0
    while i < len(data):
        if i + 2 > len(data):
            raise CheckFailed("ldap: truncated BER element")
        tag, length = data[i], data[i + 1]
        i += 2
        if length & 0x80:
            digits = length & 0x7F
            length = int.from_bytes(data[i:i + digits], "big")
            i += digits
        if i + length > len(data):
            raise CheckFailed("ldap: truncated BER element")
        items.append((tag, data[i:i + length]))
        i += length
    return items


def ldap_message(message_id: int, operation: bytes) -> bytes:
    return ber(BER_SEQUENCE, ber_int(message_id) + operation)


# LDAPv3 anonymous simple bind: version 3, empty name, empty password.
ANONYMOUS_BIND = ldap_message(1, ber(LDAP_BIND_REQUEST, ber_int(3) + ber(BER_OCTET_STRING, b"")
                                     + ber(LDAP_AUTH_SIMPLE, b"")))
UNBIND = ldap_message(2, ber(LDAP_UNBIND_REQUEST, b""))


async def read_ber(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    tag, length = await reader.readexactly(2)
    if length & 0x80:
        digits = length & 0x7F
        if not 1 <= digits <= 4:
            raise CheckFailed(f"ldap: bad BER length ({digits} length bytes)")
        length = int.from_bytes(await reader.readexactly(digits), "big")
    if length > PACKET_LIMIT:
        raise CheckFailed(f"ldap: oversized message ({length} bytes)")
    return tag, await reader.readexactly(length)


async def check_ldap(check: HealthCheckSpec, address: str, port: int) -> str:
    async with open_stream(check, address, port) as (reader, writer):
        writer.write(ANONYMOUS_BIND)
        tag, message = await read_ber(reader)
        if tag != BER_SEQUENCE:
            raise CheckFailed(f"ldap: not an LDAPMessage (tag 0x{tag:02x})")
        items = ber_items(message)
        if len(items) < 2 or items[1][0] not in (LDAP_BIND_RESPONSE, LDAP_EXTENDED_RESPONSE):
            raise CheckFailed("ldap: no bindResponse")
        result = ber_items(items[1][1])  # resultCode, matchedDN, diagnosticMessage, ...
        if not result or result[0][0] != BER_ENUMERATED:
            raise CheckFailed("ldap: malformed LDAPResult")
        code = int.from_bytes(result[0][1], "big")
        if code != 0:
            # an extendedResponse here is a notice of disconnection (e.g. unavailable)
            diagnostic = result[2][1].decode(errors="replace") if len(result) > 2 else ""
            name = LDAP_RESULT_NAMES.get(code, "error")
            raise CheckFailed(f"ldap bind result {code} ({name})" + (f": {diagnostic}" if diagnostic else ""))
        if items[1][0] != LDAP_BIND_RESPONSE:
            raise CheckFailed("ldap: no bindResponse")
        writer.write(UNBIND)
        return "ldap bind ok"


async def check_none(check: HealthCheckSpec, address: str, port: int) -> str:
    return "not checked"


CHECKS: dict[CheckType, Callable[[HealthCheckSpec, str, int], Awaitable[str]]] = {
    CheckType.NONE: check_none,
    CheckType.TCP: check_tcp,
    CheckType.HTTP: check_http,
    CheckType.HTTPS: check_https,
    CheckType.HTTP_BODY: check_http,
    CheckType.MYSQL: check_mysql,
    CheckType.PGSQL: check_pgsql,
    CheckType.REDIS: check_redis,
    CheckType.LDAP: check_ldap,
}
