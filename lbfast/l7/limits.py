"""Limits of the L7 proxy that are not in the object model: sizes of a request head and
the deadline for receiving one (slowloris), the per-server pool of idle connections."""
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class L7Limits:
    max_request_line: int = 8192        # bytes of the request target
    max_header_bytes: int = 32768       # bytes of all request header lines
    max_headers: int = 100
    head_timeout_ms: int = 10_000       # first byte to end of a request head (capped by timeout_client)
    max_idle_per_server: int = 64       # idle keep-alive connections kept per server and worker
    idle_server_ms: int = 30_000        # an idle pooled server connection is closed after this
    drain_ms: int = 5_000               # a stopping worker lets open sessions finish this long
