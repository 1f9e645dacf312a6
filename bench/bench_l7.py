"""Micro benchmarks of the L7 hot path, Cython next to its pure-Python twin: request head
handling (parse, check, rewrite), cookie routing, PROXY header encoding.

    python -m bench.bench_l7 [--seconds S]
"""
import argparse
import time

from lbfast import proxy_header
from lbfast.enums import Stickiness
from lbfast.l7._cookie import CookieRouter
from lbfast.l7._http import RequestReader
from lbfast.l7.reference import PyCookieRouter, PyRequestReader
from lbfast.routing import Pool
from lbfast.spec import BackendSpec, ServerSpec

REQUEST = (b"GET /shop/cart?item=42&color=blue HTTP/1.1\r\nHost: shop.example.com\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
           b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
           b"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\n"
           b"Cookie: session=abcdef0123456789; theme=dark; lbfast=%s; _ga=GA1.2.3\r\n"
           b"Connection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n\r\n")
EXTRA = (b"X-Forwarded-For: 10.200.0.2\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 80\r\n"
         b"Forwarded: for=10.200.0.2;proto=http\r\n")


class Sink:
    __slots__ = ("out",)

    def __init__(self):
        self.out = None

    def request_head(self, head):
        self.out = head.serialize(EXTRA)

    def request_body(self, data):
        pass

    def request_end(self):
        pass

    def request_upgrade(self, rest):
        pass


def rate(fn, seconds: float) -> float:
    """Calls per second of fn() (batches of 1000 until `seconds` have passed)."""
    n = 0
    start = time.perf_counter()
    while True:
        for _ in range(1000):
            fn()
        n += 1000
        took = time.perf_counter() - start
        if took >= seconds:
            return n / took


def cases(token: bytes):
    request = REQUEST % token
    sink_c, sink_py = Sink(), Sink()
    reader_c, reader_py = RequestReader(sink_c), PyRequestReader(sink_py)
    reader_c.feed(request)
    reader_py.feed(request)
    assert sink_c.out == sink_py.out, "Cython and Python heads differ"
    spec = BackendSpec(id=1, uuid="b", name="b", stickiness=Stickiness.COOKIE,
                       servers=tuple(ServerSpec(i, f"10.0.0.{i}", 80) for i in range(1, 9)))
    pool = Pool(spec)
    router_c, router_py = CookieRouter(b"secret", 1, "lbfast"), PyCookieRouter(b"secret", 1, "lbfast")
    router_c.update(pool.servers.values())
    router_py.update(pool.servers.values())
    cookies = [b"session=abcdef0123456789; theme=dark; lbfast=" + router_c.set_cookie(
        pool.servers["10.0.0.3:80"]).split(b"=", 1)[1].split(b";")[0] + b"; _ga=GA1.2.3"]
    assert router_c.choose(pool, cookies, "10.1.1.1") == router_py.choose(pool, cookies, "10.1.1.1")
    args = ("fd00:200::2", 51234, "fd00:200:ffff::1", 443)
    return [
        ("request head: parse+check+rewrite", lambda: reader_c.feed(request), lambda: reader_py.feed(request)),
        ("cookie routing: pinned client", lambda: router_c.choose(pool, cookies, "10.1.1.1"),
         lambda: router_py.choose(pool, cookies, "10.1.1.1")),
        ("cookie routing: new client (+Set-Cookie)", lambda: router_c.choose(pool, [b"a=b"], "10.1.1.1"),
         lambda: router_py.choose(pool, [b"a=b"], "10.1.1.1")),
        ("PROXY v2 header (IPv6)", lambda: proxy_header.encode(2, *args),
         lambda: proxy_header.reference_encode(2, *args)),
        ("PROXY v1 header (IPv6)", lambda: proxy_header.encode(1, *args),
         lambda: proxy_header.reference_encode(1, *args)),
    ]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_l7", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = ap.parse_args(argv)
    print(f"{'case':42} {'Cython':>12} {'Python':>12} {'speed-up':>9}")
    for name, c, py in cases(b"hHRh_09h1Dyt-E_v"):
        rc, rp = rate(c, args.seconds), rate(py, args.seconds)
        print(f"{name:42} {1e6 / rc:9.2f} µs {1e6 / rp:9.2f} µs {rc / rp:8.1f}x")


if __name__ == "__main__":
    main()
