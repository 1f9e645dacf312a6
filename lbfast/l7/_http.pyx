# cython: language_level=3, boundscheck=False, wraparound=False
"""Request and response heads of the L7 proxy. llhttp (through httptools) parses; these
classes collect the heads, refuse what could be read two ways (smuggling) or is too big,
and write the rewritten heads (hop-by-hop headers out, framing and X-Forwarded-* in)."""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE

from httptools import HttpRequestParser, HttpResponseParser
from httptools.parser.errors import HttpParserCallbackError, HttpParserError, HttpParserUpgrade

from lbfast.l7.errors import BadRequest, BadResponse

# How a response body goes to the client.
FRAME_NONE = 0          # no body (HEAD, 1xx, 204, 304, 101)
FRAME_LENGTH = 1        # Content-Length bytes, passed as they come
FRAME_CHUNKED = 2       # re-chunked by the proxy
FRAME_CLOSE = 3         # until the server closes; the client connection closes after it

# Framing and connection management are the proxy's own on each side: these never pass.
cdef frozenset REQUEST_DROP = frozenset([
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"content-length", b"upgrade", b"x-forwarded-proto",
    b"x-forwarded-port"])
cdef frozenset RESPONSE_DROP = frozenset([
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"content-length", b"upgrade"])
# A client may name headers in Connection to have them dropped, but never these.
cdef frozenset PROTECTED = frozenset([b"host", b"cookie", b"x-forwarded-for", b"forwarded"])


class _SkipBody(Exception):
    """Raised out of the parser after the head of a response that has no body (HEAD)."""


cdef inline bint _bad_value(bytes value):
    """NUL, CR, LF and other controls but HTAB (llhttp already refuses them: a second lock)."""
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(value)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(value)
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        if (c < 0x20 and c != 0x09) or c == 0x7f:
            return True
    return False


cdef set _tokens(bytes value):
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


cdef long long _content_length(bytes value, object error) except -2:
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(value)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(value)
    cdef long long v = 0
    if n == 0 or n > 18:
        raise error("bad Content-Length")
    for i in range(n):
        if p[i] < 48 or p[i] > 57:
            raise error("bad Content-Length")
        v = v * 10 + (p[i] - 48)
    return v


def chunk_size_line(Py_ssize_t n):
    """The line that opens a chunk of n bytes."""
    return b"%x\r\n" % n


cdef class RequestHead:
    def __cinit__(self):
        self.method = b""
        self.target = b""
        self.http_minor = 1
        self.content_length = -1
        self.cookies = []
        self.headers = []
        self.strip = set()

    @property
    def has_body(self):
        return self.chunked or self.content_length > 0

    def header(self, bytes lname):
        """The first value of a header, by lower-case name (None when absent)."""
        for h in self.headers:
            if h[0] == lname:
                return h[2]
        return None

    def serialize(self, bytes extra=b""):
        """The head for the server: HTTP/1.1, the client's end-to-end headers, our framing,
        then `extra` (complete header lines: X-Forwarded-For and friends)."""
        cdef list parts = [self.method, b" ", self.target, b" HTTP/1.1\r\n"]
        cdef tuple h
        cdef set strip = self.strip
        for h in self.headers:
            if h[0] in REQUEST_DROP or (strip and h[0] in strip):
                continue
            parts.append(h[1])
            parts.append(b": ")
            parts.append(h[2])
            parts.append(b"\r\n")
        if self.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif self.content_length >= 0:
            parts.append(b"Content-Length: %d\r\n" % self.content_length)
        if self.upgrade is not None:
            parts.append(b"Connection: Upgrade\r\nUpgrade: ")
            parts.append(self.upgrade)
            parts.append(b"\r\n")
        parts.append(extra)
        parts.append(b"\r\n")
        return b"".join(parts)


