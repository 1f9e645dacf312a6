"""The lbfast object model: load balancers, frontends, backends, servers, certificates and
health checks. Both API dialects, the CLI and the config file are views of these classes;
every enum, range and default from the seed documents is declared here once."""
import uuid as uuidlib
from datetime import datetime, timezone
from typing import Annotated

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt,
                      ValidationInfo, field_validator)

from control.grammar import (ApiToken, BpffsDir, CookieName, CookieSecret, DnsName, HttpHost, HttpToken,
                             HttpUri, Ident, InterfaceName, IpAddress, Listen, LogFile, Network, Pem,
                             ProtocolUser, ServerName, UnscopedIpAddress, Uuid, Word, free_text, object_kind,
                             pattern, text)
from lbfast.enums import (AccessLogFormat, Algorithm, CheckType, CipherSuite, DataplaneMode, HaMode,
                          OnMarkedDown, Protocol, ProxyProtocol, ServerMode, Stickiness, XdpMode)


def int_range(lo: int, hi: int):
    def check(v: int) -> int:
        if not lo <= v <= hi:
            raise ValueError(f"must be {lo}..{hi}")
        return v
    return Annotated[StrictInt, AfterValidator(check)]


def _ipv4(v: str) -> str:
    if ":" in v:
        raise ValueError(f"{v!r} is not an IPv4 address")
    return v


Ipv4Address = Annotated[UnscopedIpAddress, AfterValidator(_ipv4)]


Port = int_range(1, 65535)
Weight = int_range(1, 255)
Throttle = int_range(0, 20)
Millis = int_range(1, 86_400_000)       # 1 ms .. 1 day
CheckTimeoutMs = int_range(1, 30_000)   # Linode check_timeout 1..30 s
CheckIntervalMs = int_range(100, 3_600_000)
Attempts = int_range(1, 30)             # Linode check_attempts 1..30
Name = text(1, 255)
Label = text(0, 32)                     # Linode node labels: up to 32 characters
Tag = text(1, 128)
Id = int_range(1, 2**31 - 1)


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Identified(Strict):
    """Every object has a UUID (Scaleway view) and an integer id (Linode view); both are
    assigned by `control.config.assign_ids` when a config does not carry them."""
    id: Id | None = None
    uuid: Uuid | None = None


class HealthCheck(Strict):
    type: CheckType = CheckType.NONE
    port: Port | None = None                  # None: each server's own port
    interval_ms: CheckIntervalMs = 5_000      # Linode check_interval, Scaleway check_delay
    timeout_ms: CheckTimeoutMs = 3_000
    attempts: Attempts = 3                    # failures before down (check_max_retries)
    rise: Attempts = 2                        # successes before up again
    http_method: HttpToken = "GET"
    http_uri: HttpUri = "/"
    http_code: int_range(100, 599) | None = None
    http_host: HttpHost = ""
    http_body: free_text(0, 1024) = ""        # Linode check_body
    sni: ServerName = ""
    verify_tls: StrictBool = False
    user: ProtocolUser = ""                   # mysql / pgsql / ldap
    send_proxy: StrictBool = False
    passive: StrictBool = False               # Linode check_passive


class Server(Identified):
    address: IpAddress
    port: Port | None = None                  # None: the backend's forward_port
    weight: Weight = 100
    mode: ServerMode = ServerMode.ACCEPT
    label: Label = ""


class Certificate(Identified):
    name: Name
    chain_pem: Pem
    key_pem: Pem
    created_at: datetime | None = None


