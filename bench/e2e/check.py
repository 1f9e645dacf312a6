"""The functional check before every run: a few requests from the client namespace, each
answered 200 by a backend, both backends seen, keep-alive working, the sticky cookie set
and honoured, and (for TLS) the negotiated protocol and cipher recorded."""
from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

NEW_CONNECTIONS = 6      # per URL; round robin over two backends shows both
KEEPALIVE_REQUESTS = 3


class CheckFailed(AssertionError):
    pass


@dataclass
class CheckResult:
    backends_seen: dict[str, int] = field(default_factory=dict)
    tls: str = ""                 # "TLSv1.3 TLS_AES_256_GCM_SHA384"
    cookie: str = ""              # the Set-Cookie the LB sent (sticky cases)


def _connection(u: str, ca: str | None, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(u)
    if parts.scheme == "https":
        ctx = ssl.create_default_context(cafile=ca)
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=ctx)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def _get(conn: http.client.HTTPConnection, headers: dict[str, str],
         result: CheckResult | None = None) -> tuple[str, http.client.HTTPResponse]:
    conn.request("GET", "/", headers=headers)
    if result is not None and isinstance(conn.sock, ssl.SSLSocket):
        # read now: a "Connection: close" answer closes the socket with the response
        cipher = conn.sock.cipher()
        result.tls = f"{conn.sock.version()} {cipher[0] if cipher else '?'}"
    resp = conn.getresponse()
    body = resp.read().decode(errors="replace")
    if resp.status != 200:
        raise CheckFailed(f"HTTP {resp.status}: {body[:200]!r}")
    name = resp.getheader("X-Backend") or body.strip()
    if not name.startswith("b"):
        raise CheckFailed(f"answer does not name a backend: {body[:200]!r}")
    return name, resp


def run_check(urls: list[str], backends: int, ca: str | None = None, sticky: bool = False,
              l4: bool = True, timeout: float = 3.0) -> CheckResult:
    """Runs in the client namespace (the caller joins it). Raises CheckFailed. With `l4`
    a keep-alive connection must stay on one backend (an L7 proxy may balance each request)."""
    result = CheckResult()
    seen = result.backends_seen
    for u in urls:
        for _ in range(NEW_CONNECTIONS):
            conn = _connection(u, ca, timeout)
            try:
                name, resp = _get(conn, {"Connection": "close"}, result)
                if sticky:
                    cookie = resp.getheader("Set-Cookie") or ""
                    if not cookie:
                        raise CheckFailed("sticky case: no Set-Cookie in the answer")
                    result.cookie = cookie
            finally:
                conn.close()
            seen[name] = seen.get(name, 0) + 1
        conn = _connection(u, ca, timeout)
        try:
            names = {_get(conn, {})[0] for _ in range(KEEPALIVE_REQUESTS)}
        finally:
            conn.close()
        if l4 and len(names) != 1:
            raise CheckFailed(f"one keep-alive connection reached several backends: {sorted(names)}")
    if len(seen) < backends:
        raise CheckFailed(f"only {sorted(seen)} answered; expected {backends} backends")
    if sticky:
        pair = result.cookie.split(";", 1)[0]
        first = None
        for _ in range(4):
            conn = _connection(urls[0], ca, timeout)
            try:
                name, _ = _get(conn, {"Connection": "close", "Cookie": pair})
            finally:
                conn.close()
            if first is None:
                first = name
            elif name != first:
                raise CheckFailed(f"cookie {pair!r} did not stick: {first} then {name}")
    return result
