"""Access logs: one line per HTTP request in HAProxy's httplog shape (or the same fields as
JSON), and one per connection of a userspace L4 frontend (tcplog's shape). XDP-forwarded
frontends have none: their connections never reach userspace. Lines are batched and handed to a writer thread, so a
slow disk never stalls the event loop; SIGUSR1 reopens the files (logrotate).

httplog line, as HAProxy users read it:

    10.0.0.9:51234 [03/Dec/2026:17:20:01.123] web pool/10.0.0.2:80 0/0/1/2/3 200 1432 78 -- "GET / HTTP/1.1"

client ip:port, [date the request started], frontend, backend/server, timers in ms
Tq (request head received) / Tw (waiting behind earlier requests) / Tc (connect to the
server, 0 on a reused connection) / Tr (server's response head) / Ta (total), status,
bytes to the client, bytes from the client, termination state, request line. -1 marks a
phase never reached. Termination state: first letter who ended it (- normally, C client,
S server, c client timeout, s server timeout), second the phase (R request, C connect,
H waiting for the response head, D data, - none).

tcplog line: client, [date], frontend, backend/server, Tw/Tc/Tt (Tw 0: no queue; Tc
connect, Tt total), bytes to the client, bytes from the client, termination state."""
import concurrent.futures
import logging
import os
import re
import time

import orjson

from lbfast.enums import AccessLogFormat
from lbfast.spec import AccessLogSpec

log = logging.getLogger("lbfast.access_log")

FLUSH_EVERY_S = 0.2
FLUSH_BYTES = 64 * 1024
NO_SERVER = "<NOSRV>"
# quotes, backslashes and control bytes of a request line are escaped as \xNN
_ESCAPE = {c: f"\\x{c:02x}" for c in (*range(32), 34, 92, 127)}
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\\x7f]')


def ms(start: float | None, end: float | None) -> int:
    return -1 if end is None or start is None else round((end - start) * 1000)


_second = [-1, ""]          # the last second formatted: a busy log formats each second once


def clock_date(wall: float) -> str:
    second = int(wall)
    if second != _second[0]:
        _second[0], _second[1] = second, time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(second))
    return f"{_second[1]}.{int(wall * 1000) % 1000:03d}"


class AccessLogFile:
    """One log file: lines gather in memory and a thread appends them in batches."""

    def __init__(self, path: str):
        self.path = path
        self.fd = self._open()
        self.lines: list[str] = []
        self.size = 0
        self.flush_timer = None
        self.thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="access-log")
        self.failed = False

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, line: str, loop) -> None:
        self.lines.append(line)
        self.size += len(line)
        if self.size >= FLUSH_BYTES:
            self.flush()
        elif self.flush_timer is None:
            self.flush_timer = loop.call_later(FLUSH_EVERY_S, self.flush)

    def flush(self) -> None:
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        if self.lines:
            data = "".join(self.lines).encode(errors="replace")
            self.lines, self.size = [], 0
            self.thread.submit(self._append, data)

    def _append(self, data: bytes) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            self.failed = False
        except OSError as e:
            if not self.failed:             # once per failure, not once per batch
                log.error("access log %s: %s", self.path, e)
            self.failed = True

    def reopen(self) -> None:
        """After the lines written so far: the next go to a new file at the same path."""
        self.flush()
        self.thread.submit(self._reopen)

    def _reopen(self) -> None:
        try:
            fd = self._open()
        except OSError as e:
            log.error("access log %s: cannot reopen: %s", self.path, e)
            return
        os.close(self.fd)
        self.fd = fd

    def close(self) -> None:
        self.flush()
        self.thread.shutdown(wait=True)
        os.close(self.fd)


_files: dict[str, AccessLogFile] = {}


def file_for(spec: AccessLogSpec) -> AccessLogFile:
    f = _files.get(spec.path)
    if f is None:
        f = _files[spec.path] = AccessLogFile(spec.path)
    return f


def reopen_all() -> None:
    for f in _files.values():
        f.reopen()


def close_all() -> None:
    for f in _files.values():
        f.close()
    _files.clear()


def escape(raw: bytes) -> str:
    text = raw.decode("latin-1")
    return text.translate(_ESCAPE) if _NEEDS_ESCAPE.search(raw) else text


