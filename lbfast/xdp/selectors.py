"""What goes into a backend's selector (bpf/structs.h `struct selector`): the servers that
may take new flows, arranged for the backend's algorithm."""
import hashlib
from dataclasses import dataclass
from math import gcd

from lbfast.enums import Algorithm, AlgorithmCode, ServerMode
from lbfast.maglev import build_table
from lbfast.spec import BackendSpec, ServerSpec


@dataclass(frozen=True)
class SelectorContent:
    algorithm: AlgorithmCode
    servers: tuple[int, ...]          # server slots, one per selector entry
    weights: tuple[int, ...] = ()     # leastconn: weight of servers[i]
    usable: frozenset[int] = frozenset()   # slots present at all

    @property
    def digest(self) -> int:
        """64 bits identifying the content, stored beside it in the backend record."""
        h = hashlib.blake2b(digest_size=8)
        h.update(bytes([int(self.algorithm)]))
        h.update(b"".join(s.to_bytes(2, "little") for s in self.servers))
        h.update(b"".join(w.to_bytes(2, "little") for w in self.weights))
        return int.from_bytes(h.digest(), "little")


def usable_servers(backend: BackendSpec, healthy) -> list[ServerSpec]:
    """Servers that take new flows: accept mode, up and weighted; the backups only when
    no accept server qualifies. Drain and reject servers take none."""
    def ok(s: ServerSpec) -> bool:
        return s.weight > 0 and healthy(s)
    accept = [s for s in backend.servers if s.mode == ServerMode.ACCEPT and ok(s)]
    return accept or [s for s in backend.servers if s.mode == ServerMode.BACKUP and ok(s)]


def smooth_weighted_ring(weights: list[int]) -> list[int]:
    """Indexes in smooth weighted round-robin order (nginx's): 3:1 gives 0,0,1,0 rather
    than 0,0,0,1, so short runs are already balanced."""
    g = 0
    for w in weights:
        g = gcd(g, w)
    weights = [w // g for w in weights]
    total = sum(weights)
    current = [0] * len(weights)
    ring = []
    for _ in range(total):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        ring.append(best)
    return ring


def build_selector(backend: BackendSpec, slots: dict[str, int], healthy, size: int,
                   leastconn_max: int) -> SelectorContent:
    """`slots`: server key -> slot; `size`: SELECTOR_SIZE (the Maglev table size)."""
    usable = usable_servers(backend, healthy)
    code = AlgorithmCode[Algorithm(backend.algorithm).name]
    if not usable:
        return SelectorContent(code, ())
    slot_of = [slots[s.key] for s in usable]
    weights = [s.weight for s in usable]
    present = frozenset(slot_of)
    if code == AlgorithmCode.FIRST:
        return SelectorContent(code, (slot_of[0],), usable=frozenset(slot_of[:1]))
    if code == AlgorithmCode.LEASTCONN:
        n = min(len(usable), leastconn_max)
        return SelectorContent(code, tuple(slot_of[:n]), tuple(weights[:n]),
                               frozenset(slot_of[:n]))
    if code == AlgorithmCode.ROUNDROBIN and sum(weights) // _gcd_all(weights) <= size:
        ring = smooth_weighted_ring(weights)
        return SelectorContent(code, tuple(slot_of[i] for i in ring), usable=present)
    # source, or a weighted ring too long for a selector: the Maglev table, whose slots
    # are shared in proportion to the weights (walked in order for roundrobin)
    table = build_table([s.key for s in usable], weights, size)
    return SelectorContent(code, tuple(slot_of[i] for i in table), usable=present)


def _gcd_all(values: list[int]) -> int:
    g = 0
    for v in values:
        g = gcd(g, v)
    return g or 1