cdef class ResponseHead:
    def __cinit__(self):
        self.reason = b""
        self.http_minor = 1
        self.content_length = -1
        self.headers = []
        self.strip = set()

    def header(self, bytes lname):
        for h in self.headers:
            if h[0] == lname:
                return h[2]
        return None

    def serialize(self, bint client_keep_alive, bint client_http11, bint head_request,
                  bytes extra=b""):
        """The head for the client; sets `framing` (how the body goes) and `closes`
        (whether the client connection ends after this response)."""
        cdef list parts = [b"HTTP/1.1 %d " % self.status, self.reason, b"\r\n"]
        cdef tuple h
        cdef set strip = self.strip
        cdef int status = self.status
        cdef bint switching = status == 101 and self.upgrade is not None
        for h in self.headers:
            if h[0] in RESPONSE_DROP or (strip and h[0] in strip):
                continue
            parts.append(h[1])
            parts.append(b": ")
            parts.append(h[2])
            parts.append(b"\r\n")
        self.closes = not client_keep_alive
        if switching:
            self.framing = FRAME_NONE
            parts.append(b"Connection: Upgrade\r\nUpgrade: ")
            parts.append(self.upgrade)
            parts.append(b"\r\n")
        else:
            if status < 200 or status == 204 or status == 304 or head_request:
                self.framing = FRAME_NONE
                if self.content_length >= 0 and status >= 200 and status != 204:
                    parts.append(b"Content-Length: %d\r\n" % self.content_length)
            elif self.content_length >= 0:
                self.framing = FRAME_LENGTH
                parts.append(b"Content-Length: %d\r\n" % self.content_length)
            elif client_http11:
                self.framing = FRAME_CHUNKED
                parts.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.framing = FRAME_CLOSE
                self.closes = True
            if status >= 200:
                if self.closes:
                    parts.append(b"Connection: close\r\n")
                elif not client_http11:
                    parts.append(b"Connection: keep-alive\r\n")
        parts.append(extra)
        parts.append(b"\r\n")
        return b"".join(parts)


cdef class RequestReader:
    """Feeds client bytes to llhttp and hands `sink` the checked pieces:
    request_head(RequestHead), request_body(bytes), request_end(),
    request_upgrade(bytes after the head). Raises BadRequest for anything malformed,
    ambiguous or over the limits."""

    def __init__(self, sink, Py_ssize_t max_request_line=8192,
                 Py_ssize_t max_header_bytes=32768, Py_ssize_t max_headers=100):
        self.parser = HttpRequestParser(self)
        self._on_head = sink.request_head
        self._on_body = sink.request_body
        self._on_end = sink.request_end
        self._on_upgrade = sink.request_upgrade
        self.max_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.messages = 0

    @property
    def idle(self):
        """No request has started since the last one ended."""
        return not self.in_head and not self.in_body

    def feed(self, data):
        if not self.in_body:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as e:
            self._on_upgrade(data[e.args[0]:])
            return
        except HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, BadRequest):
                raise cause from None
            if cause is not None:
                raise cause
            raise BadRequest(str(e)) from None
        except HttpParserError as e:
            raise BadRequest(str(e) or type(e).__name__) from None
        if self.in_head and self.head_bytes > self.max_line + self.max_header_bytes + 4096:
            raise BadRequest("request head too large")

    # -- llhttp callbacks (through httptools) -----------------------------------
    def on_message_begin(self):
        self.head = RequestHead()
        self.url = []
        self.url_len = 0
        self.header_bytes = 0
        self.nheaders = 0
        self.n_host = 0
        self.in_head = True

    def on_url(self, bytes piece):
        self.url_len += len(piece)
        if self.url_len > self.max_line:
            raise BadRequest("request line too long")
        self.url.append(piece)

    def on_header(self, bytes name, bytes value):
        cdef RequestHead head = self.head
        cdef bytes lname
        self.header_bytes += len(name) + len(value) + 4
        self.nheaders += 1
        if self.header_bytes > self.max_header_bytes:
            raise BadRequest("request headers too large")
        if self.nheaders > self.max_headers:
            raise BadRequest("too many request headers")
        if self.in_body:
            return      # chunked trailers: checked above, never forwarded
        if _bad_value(value):
            raise BadRequest("control character in a header value")
        lname = name.lower()
        head.headers.append((lname, name, value))
        if lname == b"content-length":
            if head.content_length >= 0:
                raise BadRequest("more than one Content-Length")
            head.content_length = _content_length(value, BadRequest)
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
            head.strip |= _tokens(value)
        elif lname == b"upgrade":
            head.upgrade = value
        elif lname == b"expect":
            head.expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self):
        cdef RequestHead head = self.head
        version = self.parser.get_http_version()
        if version == "1.1":
            head.http_minor = 1
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
        elif head.upgrade is None:
            raise BadRequest("Connection: upgrade without Upgrade")
        head.strip -= PROTECTED
        self.in_head = False
        self.in_body = True
        self.head_bytes = 0
        self.messages += 1
        self._on_head(head)

    def on_body(self, bytes data):
        self._on_body(data)

    def on_message_complete(self):
        self.in_body = False
        self.in_head = False
        self._on_end()


