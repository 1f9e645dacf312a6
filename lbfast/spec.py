"""What the control plane hands a data plane: frozen, comparable descriptions of
frontends, backends and servers. Data planes diff these by key; runtime state (health,
connection counts) lives in the data planes, keyed by the same keys."""
from dataclasses import dataclass, field

from lbfast.enums import (AccessLogFormat, Algorithm, CheckType, CipherSuite, OnMarkedDown, Protocol,
                          ProxyProtocol, ServerMode, Stickiness)


@dataclass(frozen=True, slots=True)
class ServerSpec:
    id: int
    address: str            # IPv4 or IPv6 literal
    port: int
    weight: int = 1
    mode: ServerMode = ServerMode.ACCEPT
    label: str = ""

    @property
    def key(self) -> str:
        """Identity of a server across reloads and across LB hosts (Maglev input)."""
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class CertificateSpec:
    id: int
    name: str
    chain_pem: str
    key_pem: str


@dataclass(frozen=True, slots=True)
class HealthCheckSpec:
    type: CheckType = CheckType.NONE
    port: int | None = None          # None: the server's own port
    interval_ms: int = 5_000
    timeout_ms: int = 3_000
    fall: int = 3                    # consecutive failures before DOWN (attempts / max_retries)
    rise: int = 2                    # consecutive successes before UP again
    http_method: str = "GET"
    http_uri: str = "/"
    http_code: int | None = None     # None: any 2xx/3xx
    http_host: str = ""
    http_body: str = ""              # http_body: must appear in the response body
    sni: str = ""
    verify_tls: bool = False
    user: str = ""                   # mysql / pgsql user
    send_proxy: bool = False
    passive: bool = False            # Linode check_passive: 5xx / failed connect marks down


TABLE_STICKY_TIMEOUT_MS = 600_000     # a source-table entry's life when the backend sets none


@dataclass(frozen=True, slots=True)
class BackendSpec:
    id: int
    uuid: str
    name: str
    protocol: Protocol = Protocol.TCP
    algorithm: Algorithm = Algorithm.ROUNDROBIN
    stickiness: Stickiness = Stickiness.NONE
    sticky_cookie_name: str = "lbfast"
    sticky_timeout_ms: int = TABLE_STICKY_TIMEOUT_MS
    cookie_max_age_s: int | None = None   # the sticky cookie's Max-Age; None: a session cookie
    proxy_protocol: ProxyProtocol = ProxyProtocol.NONE
    timeout_server_ms: int = 300_000
    timeout_connect_ms: int = 5_000
    timeout_tunnel_ms: int = 900_000
    udp_session_timeout_ms: int = 30_000   # a UDP client's session ends after this long idle
    on_marked_down: OnMarkedDown = OnMarkedDown.NONE
    cipher_suite: CipherSuite = CipherSuite.RECOMMENDED
    retries: int = 3
    max_connections: int = 0         # open client connections per frontend; beyond: wait, then 503 / close
    timeout_queue_ms: int = 5_000    # how long a connection beyond max_connections waits for a slot
    health_check: HealthCheckSpec = HealthCheckSpec()
    servers: tuple[ServerSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class AccessLogSpec:
    path: str
    format: AccessLogFormat = AccessLogFormat.HTTPLOG


@dataclass(frozen=True, slots=True)
class FrontendSpec:
    id: int
    uuid: str
    name: str
    lb_id: int
    address: str             # the VIP
    port: int
    protocol: Protocol       # tcp/udp: L4; http/https: L7
    backend: BackendSpec
    timeout_client_ms: int = 300_000
    client_conn_throttle: int = 0     # new connections per second per source, 0 = off
    certificates: tuple[CertificateSpec, ...] = field(default=())
    cipher_suite: CipherSuite = CipherSuite.RECOMMENDED   # TLS policy of an https frontend
    access_log: AccessLogSpec | None = None               # None: no access log

    def status_row(self, dataplane: str, active: int, servers: list[dict]) -> dict:
        """This frontend as a row of the daemon's status, whichever data plane serves it."""
        return {"lb_id": self.lb_id, "backend_id": self.backend.id, "frontend": self.name,
                "listen": f"{self.address}:{self.port}", "protocol": str(self.protocol),
                "backend": self.backend.name, "algorithm": str(self.backend.algorithm),
                "stickiness": str(self.backend.stickiness), "dataplane": dataplane,
                "active": active, "servers": servers}

    @property
    def listen_key(self) -> tuple[str, int, str]:
        """Listeners are kept across reloads while this stays the same."""
        return (self.address, self.port, "udp" if self.protocol == Protocol.UDP else "tcp")
