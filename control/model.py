"""The lbfast object model: load balancers, frontends, backends, servers, certificates and
health checks. Both API dialects, the CLI and the config file are views of these classes;
every enum, range and default from the seed documents is declared here once."""
import ipaddress
import re
import uuid as uuidlib
from datetime import datetime, timezone
from typing import Annotated

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt,
                      ValidationInfo, field_validator)

from lbfast.enums import (Algorithm, CheckType, CipherSuite, DataplaneMode, HaMode, OnMarkedDown,
                          Protocol, ProxyProtocol, ServerMode, Stickiness, XdpMode)


def int_range(lo: int, hi: int):
    def check(v: int) -> int:
        if not lo <= v <= hi:
            raise ValueError(f"must be {lo}..{hi}")
        return v
    return Annotated[StrictInt, AfterValidator(check)]


def str_len(lo: int, hi: int):
    def check(v: str) -> str:
        if not lo <= len(v) <= hi:
            raise ValueError(f"must be {lo}..{hi} characters")
        return v
    return Annotated[str, AfterValidator(check)]


def _ip(v: str) -> str:
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ValueError(f"{v!r} is not an IPv4 or IPv6 address") from None


def _ipv4(v: str) -> str:
    if ":" in v:
        raise ValueError(f"{v!r} is not an IPv4 address")
    return v


def _network(v: str) -> str:
    try:
        return str(ipaddress.ip_network(v, strict=False))
    except ValueError:
        raise ValueError(f"{v!r} is not an address or CIDR") from None


def _listen(v: str) -> str:
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{v!r} is not HOST:PORT")
    _ip(host.strip("[]"))
    return v


Port = int_range(1, 65535)
Weight = int_range(1, 255)
Throttle = int_range(0, 20)
Millis = int_range(1, 86_400_000)       # 1 ms .. 1 day
CheckTimeoutMs = int_range(1, 30_000)   # Linode check_timeout 1..30 s
CheckIntervalMs = int_range(100, 3_600_000)
Attempts = int_range(1, 30)             # Linode check_attempts 1..30
IpAddress = Annotated[str, AfterValidator(_ip)]
Network = Annotated[str, AfterValidator(_network)]
Listen = Annotated[str, AfterValidator(_listen)]
Name = str_len(1, 255)
Label = str_len(0, 32)
Id = int_range(1, 2**31 - 1)


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Identified(Strict):
    """Every object has a UUID (Scaleway view) and an integer id (Linode view); both are
    assigned by `control.config.assign_ids` when a config does not carry them."""
    id: Id | None = None
    uuid: str | None = None


class HealthCheck(Strict):
    type: CheckType = CheckType.NONE
    port: Port | None = None                  # None: each server's own port
    interval_ms: CheckIntervalMs = 5_000      # Linode check_interval, Scaleway check_delay
    timeout_ms: CheckTimeoutMs = 3_000
    attempts: Attempts = 3                    # failures before down (check_max_retries)
    rise: Attempts = 2                        # successes before up again
    http_method: str_len(1, 16) = "GET"
    http_uri: str_len(1, 2048) = "/"
    http_code: int_range(100, 599) | None = None
    http_host: str = ""
    http_body: str = ""                       # Linode check_body
    sni: str = ""
    verify_tls: StrictBool = False
    user: str = ""                            # mysql / pgsql
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
    chain_pem: str
    key_pem: str
    created_at: datetime | None = None


class Backend(Identified):
    name: Name
    protocol: Protocol = Protocol.TCP
    forward_port: Port = 80
    algorithm: Algorithm = Algorithm.ROUNDROBIN
    stickiness: Stickiness = Stickiness.NONE
    sticky_cookie_name: str_len(1, 64) = "lbfast"
    sticky_timeout_ms: Millis = 600_000
    proxy_protocol: ProxyProtocol = ProxyProtocol.NONE
    timeout_server_ms: Millis = 300_000
    timeout_connect_ms: Millis = 5_000
    timeout_tunnel_ms: Millis = 900_000
    udp_session_timeout_ms: Millis = 30_000   # UDP: a client's session ends after this long idle
    on_marked_down_action: OnMarkedDown = OnMarkedDown.NONE
    retries: int_range(0, 10) = 3
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
    created_at: datetime | None = None
    updated_at: datetime | None = None


