"""Helpers for the L7 tests: the L7 data plane (real worker processes) on an event loop in a
background thread (optionally inside a testbed namespace), frontend specs, loopback
backends (control.testbed_servers), a raw recording backend and a raw HTTP client."""
from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import uvloop

from control.testbed import stop_processes
from lbfast.enums import Protocol
from lbfast.l7 import L7Dataplane, L7Limits
from lbfast.spec import BackendSpec, FrontendSpec, ServerSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLONE_NEWNET = 0x40000000


def free_port(host: str = "127.0.0.1") -> int:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class LoopThread:
    """A uvloop running in a daemon thread; `run(coro)` waits for a result. With `netns`
    the thread joins that namespace first: listeners and worker processes live there."""

    def __init__(self, netns: str | None = None):
        self.loop: asyncio.AbstractEventLoop | None = None
        ready = threading.Event()
        error: list[BaseException] = []

        def target():
            try:
                if netns:
                    libc = ctypes.CDLL(None, use_errno=True)
                    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
                    try:
                        if libc.setns(fd, CLONE_NEWNET) != 0:
                            raise OSError(ctypes.get_errno(), "setns")
                    finally:
                        os.close(fd)
                self.loop = uvloop.new_event_loop()
                asyncio.set_event_loop(self.loop)
            except BaseException as e:
                error.append(e)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        ready.wait()
        if error:
            raise error[0]

    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable, *args) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class L7Runner:
    """The daemon's L7Dataplane with its workers, driven from synchronous tests."""

    def __init__(self, workers: int = 1, limits: L7Limits = L7Limits(), netns: str | None = None):
        self.lt = LoopThread(netns)
        self.dp = L7Dataplane(workers=workers, secret=b"test-secret", limits=limits)
        self.passive: list[tuple[int, str, str]] = []
        self.dp.on_passive_failure = lambda b, k, r: self.passive.append((b, k, r))

    def apply(self, *frontends: FrontendSpec) -> None:
        self.lt.run(self.dp.apply(list(frontends)))

    def stats(self) -> dict:
        return self.lt.run(self.dp.refresh_stats())

    def set_health(self, backend_id: int, key: str, up: bool) -> None:
        self.lt.call(self.dp.set_server_health, backend_id, key, up)
        self.sync()

    def sync(self) -> None:
        """Returns once every worker has handled all it was sent before: a worker obeys its
        commands in order, so its answer to a stats request comes after them."""
        async def ask_every_worker():
            await asyncio.gather(*(w.call({"cmd": "stats"}, timeout=5) for w in self.dp.workers))
        self.lt.run(ask_every_worker())

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.dp.workers]

    def close(self) -> None:
        try:
            self.lt.run(self.dp.close())
        finally:
            self.lt.stop()


def backend(servers: list[tuple[str, int]], backend_id: int = 1, **kw) -> BackendSpec:
    kw.setdefault("protocol", Protocol.HTTP)
    return BackendSpec(id=backend_id, uuid=f"b{backend_id}", name=f"backend{backend_id}",
                       servers=tuple(ServerSpec(i + 1, a, p) for i, (a, p) in enumerate(servers)), **kw)


def frontend(port: int, be: BackendSpec, address: str = "127.0.0.1", protocol: Protocol = Protocol.HTTP,
             frontend_id: int = 1, **kw) -> FrontendSpec:
    return FrontendSpec(id=frontend_id, uuid=f"f{frontend_id}", name=f"frontend{frontend_id}", lb_id=1,
                        address=address, port=port, protocol=protocol, backend=be, **kw)


class Backends:
    """control.testbed_servers on loopback: HTTP on ports[i] (and TCP echo beside it)."""

    def __init__(self, n: int = 2, bind: str = "127.0.0.1"):
        self.bind = bind
        self.ports = [free_port(bind) for _ in range(n)]
        self.procs = []
        for i, port in enumerate(self.ports):
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "control.testbed_servers", "--name", f"b{i}", "--http", str(port),
                 "--bind", bind, "--parent-pid", str(os.getpid())], cwd=REPO,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            wait_port(bind, port)

    @property
    def servers(self) -> list[tuple[str, int]]:
        return [(self.bind, p) for p in self.ports]

    def key(self, i: int) -> str:
        return f"[{self.bind}]:{self.ports[i]}" if ":" in self.bind else f"{self.bind}:{self.ports[i]}"

    def close(self) -> None:
        stop_processes(self.procs, grace=5)


class Recorder:
    """A raw TCP backend that records every byte it receives; `respond(conn_bytes)` gives
    what to answer (default: one small 200 per request head seen)."""

    def __init__(self, respond: Callable[[bytes], bytes] | None = None, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.host = host
        self.received: list[bytes] = []
        self.respond = respond
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(10)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                self.received.append(data)
                buf += data
                if self.respond is not None:
                    out = self.respond(buf)
                    if out is None:
                        continue
                    buf = b""
                    if out == b"":
                        break
                    conn.sendall(out)
                elif b"\r\n\r\n" in buf:
                    buf = buf.split(b"\r\n\r\n", 1)[1]
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        finally:
            conn.close()

    @property
    def total(self) -> int:
        return sum(len(d) for d in self.received)

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def raw_exchange(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 5.0,
                 read_until_close: bool = True) -> bytes:
    """Send `data` on a fresh connection and read until the proxy closes (or timeout)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
        return out


def read_response(f) -> tuple[int, dict[str, str], bytes]:
    """One Content-Length or chunked response from `sock.makefile("rb")` (keep it for the
    next response: it buffers)."""
    status_line = f.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        k = k.strip().lower()
        headers[k] = f"{headers[k]}, {v.strip()}" if k in headers else v.strip()
    body = b""
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                f.readline()
                break
            body += f.read(size)
            f.readline()
    return status, headers, body


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
