"""1 GB up and 1 GB down through the proxy, streamed: the worker's RSS stays flat (no body
is ever held whole)."""
import hashlib
import json
import socket
import threading
import time

import pytest

from tests.l7_harness import Backends, L7Runner, backend, free_port, frontend, read_response, rss_kb

GB = 1 << 30
CHUNK = 1 << 20


@pytest.fixture(scope="module")
def setup():
    b = Backends(1)
    r = L7Runner(workers=1)
    port = free_port()
    r.apply(frontend(port, backend(b.servers)))
    yield r, b, port
    r.close()
    b.close()


class RssSampler:
    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            self.samples.append(rss_kb(self.pid))
            time.sleep(0.05)

    def done(self) -> int:
        self.stop.set()
        self.thread.join()
        return max(self.samples)


def warm_up(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /bytes/10000000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        while s.recv(1 << 20):
            pass


def test_1gb_download_streams_with_flat_memory(setup):
    r, b, port = setup
    warm_up(port)
    pid = r.worker_pids()[0]
    base = rss_kb(pid)
    sampler = RssSampler(pid)
    got = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % GB)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(65536)
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % GB in head
        got = len(rest)
        buf = bytearray(CHUNK)
        while got < GB:
            n = s.recv_into(buf)
            assert n
            got += n
    peak = sampler.done()
    assert got == GB
    assert peak - base < 40_000, f"RSS grew {peak - base} kB streaming 1 GB"


def test_1gb_upload_streams_with_flat_memory(setup):
    r, b, port = setup
    warm_up(port)
    pid = r.worker_pids()[0]
    base = rss_kb(pid)
    sampler = RssSampler(pid)
    block = bytes(range(256)) * (CHUNK // 256)
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(b"POST /sink HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % GB)
        for _ in range(GB // CHUNK):
            s.sendall(block)
            digest.update(block)
        status, _, body = read_response(s.makefile("rb"))
    peak = sampler.done()
    assert status == 200
    assert json.loads(body) == {"length": GB, "sha256": digest.hexdigest()}
    assert peak - base < 40_000, f"RSS grew {peak - base} kB streaming 1 GB"