class Backend(Identified):
    name: Name
    protocol: Protocol = Protocol.TCP
    forward_port: Port = 80
    algorithm: Algorithm = Algorithm.ROUNDROBIN
    stickiness: Stickiness = Stickiness.NONE
    sticky_cookie_name: CookieName = "lbfast"
    sticky_timeout_ms: Millis | None = None   # table: 10 min if unset; cookie: Max-Age, else a session cookie
    proxy_protocol: ProxyProtocol = ProxyProtocol.NONE
    timeout_server_ms: Millis = 300_000
    timeout_connect_ms: Millis = 5_000
    timeout_tunnel_ms: Millis = 900_000
    udp_session_timeout_ms: Millis = 30_000   # UDP: a client's session ends after this long idle
    on_marked_down_action: OnMarkedDown = OnMarkedDown.NONE
    retries: int_range(0, 10) = 3
    max_connections: int_range(0, 2**31 - 1) = 0   # open client connections per frontend, 0: no cap
    timeout_queue_ms: Millis | None = None    # a connection beyond the cap waits this long (None: timeout_connect)
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    servers: list[Server] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Frontend(Identified):
    name: Name
    port: Port                                # Scaleway inbound_port, Linode config port
    backend: Name                             # name of a backend of the same load balancer
    protocol: Protocol | None = None          # None: derived (https with certificates, else the backend's)
    timeout_client_ms: Millis = 300_000
    certificates: list[Name] = Field(default_factory=list)
    cipher_suite: CipherSuite = CipherSuite.RECOMMENDED
    access_log: StrictBool = False            # a line per request (http/https) or connection (tcp)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class LoadBalancer(Identified):
    name: Name
    description: free_text(0, 1024) = ""
    tags: list[Tag] = Field(default_factory=list)
    vip: UnscopedIpAddress | None = None      # None: allocated from ip_pool
    region: Word = "local"
    type: Word = "LB-S"
    organization_id: Ident = ""
    project_id: Ident = ""
    client_conn_throttle: Throttle = 0
    backends: list[Backend] = Field(default_factory=list)
    frontends: list[Frontend] = Field(default_factory=list)
    certificates: list[Certificate] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Ip(Identified):
    """An address for a load balancer's VIP (Scaleway's flexible IP). `lb` is the UUID of the
    load balancer using it; a detached IP keeps its address reserved until it is released."""
    address: UnscopedIpAddress
    lb: Uuid | None = None
    reverse: DnsName = ""
    tags: list[Tag] = Field(default_factory=list)
    organization_id: Ident = ""
    project_id: Ident = ""
    created_at: datetime | None = None


class AccessLogSection(Strict):
    """Where frontends with access_log: true write, and how (SIGUSR1 reopens the file)."""
    path: LogFile = "/var/log/lbfast/access.log"
    format: AccessLogFormat = AccessLogFormat.HTTPLOG


class ApiSection(Strict):
    listen: Listen | None = None              # e.g. "127.0.0.1:8950"; None: no API
    token: ApiToken | None = None             # else $LBFAST_API_TOKEN


class DataplaneSection(Strict):
    mode: DataplaneMode = DataplaneMode.AUTO
    interfaces: list[InterfaceName] = Field(default_factory=list)
    xdp_mode: XdpMode = XdpMode.NATIVE
    snat_addresses: list[UnscopedIpAddress] = Field(default_factory=list)
    workers: int_range(0, 256) = 0            # L7 worker processes, 0: one per CPU
    udp_sessions_max: int_range(1, 1_000_000) = 10_000   # userspace UDP: one descriptor per session
    pin_dir: BpffsDir = "/sys/fs/bpf/lbfast"  # pinned XDP maps: flows survive restarts
    # signs sticky cookies; made at first start and kept in the file, so a restart or the HA
    # peer sharing this file keeps every cookie pointing at the same server
    cookie_secret: CookieSecret | None = None
    # XDP flow state: IPv4 conntrack entries (2 per flow) the online CPUs hold, None: from memory
    conntrack_entries: int_range(4096, 1 << 26) | None = None
    syn_flood_protection: StrictBool = True   # TCP flows wait in half-open maps for their handshake
    syn_flood_threshold: int_range(1, 1 << 30) = 20000    # SYN/s to a frontend: flood mode


Asn = int_range(1, 2**32 - 1)


class BgpNeighbor(Strict):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, serialize_by_alias=True,
                              validate_by_name=True)
    address: IpAddress
    as_: Asn = Field(alias="as")
    multihop: int_range(0, 255) = 0           # 0: directly connected


