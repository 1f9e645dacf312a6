"""Listening sockets for frontends, shared by the userspace L4 and UDP proxies and the L7 workers."""
import errno
import logging
import socket

log = logging.getLogger("lbfast.listen")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


def listening_socket(address: str, port: int, backlog: int = 4096, reuseport: bool = False) -> socket.socket:
    """A non-blocking listener on VIP:port. `reuseport`: one listener per L7 worker, the
    kernel spreads connections."""
    sock = _bound(address, port, socket.SOCK_STREAM, reuseport)
    try:
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def datagram_socket(address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to VIP:port: what a UDP frontend receives on and
    answers its clients from."""
    return _bound(address, port, socket.SOCK_DGRAM)


def _bound(address: str, port: int, kind: int, reuseport: bool = False) -> socket.socket:
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
            sock.bind((address, port))
        except OSError as e:
            if e.errno != errno.EADDRNOTAVAIL:
                raise
            log.info("%s is not an address of this host (yet): %s:%d listens with IP_FREEBIND",
                     address, address, port)
            sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            sock.bind((address, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
