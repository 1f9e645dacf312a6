"""Requests that could be read two ways, or break the limits, are answered 400 and the
connection closed; the server never sees a byte of them (a recording backend checks)."""
import pytest

from lbfast.l7 import L7Limits
from tests.l7_harness import L7Runner, Recorder, backend, free_port, frontend, raw_exchange

H = b"Host: a\r\n"
MALFORMED = {
    "cl_and_te": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_and_cl": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    "duplicate_cl_same": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "duplicate_cl_different": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl_list": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 3\r\n\r\nabc",
    "cl_sign": b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc",
    "te_not_chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "te_gzip_chunked": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te_twice": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_space_before_colon": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te_in_http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bad_chunk_size": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk_size_overflow": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nabc\r\n0\r\n\r\n",
    "chunk_size_space": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
    "chunk_missing_crlf": b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    "nul_in_value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    "cr_in_value": b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n",
    "lf_line_endings": b"GET / HTTP/1.1\n" + b"Host: a\n\n",
    "space_in_header_name": b"GET / HTTP/1.1\r\n" + H + b"X A: b\r\n\r\n",
    "no_colon": b"GET / HTTP/1.1\r\n" + H + b"X-A\r\n\r\n",
    "whitespace_before_first_header": b"GET / HTTP/1.1\r\n Host: a\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "no_host_http11": b"GET / HTTP/1.1\r\n\r\n",
    "http_version_2": b"GET / HTTP/2.0\r\n" + H + b"\r\n",
    "http_version_bogus": b"GET / HTTP/1.2\r\n" + H + b"\r\n",
    "request_line_too_long": b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n" + H + b"\r\n",
    "headers_too_large": b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 200) for i in range(30)) + b"\r\n",
    "too_many_headers": b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(60)) + b"\r\n",
    "connect_method": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    "control_in_target": b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n",
}


@pytest.fixture(scope="module")
def setup():
    rec = Recorder()
    r = L7Runner(workers=1, limits=L7Limits(max_request_line=2048, max_header_bytes=4096, max_headers=50))
    port = free_port()
    r.apply(frontend(port, backend([("127.0.0.1", rec.port)])))
    yield r, rec, port
    r.close()
    rec.close()


def good_request(tag: str) -> bytes:
    return b"GET /after-%s HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % tag.encode()


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_is_400_closed_and_never_forwarded(setup, name):
    r, rec, port = setup
    before = len(rec.received)
    out = raw_exchange(port, MALFORMED[name])
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert b"Connection: close" in out.split(b"\r\n\r\n", 1)[0]
    # A good request sent after it is forwarded; once the backend has it, a forwarded
    # malformed request (sent to the backend before) would be there too, ahead of it.
    assert raw_exchange(port, good_request(name)).startswith(b"HTTP/1.1 200")
    seen = b"".join(rec.received[before:])
    assert seen.startswith(b"GET /after-%s " % name.encode()) and seen.count(b" HTTP/1.") == 1, seen[:300]


def test_battery_is_large_enough_and_counted(setup):
    r, rec, port = setup
    assert len(MALFORMED) >= 15
    before = r.stats()["frontends"][0]["bad_requests"]
    for data in MALFORMED.values():
        raw_exchange(port, data)
    assert r.stats()["frontends"][0]["bad_requests"] - before == len(MALFORMED)
    assert raw_exchange(port, good_request("battery")).startswith(b"HTTP/1.1 200")
