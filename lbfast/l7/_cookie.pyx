# cython: language_level=3, boundscheck=False, wraparound=False
"""Cookie stickiness: find the load balancer's cookie among a request's Cookie headers, map
its value to a server of the pool, and write the Set-Cookie that pins a client. The value
is an HMAC of (backend, server) under the daemon's secret: it names no address, and a
client cannot make one for a server it was not given."""
import base64
import hmac

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcmp

from lbfast.enums import ServerMode

cdef object ACCEPT = ServerMode.ACCEPT
cdef object DRAIN = ServerMode.DRAIN
cdef object BACKUP = ServerMode.BACKUP


cdef inline bint _space(unsigned char c):
    return c == 32 or c == 9


def find_cookie(list headers, bytes name):
    """The value of cookie `name` in Cookie header values ("a=b; c=d"), else None."""
    cdef bytes value
    cdef const char *p
    cdef const char *nm = PyBytes_AS_STRING(name)
    cdef Py_ssize_t n, i, k_start, k_end, v_start, v_end, nlen = PyBytes_GET_SIZE(name)
    for value in headers:
        p = PyBytes_AS_STRING(value)
        n = PyBytes_GET_SIZE(value)
        i = 0
        while i < n:
            while i < n and (_space(p[i]) or p[i] == 59):    # ';'
                i += 1
            k_start = i
            while i < n and p[i] != 61 and p[i] != 59:       # '=' ';'
                i += 1
            k_end = i
            while k_end > k_start and _space(p[k_end - 1]):
                k_end -= 1
            if i >= n or p[i] != 61:
                continue                                     # a bare token: no value
            i += 1
            while i < n and _space(p[i]):
                i += 1
            v_start = i
            while i < n and p[i] != 59:
                i += 1
            v_end = i
            while v_end > v_start and _space(p[v_end - 1]):
                v_end -= 1
            if v_end - v_start >= 2 and p[v_start] == 34 and p[v_end - 1] == 34:   # quoted
                v_start += 1
                v_end -= 1
            if k_end - k_start == nlen and memcmp(p + k_start, nm, nlen) == 0:
                return value[v_start:v_end]
    return None


def server_token(bytes secret, int backend_id, str server_key):
    """The opaque cookie value that names one server of one backend (16 URL-safe chars)."""
    mac = hmac.digest(secret, b"lbfast-cookie|%d|%s" % (backend_id, server_key.encode()), "sha256")
    return base64.urlsafe_b64encode(mac[:12])


cdef class CookieRouter:
    """One backend's cookie routes: token -> ServerState, and each server's Set-Cookie."""
    cdef readonly bytes name
    cdef readonly int backend_id
    cdef readonly object max_age
    cdef bytes secret
    cdef bytes attributes
    cdef dict by_token
    cdef dict lines
    cdef list servers

    def __init__(self, bytes secret, int backend_id, str name, bint secure=False, max_age=None):
        self.secret = secret
        self.backend_id = backend_id
        self.name = name.encode()
        self.max_age = max_age          # seconds; None: a session cookie
        self.attributes = (b"; Path=/; HttpOnly" + (b"; Secure" if secure else b"")
                           + (b"; Max-Age=%d" % max_age if max_age is not None else b""))
        self.by_token = {}
        self.lines = {}
        self.servers = []

    def update(self, servers):
        """Take the pool's servers (ServerState objects) after a change."""
        self.servers = list(servers)
        self.by_token = {}
        self.lines = {}
        for s in self.servers:
            token = server_token(self.secret, self.backend_id, s.key)
            self.by_token[token] = s
            self.lines[s.key] = b"Set-Cookie: " + self.name + b"=" + token + self.attributes + b"\r\n"

    def pinned(self, list cookies):
        """The server the request's cookie names, if that server may take it now: up and
        accept or drain (drain keeps its clients), or backup while no accept server is up."""
        if not cookies:
            return None
        value = find_cookie(cookies, self.name)
        if value is None:
            return None
        s = self.by_token.get(value)
        if s is None or not s.up:
            return None
        mode = s.spec.mode
        if mode is ACCEPT or mode is DRAIN:
            return s
        if mode is BACKUP:
            for other in self.servers:
                if other.up and other.spec.mode is ACCEPT:
                    return None
            return s
        return None

    def choose(self, pool, list cookies, str client_ip):
        """(server, set_cookie line or None): the pinned server, else the pool's choice
        with the Set-Cookie that pins the client to it."""
        s = self.pinned(cookies)
        if s is not None:
            return s, None
        s = pool.choose(client_ip)
        if s is None:
            return None, None
        return s, self.lines.get(s.key)

    def set_cookie(self, server):
        """The Set-Cookie header line (with CRLF) that pins a client to `server`."""
        return self.lines.get(server.key)
