"""Pure-Python twins of the L7 Cython extensions (head handling over httptools, cookie
routing): same checks, same output. Tests compare them with the C versions; the micro
bench measures what the C versions save."""
import base64
import hmac

from httptools import HttpRequestParser
from httptools.parser.errors import HttpParserCallbackError, HttpParserError, HttpParserUpgrade

from lbfast.enums import ServerMode
from lbfast.l7.errors import BadRequest

REQUEST_DROP = frozenset([b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                          b"transfer-encoding", b"content-length", b"upgrade", b"x-forwarded-proto",
                          b"x-forwarded-port"])
PROTECTED = frozenset([b"host", b"cookie", b"x-forwarded-for", b"forwarded"])


class PyRequestHead:
    def __init__(self):
        self.method = b""
        self.target = b""
        self.http_minor = 1
        self.keep_alive = False
        self.upgrade = None
        self.content_length = -1
        self.chunked = False
        self.expect_continue = False
        self.host = None
        self.cookies = []
        self.headers = []
        self.strip = set()

    def serialize(self, extra: bytes = b"") -> bytes:
        parts = [self.method, b" ", self.target, b" HTTP/1.1\r\n"]
        for lname, name, value in self.headers:
            if lname in REQUEST_DROP or lname in self.strip:
                continue
            parts += [name, b": ", value, b"\r\n"]
        if self.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif self.content_length >= 0:
            parts.append(b"Content-Length: %d\r\n" % self.content_length)
        if self.upgrade is not None:
            parts += [b"Connection: Upgrade\r\nUpgrade: ", self.upgrade, b"\r\n"]
        parts += [extra, b"\r\n"]
        return b"".join(parts)


class PyRequestReader:
    def __init__(self, sink, max_request_line=8192, max_header_bytes=32768, max_headers=100):
        self.parser = HttpRequestParser(self)
        self.sink = sink
        self.max_line, self.max_header_bytes, self.max_headers = max_request_line, max_header_bytes, max_headers
        self.in_body = False

    def feed(self, data):
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as e:
            self.sink.request_upgrade(data[e.args[0]:])
        except HttpParserCallbackError as e:
            raise e.__context__ if e.__context__ is not None else BadRequest(str(e)) from None
        except HttpParserError as e:
            raise BadRequest(str(e)) from None

    def on_message_begin(self):
        self.head = PyRequestHead()
        self.url = []
        self.url_len = self.header_bytes = self.nheaders = self.n_host = 0
        self.in_body = False

    def on_url(self, piece):
        self.url_len += len(piece)
        if self.url_len > self.max_line:
            raise BadRequest("request line too long")
        self.url.append(piece)

    def on_header(self, name, value):
        head = self.head
        self.header_bytes += len(name) + len(value) + 4
        self.nheaders += 1
        if self.header_bytes > self.max_header_bytes or self.nheaders > self.max_headers:
            raise BadRequest("request headers too large")
        if self.in_body:
            return
        if any(c < 0x20 and c != 0x09 or c == 0x7F for c in value):
            raise BadRequest("control character in a header value")
        lname = name.lower()
        head.headers.append((lname, name, value))
        if lname == b"content-length":
            if head.content_length >= 0 or not value.isdigit():
                raise BadRequest("bad Content-Length")
            head.content_length = int(value)
        elif lname == b"transfer-encoding":
            if head.chunked or value.strip().lower() != b"chunked":
                raise BadRequest("Transfer-Encoding other than a single chunked")
            head.chunked = True
        elif lname == b"host":
            self.n_host += 1
            if self.n_host > 1:
                raise BadRequest("more than one Host")
            head.host = value
        elif lname == b"cookie":
            head.cookies.append(value)
        elif lname == b"connection":
            head.strip |= {t.strip().lower() for t in value.split(b",") if t.strip()}
        elif lname == b"upgrade":
            head.upgrade = value
        elif lname == b"expect":
            head.expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self):
        head = self.head
        version = self.parser.get_http_version()
        if version == "1.1":
            if self.n_host == 0:
                raise BadRequest("HTTP/1.1 request without Host")
        elif version == "1.0":
            head.http_minor = 0
            if head.chunked:
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        else:
            raise BadRequest(f"unsupported HTTP version {version}")
        if head.chunked and head.content_length >= 0:
            raise BadRequest("both Content-Length and Transfer-Encoding")
        head.method = self.parser.get_method()
        if head.method == b"CONNECT":
            raise BadRequest("CONNECT is not proxied")
        head.target = b"".join(self.url)
        head.keep_alive = self.parser.should_keep_alive()
        if not self.parser.should_upgrade():
            head.upgrade = None
        head.strip -= PROTECTED
        self.in_body = True
        self.sink.request_head(head)

    def on_body(self, data):
        self.sink.request_body(data)

    def on_message_complete(self):
        self.in_body = False
        self.sink.request_end()


def py_find_cookie(headers: list[bytes], name: bytes) -> bytes | None:
    for header in headers:
        for part in header.split(b";"):
            k, sep, v = part.partition(b"=")
            if sep and k.strip() == name:
                v = v.strip()
                if len(v) >= 2 and v[:1] == v[-1:] == b'"':
                    v = v[1:-1]
                return v
    return None


class PyCookieRouter:
    def __init__(self, secret: bytes, backend_id: int, name: str, secure: bool = False,
                 max_age: int | None = None):
        self.secret, self.backend_id, self.name, self.max_age = secret, backend_id, name.encode(), max_age
        self.attributes = (b"; Path=/; HttpOnly" + (b"; Secure" if secure else b"")
                           + (b"; Max-Age=%d" % max_age if max_age is not None else b""))

    def update(self, servers):
        self.servers = list(servers)
        self.by_token, self.lines = {}, {}
        for s in self.servers:
            mac = hmac.digest(self.secret, b"lbfast-cookie|%d|%s" % (self.backend_id, s.key.encode()), "sha256")
            token = base64.urlsafe_b64encode(mac[:12])
            self.by_token[token] = s
            self.lines[s.key] = b"Set-Cookie: " + self.name + b"=" + token + self.attributes + b"\r\n"

    def pinned(self, cookies):
        value = py_find_cookie(cookies, self.name) if cookies else None
        s = self.by_token.get(value) if value is not None else None
        if s is None or not s.up:
            return None
        mode = s.spec.mode
        if mode in (ServerMode.ACCEPT, ServerMode.DRAIN):
            return s
        if mode == ServerMode.BACKUP and not any(o.up and o.spec.mode == ServerMode.ACCEPT for o in self.servers):
            return s
        return None

    def choose(self, pool, cookies, client_ip):
        s = self.pinned(cookies)
        if s is not None:
            return s, None
        s = pool.choose(client_ip)
        return (s, self.lines.get(s.key)) if s is not None else (None, None)
