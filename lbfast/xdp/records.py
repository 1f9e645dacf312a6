"""The map records a set of FrontendSpecs asks for, before slots are known: which
frontends are L4 (tcp/udp, programmed in XDP), their backends and servers, and the
values those records carry. The dataplane diffs these against the maps."""
import ipaddress
import math
from dataclasses import dataclass

from lbfast.enums import Protocol, Stickiness
from lbfast.spec import BackendSpec, FrontendSpec, ServerSpec

L4_PROTOCOLS = (Protocol.TCP, Protocol.UDP)

# (VIP, port, "tcp"/"udp"): how the program finds a frontend
FrontendKey = tuple[str, int, str]
# (backend id, canonical address, port): a server across reloads
ServerKey = tuple[int, str, int]


def canonical_ip(address: str) -> str:
    return str(ipaddress.ip_address(address))


def parse_server_key(key: str) -> tuple[str, int]:
    """ServerSpec.key ("10.0.0.1:80" / "[fd00::1]:80") -> (canonical address, port)."""
    host, _, port = key.rpartition(":")
    return canonical_ip(host.strip("[]")), int(port)


def server_key(backend_id: int, server: ServerSpec) -> ServerKey:
    return (backend_id, canonical_ip(server.address), server.port)


def seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


@dataclass(frozen=True)
class FrontendRecord:
    key: FrontendKey
    id: int
    backend_id: int
    idle_timeout_s: int
    conn_throttle: int


@dataclass(frozen=True)
class Desired:
    frontends: dict[FrontendKey, FrontendRecord]
    backends: dict[int, BackendSpec]


def frontend_key(fe: FrontendSpec) -> FrontendKey:
    return (canonical_ip(fe.address), fe.port, "udp" if fe.protocol == Protocol.UDP else "tcp")


def desired(frontends: list[FrontendSpec]) -> Desired:
    fes: dict[FrontendKey, FrontendRecord] = {}
    backends: dict[int, BackendSpec] = {}
    for fe in frontends:
        if fe.protocol not in L4_PROTOCOLS:
            continue    # HTTP/HTTPS: the L7 proxy's, the program passes them
        key = frontend_key(fe)
        if key in fes:
            raise ValueError(f"two frontends on {key[0]}:{key[1]}/{key[2]}")
        be = fe.backend
        if be.id in backends and backends[be.id] != be:
            raise ValueError(f"backend {be.id} is described differently by two frontends")
        backends[be.id] = be
        fes[key] = FrontendRecord(
            key=key, id=fe.id, backend_id=be.id,
            # the flow may idle as long as either side is allowed to
            idle_timeout_s=seconds(max(fe.timeout_client_ms, be.timeout_server_ms)),
            conn_throttle=fe.client_conn_throttle)
    return Desired(fes, backends)


def sticky_timeout_s(be: BackendSpec) -> int:
    return seconds(be.sticky_timeout_ms) if be.stickiness == Stickiness.TABLE else 0