class RequestLog:
    """What one request's log line needs, filled in as the exchange goes (loop times)."""
    __slots__ = ("spec", "frontend", "client", "wall", "start", "head_at", "started_at", "connect_at",
                 "sent_at", "response_at", "status", "bytes_out", "bytes_in", "head", "server")

    def __init__(self, spec, frontend: str, client: tuple[str, int], head, start: float, now: float):
        self.spec = spec
        self.frontend = frontend
        self.client = client
        self.wall = time.time() - (now - start)
        self.start = start
        self.head_at = now
        self.started_at = None      # routed (its turn came)
        self.connect_at = None      # a connection to the server was asked for
        self.sent_at = None         # the head went to the server
        self.response_at = None
        self.status = -1
        self.bytes_out = 0
        self.bytes_in = 0
        self.server = None
        self.head = head

    def request(self) -> str:
        head = self.head
        return f"{escape(head.method)} {escape(head.target[:2048])} HTTP/1.{head.http_minor}"

    def fields(self, end: float, termination: str, backend: str) -> dict:
        server = self.server
        name = NO_SERVER if server is None else (server.spec.label or server.key)
        tc = -1
        if self.sent_at is not None:
            tc = 0 if self.connect_at is None else ms(self.connect_at, self.sent_at)
        return {"client_ip": self.client[0], "client_port": self.client[1], "date": self.wall,
                "frontend": self.frontend, "backend": backend, "server": name,
                "Tq": ms(self.start, self.head_at), "Tw": ms(self.head_at, self.started_at), "Tc": tc,
                "Tr": ms(self.sent_at, self.response_at), "Ta": ms(self.start, end),
                "status": self.status, "bytes_out": self.bytes_out, "bytes_in": self.bytes_in,
                "termination": termination, "request": self.request()}

    def write(self, loop, termination: str, backend: str) -> None:
        end = loop.time()
        if self.spec.format == AccessLogFormat.JSON:
            line = format_line(self.spec.format, self.fields(end, termination, backend))
        else:                   # the same fields as fields(), without the dict: it runs per request
            server = self.server
            name = NO_SERVER if server is None else (server.spec.label or server.key)
            start, sent = self.start, self.sent_at
            tc = -1 if sent is None else (0 if self.connect_at is None else round((sent - self.connect_at) * 1000))
            line = (f"{self.client[0]}:{self.client[1]} [{clock_date(self.wall)}] {self.frontend} "
                    f"{backend}/{name} {round((self.head_at - start) * 1000)}/{ms(self.head_at, self.started_at)}/"
                    f"{tc}/{ms(sent, self.response_at)}/{round((end - start) * 1000)} {self.status} "
                    f"{self.bytes_out} {self.bytes_in} {termination} \"{self.request()}\"\n")
        file_for(self.spec).write(line, loop)


def format_line(fmt: AccessLogFormat, f: dict) -> str:
    if fmt == AccessLogFormat.JSON:
        f = {**f, "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(f["date"]))
             + f".{int(f['date'] * 1000) % 1000:03d}Z"}
        return orjson.dumps(f).decode() + "\n"
    return (f"{f['client_ip']}:{f['client_port']} [{clock_date(f['date'])}] {f['frontend']} "
            f"{f['backend']}/{f['server']} {f['Tq']}/{f['Tw']}/{f['Tc']}/{f['Tr']}/{f['Ta']} "
            f"{f['status']} {f['bytes_out']} {f['bytes_in']} {f['termination']} \"{f['request']}\"\n")


def termination(who: str, rec: RequestLog, request_done: bool) -> str:
    """Two letters: `who` ended it (C, S, c, s), in the phase the request had reached."""
    if not request_done and rec.sent_at is None:
        phase = "R"
    elif rec.sent_at is None:
        phase = "C"
    elif rec.response_at is None:
        phase = "H"
    else:
        phase = "D"
    return who + phase


class ConnectionLog:
    """What one L4 connection's line needs (loop times)."""
    __slots__ = ("spec", "frontend", "client", "wall", "start", "connected_at", "server", "bytes_out",
                 "bytes_in", "state")

    def __init__(self, spec, frontend: str, client: tuple[str, int], now: float):
        self.spec = spec
        self.frontend = frontend
        self.client = client
        self.wall = time.time()
        self.start = now
        self.connected_at = None
        self.server = None
        self.bytes_out = 0
        self.bytes_in = 0
        self.state = ""             # set by who ends it early (SC, cD); else from the close

    def fields(self, end: float, backend: str, aborted: bool) -> dict:
        server = self.server
        state = self.state or ("CD" if aborted else "--")
        return {"client_ip": self.client[0], "client_port": self.client[1], "date": self.wall,
                "frontend": self.frontend, "backend": backend,
                "server": NO_SERVER if server is None else (server.spec.label or server.key),
                "Tw": 0, "Tc": ms(self.start, self.connected_at), "Tt": ms(self.start, end),
                "bytes_out": self.bytes_out, "bytes_in": self.bytes_in, "termination": state}

    def write(self, loop, backend: str, aborted: bool) -> None:
        f = self.fields(loop.time(), backend, aborted)
        if self.spec.format == AccessLogFormat.JSON:
            line = format_line(self.spec.format, f)
        else:
            line = (f"{f['client_ip']}:{f['client_port']} [{clock_date(f['date'])}] {f['frontend']} "
                    f"{f['backend']}/{f['server']} {f['Tw']}/{f['Tc']}/{f['Tt']} "
                    f"{f['bytes_out']} {f['bytes_in']} {f['termination']}\n")
        file_for(self.spec).write(line, loop)