cdef class ResponseReader:
    """Feeds server bytes to llhttp: response_head(ResponseHead), response_body(bytes),
    response_end(), response_upgrade(bytes after a 101 head). Raises BadResponse.
    Set `head_request` before the response to a HEAD arrives: it has no body whatever
    its Content-Length says; the reader then starts afresh for the next response."""

    def __init__(self, sink, Py_ssize_t max_header_bytes=65536, Py_ssize_t max_headers=200):
        self.sink = sink
        self.parser = HttpResponseParser(self)
        self._on_head = sink.response_head
        self._on_body = sink.response_body
        self._on_end = sink.response_end
        self._on_upgrade = sink.response_upgrade
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers

    @property
    def idle(self):
        return not self.in_head and not self.in_body

    def feed(self, data):
        if not self.in_body:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as e:
            self._on_upgrade(data[e.args[0]:])
            return
        except HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, _SkipBody):
                self.parser = HttpResponseParser(self)
                self.in_body = False
                self.in_head = False
                self._on_end()
                return
            if isinstance(cause, BadResponse):
                raise cause from None
            if cause is not None:
                raise cause
            raise BadResponse(str(e)) from None
        except HttpParserError as e:
            raise BadResponse(str(e) or type(e).__name__) from None
        if self.in_head and self.head_bytes > self.max_header_bytes + 4096:
            raise BadResponse("response head too large")

    def on_message_begin(self):
        self.head = ResponseHead()
        self.header_bytes = 0
        self.nheaders = 0
        self.in_head = True

    def on_status(self, bytes reason):
        self.head.reason += reason

    def on_header(self, bytes name, bytes value):
        cdef ResponseHead head = self.head
        cdef bytes lname
        self.header_bytes += len(name) + len(value) + 4
        self.nheaders += 1
        if self.header_bytes > self.max_header_bytes or self.nheaders > self.max_headers:
            raise BadResponse("response head too large")
        if self.in_body:
            return
        if _bad_value(value):
            raise BadResponse("control character in a response header")
        lname = name.lower()
        head.headers.append((lname, name, value))
        if lname == b"content-length":
            if head.content_length >= 0:
                raise BadResponse("more than one Content-Length")
            head.content_length = _content_length(value, BadResponse)
        elif lname == b"transfer-encoding":
            if head.chunked or value.strip().lower() != b"chunked":
                raise BadResponse("Transfer-Encoding other than a single chunked")
            head.chunked = True
        elif lname == b"connection":
            head.strip |= _tokens(value)
        elif lname == b"upgrade":
            head.upgrade = value

    def on_headers_complete(self):
        cdef ResponseHead head = self.head
        head.status = self.parser.get_status_code()
        head.http_minor = 1 if self.parser.get_http_version() == "1.1" else 0
        if head.chunked and head.content_length >= 0:
            raise BadResponse("both Content-Length and Transfer-Encoding")
        head.keep_alive = self.parser.should_keep_alive()
        if head.status != 101:
            head.upgrade = None
        head.strip -= PROTECTED
        self.in_head = False
        self.in_body = True
        self.head_bytes = 0
        self._on_head(head)
        if self.head_request and head.status >= 200:
            raise _SkipBody()

    def on_body(self, bytes data):
        self._on_body(data)

    def on_message_complete(self):
        self.in_body = False
        self.in_head = False
        self._on_end()
