"""The Cython head and cookie code against its pure-Python twin, and the response side:
framing chosen per client and status, hop-by-hop headers out, HEAD bodies skipped."""
import pytest

from lbfast.enums import ServerMode
from lbfast.l7._cookie import CookieRouter, find_cookie
from lbfast.l7._http import FRAME_CHUNKED, FRAME_CLOSE, FRAME_LENGTH, FRAME_NONE, RequestReader, ResponseReader
from lbfast.l7.reference import PyCookieRouter, PyRequestReader, py_find_cookie
from lbfast.routing import Pool
from lbfast.spec import BackendSpec, ServerSpec


class Sink:
    def __init__(self):
        self.events = []

    def request_head(self, h):
        self.events.append(("head", h.serialize(b"X-Extra: 1\r\n"), h.keep_alive, h.has_body if hasattr(h, "has_body") else None))

    def request_body(self, d):
        self.events.append(("body", d))

    def request_end(self):
        self.events.append(("end",))

    def request_upgrade(self, rest):
        self.events.append(("upgrade", rest))

    response_head = request_head


REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"PUT /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: X-Drop\r\nX-Drop: 1\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: host, cookie\r\nCookie: a=b\r\n\r\n",
]


@pytest.mark.parametrize("raw", REQUESTS)
def test_cython_and_python_heads_agree(raw):
    c, p = Sink(), Sink()
    RequestReader(c).feed(raw)
    PyRequestReader(p).feed(raw)
    # Every event the reference also produces: kind, rewritten head and keep-alive (the
    # reference head has no has_body), body bytes, end.
    assert [e[:3] for e in c.events] == [e[:3] for e in p.events]
    assert c.events[0][0] == "head"


def test_head_rewrite_details():
    s = Sink()
    RequestReader(s).feed(REQUESTS[2])
    head = s.events[0][1]
    assert b"X-Drop" not in head and b"Connection" not in head
    assert head.endswith(b"Transfer-Encoding: chunked\r\nX-Extra: 1\r\n\r\n")
    s = Sink()
    RequestReader(s).feed(REQUESTS[5])
    assert b"Host: a" in s.events[0][1] and b"Cookie: a=b" in s.events[0][1]   # protected


class RSink:
    def __init__(self):
        self.heads, self.body, self.ends, self.rest = [], b"", 0, None

    def response_head(self, h):
        self.heads.append(h)

    def response_body(self, d):
        self.body += d

    def response_end(self):
        self.ends += 1

    def response_upgrade(self, rest):
        self.rest = rest


def response(raw: bytes, head_request=False) -> RSink:
    s = RSink()
    r = ResponseReader(s)
    r.head_request = head_request
    r.feed(raw)
    return s


def test_response_framing_per_client():
    s = response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 5\r\nX: y\r\n\r\n"
                 b"2\r\nhi\r\n0\r\n\r\n")
    h = s.heads[0]
    assert s.body == b"hi" and s.ends == 1
    out = h.serialize(True, True, False)
    assert h.framing == FRAME_CHUNKED and b"Keep-Alive" not in out and b"X: y" in out
    out = h.serialize(True, False, False)                 # HTTP/1.0 client: until close
    assert h.framing == FRAME_CLOSE and h.closes and b"Connection: close" in out
    h = response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc").heads[0]
    assert b"Content-Length: 3" in h.serialize(True, True, False) and h.framing == FRAME_LENGTH
    assert b"Connection: keep-alive" in h.serialize(True, False, False)
    for status in (204, 304):
        h = response(b"HTTP/1.1 %d X\r\n\r\n" % status).heads[0]
        h.serialize(True, True, False)
        assert h.framing == FRAME_NONE


def test_head_response_body_is_skipped():
    s = response(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", head_request=True)
    assert s.ends == 1 and s.body == b""
    out = s.heads[0].serialize(True, True, True)
    assert b"Content-Length: 1000" in out and s.heads[0].framing == FRAME_NONE


def test_interim_and_switching_responses():
    s = response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert [h.status for h in s.heads] == [100, 200] and s.ends == 2
    s = response(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nFRAMES")
    assert s.heads[0].upgrade == b"websocket" and s.rest == b"FRAMES"
    assert b"Upgrade: websocket" in s.heads[0].serialize(True, True, False)


@pytest.mark.parametrize("headers,value", [
    ([b"lb=abc"], b"abc"), ([b"a=1; lb=abc; b=2"], b"abc"), ([b"a=1", b" lb = abc ;x=1"], b"abc"),
    ([b'lb="q"'], b"q"), ([b"xlb=1; lbx=2"], None), ([b"lb"], None), ([b""], None), ([b"lb=; a=1"], b""),
])
def test_find_cookie(headers, value):
    assert find_cookie(headers, b"lb") == value == py_find_cookie(headers, b"lb")


def test_cookie_routers_agree_and_respect_modes():
    spec = BackendSpec(id=7, uuid="b", name="b", servers=(
        ServerSpec(1, "10.0.0.1", 80), ServerSpec(2, "10.0.0.2", 80, mode=ServerMode.DRAIN),
        ServerSpec(3, "10.0.0.3", 80, mode=ServerMode.BACKUP), ServerSpec(4, "10.0.0.4", 80, mode=ServerMode.REJECT)))
    pool = Pool(spec)
    c, p = CookieRouter(b"k", 7, "lb"), PyCookieRouter(b"k", 7, "lb")
    c.update(pool.servers.values())
    p.update(pool.servers.values())
    def cookie(key):
        return [b"lb=" + c.set_cookie(pool.servers[key]).split(b"=", 1)[1].split(b";")[0]]
    for key in pool.servers:
        assert c.pinned(cookie(key)) is p.pinned(cookie(key))
    assert c.pinned(cookie("10.0.0.1:80")).key == "10.0.0.1:80"
    assert c.pinned(cookie("10.0.0.2:80")).key == "10.0.0.2:80"       # drain keeps its clients
    assert c.pinned(cookie("10.0.0.3:80")) is None                     # backup while accept is up
    assert c.pinned(cookie("10.0.0.4:80")) is None                     # reject
    pool.set_health("10.0.0.1:80", False)
    assert c.pinned(cookie("10.0.0.3:80")).key == "10.0.0.3:80"
    assert b"10.0.0" not in c.set_cookie(pool.servers["10.0.0.1:80"])