class LoadBalancer(Identified):
    name: Name
    description: str_len(0, 1024) = ""
    tags: list[str] = Field(default_factory=list)
    vip: IpAddress | None = None              # None: allocated from ip_pool
    region: str_len(1, 64) = "local"
    type: str_len(1, 64) = "LB-S"
    organization_id: str = ""
    project_id: str = ""
    client_conn_throttle: Throttle = 0
    backends: list[Backend] = Field(default_factory=list)
    frontends: list[Frontend] = Field(default_factory=list)
    certificates: list[Certificate] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Ip(Identified):
    """An address for a load balancer's VIP (Scaleway's flexible IP). `lb` is the UUID of the
    load balancer using it; a detached IP keeps its address reserved until it is released."""
    address: IpAddress
    lb: str | None = None
    reverse: str_len(0, 255) = ""
    tags: list[str] = Field(default_factory=list)
    organization_id: str = ""
    project_id: str = ""
    created_at: datetime | None = None


class ApiSection(Strict):
    listen: Listen | None = None              # e.g. "127.0.0.1:8950"; None: no API
    token: str | None = None                  # else $LBFAST_API_TOKEN


class DataplaneSection(Strict):
    mode: DataplaneMode = DataplaneMode.AUTO
    interfaces: list[str] = Field(default_factory=list)
    xdp_mode: XdpMode = XdpMode.NATIVE
    snat_addresses: list[IpAddress] = Field(default_factory=list)
    workers: int_range(0, 256) = 0            # L7 worker processes, 0: one per CPU
    udp_sessions_max: int_range(1, 1_000_000) = 10_000   # userspace UDP: one descriptor per session
    pin_dir: str_len(1, 255) = "/sys/fs/bpf/lbfast"   # pinned XDP maps: flows survive restarts


def _token(pattern: str, what: str):
    def check(v: str) -> str:
        if not re.fullmatch(pattern, v):
            raise ValueError(f"{v!r} is not {what}")
        return v
    return Annotated[str, AfterValidator(check)]


Asn = int_range(1, 2**32 - 1)


class BgpNeighbor(Strict):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, serialize_by_alias=True,
                              validate_by_name=True)
    address: IpAddress
    as_: Asn = Field(alias="as")
    multihop: int_range(0, 255) = 0           # 0: directly connected


class BgpSection(Strict):
    local_as: Asn | None = None
    router_id: Annotated[IpAddress, AfterValidator(_ipv4)] | None = None  # None: source towards neighbors[0]
    neighbors: list[BgpNeighbor] = Field(default_factory=list)
    hold_time_s: int_range(3, 65535) = 9      # keepalives every third of it
    connect_retry_s: int_range(1, 65535) = 5


class HaSection(Strict):
    """High availability: `vrrp` (keepalived moves every VIP between a master and its backups)
    or `bgp` (BIRD announces each VIP /32 to ECMP routers while this host can serve it)."""
    mode: HaMode = HaMode.NONE
    interface: _token(r"[A-Za-z0-9_.:@-]{0,15}", "an interface name") = Field("", validate_default=True)
    virtual_router_id: int_range(1, 255) = 51
    priority: int_range(1, 254) = 100
    vrrp_version: int_range(2, 3) = 3
    advert_int_ms: int_range(10, 40_950) = 1_000
    auth_pass: _token(r"[A-Za-z0-9_.:+=@%/-]{0,8}", "up to 8 letters, digits or _.:+=@%/-") = ""
    peers: list[IpAddress] = Field(default_factory=list)   # unicast peers; empty: multicast adverts
    source_address: IpAddress | None = None   # unicast source; None: the interface's address
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
    last_ids: dict[str, StrictInt] = Field(default_factory=dict)   # highest id issued per kind


ID_NAMESPACE = uuidlib.UUID("6f1c7a52-8d0e-4b8f-9a57-3c1b0d6a2e11")


def new_uuid(obj):
    """Objects made by a change get a random UUID at once, so later steps can name them
    (hand-written files get derived ones: control.config.assign_ids)."""
    if obj.uuid is None:
        obj.uuid = str(uuidlib.uuid4())
    return obj
