"""L7 data plane: an HTTP/1.1 reverse proxy (keep-alive, pooling, streaming, WebSocket
tunnels, cookie stickiness, TLS termination, PROXY protocol) on uvloop, with its head
handling in Cython, run by N worker processes that the daemon's L7Dataplane manages."""
from lbfast.l7.dataplane import L7Dataplane
from lbfast.l7.limits import L7Limits
from lbfast.l7.proxy import L7Proxy, handles

__all__ = ["L7Dataplane", "L7Limits", "L7Proxy", "handles"]