class BgpSection(Strict):
    local_as: Asn | None = None
    router_id: Ipv4Address | None = None  # None: source towards neighbors[0]
    neighbors: list[BgpNeighbor] = Field(default_factory=list)
    hold_time_s: int_range(3, 65535) = 9      # keepalives every third of it
    connect_retry_s: int_range(1, 65535) = 5


class HaSection(Strict):
    """High availability: `vrrp` (keepalived moves every VIP between a master and its backups)
    or `bgp` (BIRD announces each VIP /32 to ECMP routers while this host can serve it)."""
    mode: HaMode = HaMode.NONE
    interface: InterfaceName = Field("", validate_default=True)
    virtual_router_id: int_range(1, 255) = 51
    priority: int_range(1, 254) = 100
    vrrp_version: int_range(2, 3) = 3
    advert_int_ms: int_range(10, 40_950) = 1_000
    # '@' would start a conditional line in keepalived.conf: not first
    auth_pass: pattern(r"(?!@)[A-Za-z0-9_.:+=@%/-]*", 0, 8, "letters, digits or _.:+=@%/- (not starting with @)",
                       secret=True) = ""
    # the VRRP instance is IPv4 (IPv6 VIPs ride along unadvertised): so are its peers
    peers: list[Ipv4Address] = Field(default_factory=list)   # unicast peers; empty: multicast adverts
    source_address: Ipv4Address | None = None   # unicast source; None: the interface's address
    preempt: StrictBool = True
    preempt_delay_ms: int_range(0, 1_000_000) = 0
    bgp: BgpSection = Field(default_factory=BgpSection, validate_default=True)

    @field_validator("interface")
    @classmethod
    def _interface_for_vrrp(cls, v: str, info: ValidationInfo) -> str:
        if info.data.get("mode") == HaMode.VRRP and not v:
            raise ValueError("required for mode vrrp")
        return v

    @field_validator("advert_int_ms")
    @classmethod
    def _whole_seconds_for_v2(cls, v: int, info: ValidationInfo) -> int:
        if info.data.get("vrrp_version") == 2 and v % 1000:
            raise ValueError("VRRPv2 adverts are whole seconds (vrrp_version 3 allows 10 ms steps)")
        return v

    @field_validator("auth_pass")
    @classmethod
    def _auth_needs_v2(cls, v: str, info: ValidationInfo) -> str:
        if v and info.data.get("vrrp_version") == 3:
            raise ValueError("VRRPv3 has no authentication: set vrrp_version 2")
        return v

    @field_validator("bgp")
    @classmethod
    def _bgp_complete(cls, v: BgpSection, info: ValidationInfo) -> BgpSection:
        if info.data.get("mode") == HaMode.BGP:
            if v.local_as is None:
                raise ValueError("mode bgp needs local_as")
            if not v.neighbors:
                raise ValueError("mode bgp needs at least one neighbor")
        return v


class Config(Strict):
    api: ApiSection = Field(default_factory=ApiSection)
    ip_pool: list[Network] = Field(default_factory=list)
    dataplane: DataplaneSection = Field(default_factory=DataplaneSection)
    lbs: list[LoadBalancer] = Field(default_factory=list)
    ips: list[Ip] = Field(default_factory=list)
    ha: HaSection = Field(default_factory=HaSection)
    access_log: AccessLogSection = Field(default_factory=AccessLogSection)
    last_ids: dict[str, StrictInt] = Field(default_factory=dict)   # highest id issued per kind

    @field_validator("last_ids")
    @classmethod
    def _kinds(cls, v: dict[str, int]) -> dict[str, int]:
        for key in v:           # checked here: an error path must not quote a hostile key
            object_kind(key)
        return v


ID_NAMESPACE = uuidlib.UUID("6f1c7a52-8d0e-4b8f-9a57-3c1b0d6a2e11")


def new_uuid(obj):
    """Objects made by a change get a random UUID at once, so later steps can name them
    (hand-written files get derived ones: control.config.assign_ids)."""
    if obj.uuid is None:
        obj.uuid = str(uuidlib.uuid4())
    return obj
