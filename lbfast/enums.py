"""Every enumeration lbfast knows, defined once: the model, both API dialects, the CLI
and the BPF loader all use these."""
from enum import IntEnum, StrEnum


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    HTTP = "http"
    HTTPS = "https"


class Algorithm(StrEnum):
    ROUNDROBIN = "roundrobin"
    LEASTCONN = "leastconn"
    SOURCE = "source"
    FIRST = "first"


class Stickiness(StrEnum):
    NONE = "none"
    TABLE = "table"
    COOKIE = "cookie"


class ServerMode(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    DRAIN = "drain"
    BACKUP = "backup"


class ProxyProtocol(StrEnum):
    NONE = "none"
    V1 = "v1"
    V2 = "v2"


class OnMarkedDown(StrEnum):
    NONE = "none"
    SHUTDOWN_SESSIONS = "shutdown_sessions"


class CheckType(StrEnum):
    NONE = "none"
    TCP = "tcp"
    HTTP = "http"
    HTTPS = "https"
    HTTP_BODY = "http_body"
    MYSQL = "mysql"
    PGSQL = "pgsql"
    REDIS = "redis"
    LDAP = "ldap"


class CipherSuite(StrEnum):
    RECOMMENDED = "recommended"
    LEGACY = "legacy"


class DataplaneMode(StrEnum):
    AUTO = "auto"
    USERSPACE = "userspace"
    XDP = "xdp"


class XdpMode(StrEnum):
    NATIVE = "native"
    GENERIC = "generic"


class Health(StrEnum):
    """A server's check verdict. UNCHECKED servers (check `none`) count as usable."""
    UP = "UP"
    DOWN = "DOWN"
    UNCHECKED = "unchecked"


# Numeric codes for the BPF maps: the loader passes them to the compiler with -D.
class AlgorithmCode(IntEnum):
    ROUNDROBIN = 0
    LEASTCONN = 1
    SOURCE = 2
    FIRST = 3


class HaMode(StrEnum):
    NONE = "none"
    VRRP = "vrrp"       # master/backup: keepalived moves the VIPs
    BGP = "bgp"         # active-active: BIRD announces each VIP /32 to ECMP routers


class HaRole(StrEnum):
    """What this host is doing for its VIPs."""
    STANDALONE = "standalone"   # no HA configured: the host serves its VIPs alone
    STARTING = "starting"       # the engine runs but has not reported yet
    MASTER = "master"           # VRRP: holds the VIPs
    BACKUP = "backup"           # VRRP: ready, the VIPs are elsewhere
    FAULT = "fault"             # VRRP: this host failed its health check or lost its link
    ACTIVE = "active"           # BGP: announcing at least one VIP
    WITHDRAWN = "withdrawn"     # BGP: announcing nothing
    STOPPED = "stopped"         # the engine is not running


class AccessLogFormat(StrEnum):
    HTTPLOG = "httplog"     # HAProxy's httplog fields, one text line per request
    JSON = "json"           # the same fields as one JSON object per line
