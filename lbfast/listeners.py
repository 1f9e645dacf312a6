"""Listening sockets for frontends, shared by the userspace L4 and UDP proxies and the L7 workers."""
import errno
import logging
import socket

log = logging.getLogger("lbfast.listen")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
PRIVILEGED_BELOW = 1024


class ListenError(OSError):
    """A frontend that cannot listen: says which, where, and what usually fixes it."""

    def __str__(self) -> str:
        return self.strerror


def bind_error(e: OSError, name: str, address: str, port: int) -> ListenError:
    where = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    message = f"frontend {name or '?'} cannot listen on {where}: {e.strerror or e}"
    if e.errno == errno.EACCES and port < PRIVILEGED_BELOW:
        message += (f" (ports below {PRIVILEGED_BELOW} need root or CAP_NET_BIND_SERVICE; "
                    f"or use a port >= {PRIVILEGED_BELOW})")
    elif e.errno == errno.EADDRINUSE:
        message += f" (another program listens there: ss -ltnp 'sport = :{port}')"
    return ListenError(e.errno, message)


def listening_socket(address: str, port: int, backlog: int = 4096, reuseport: bool = False,
                     name: str = "") -> socket.socket:
    """A non-blocking listener on VIP:port for frontend `name`. `reuseport`: one listener
    per L7 worker, the kernel spreads connections. A bind error names the frontend and the
    address (ListenError)."""
    sock = _bound(address, port, socket.SOCK_STREAM, name, reuseport)
    try:
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def datagram_socket(address: str, port: int, name: str = "") -> socket.socket:
    """A non-blocking UDP socket bound to VIP:port: what a UDP frontend receives on and
    answers its clients from."""
    return _bound(address, port, socket.SOCK_DGRAM, name)


def _bound(address: str, port: int, kind: int, name: str, reuseport: bool = False) -> socket.socket:
    """A VIP that is not (yet) on this host, as on a VRRP backup, is bound with IP_FREEBIND
    so the frontend is ready when the address arrives."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            try:
                sock.bind((address, port))
            except OSError as e:
                if e.errno != errno.EADDRNOTAVAIL:
                    raise
                log.info("%s is not an address of this host (yet): %s:%d listens with IP_FREEBIND",
                         address, address, port)
                sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                sock.bind((address, port))
        except OSError as e:
            raise bind_error(e, name, address, port) from None
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
