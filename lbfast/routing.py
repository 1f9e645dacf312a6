"""Server choice for one backend in userspace: algorithms, weights, node modes, health and
table stickiness. Shared by the userspace L4 proxy and the L7 proxy; the XDP program
implements the same rules in the kernel."""
import time
from collections import OrderedDict

from lbfast import maglev
from lbfast.enums import Algorithm, ServerMode, Stickiness
from lbfast.hashing import source_slot
from lbfast.spec import BackendSpec, ServerSpec

STICKY_TABLE_MAX = 1_000_000


class ServerState:
    """A server and what the data plane knows about it at run time."""
    __slots__ = ("spec", "up", "active", "total", "bytes_in", "bytes_out", "failed",
                 "current_weight", "pool")

    def __init__(self, spec: ServerSpec, pool: "Pool"):
        self.spec = spec
        self.pool = pool
        self.up = True          # health verdict; unchecked servers stay up
        self.active = 0         # open connections
        self.total = 0          # connections ever sent here
        self.bytes_in = 0       # client -> server
        self.bytes_out = 0      # server -> client
        self.failed = 0         # connect failures
        self.current_weight = 0  # smooth weighted round robin state

    @property
    def key(self) -> str:
        return self.spec.key

    def stats(self) -> dict:
        return {"key": self.key, "id": self.spec.id, "up": self.up, "mode": str(self.spec.mode),
                "active": self.active, "total": self.total, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "failed": self.failed}


class Pool:
    def __init__(self, spec: BackendSpec):
        self.servers: dict[str, ServerState] = {}
        self.sticky: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._maglev_key: tuple | None = None
        self._maglev: tuple[list[ServerState], object] | None = None
        self.update(spec)

    def update(self, spec: BackendSpec) -> None:
        """Take a new spec; servers that stay keep their counters and health."""
        self.spec = spec
        old = self.servers
        before = [(k, s.spec.weight) for k, s in old.items()]
        self.servers = {}
        for s in spec.servers:
            state = old.get(s.key) or ServerState(s, self)
            state.spec = s
            self.servers[s.key] = state
        if before != [(k, s.spec.weight) for k, s in self.servers.items()]:
            # current weights earned under the old weights would make the first picks a
            # run on one server (100 -> 3 leaves it ~100 in debt): start the sequence afresh
            for state in self.servers.values():
                state.current_weight = 0
        self._maglev_key = None
        if spec.stickiness != Stickiness.TABLE:
            self.sticky.clear()

    def set_health(self, key: str, up: bool) -> None:
        state = self.servers.get(key)
        if state is not None and state.up != up:
            state.up = up
            self._maglev_key = None

    def usable(self, exclude: frozenset[str] | set[str] = frozenset()) -> list[ServerState]:
        """Accept servers that are up; backup servers only when none is. `exclude` holds
        servers that just failed to connect: when every accept server has, backups serve."""
        for mode in (ServerMode.ACCEPT, ServerMode.BACKUP):
            found = [s for s in self.servers.values() if s.up and s.spec.mode == mode and s.key not in exclude]
            if found:
                return found
        return []

    def choose(self, client_ip: str, exclude: frozenset[str] | set[str] = frozenset()) -> ServerState | None:
        candidates = self.usable(exclude)
        if not candidates:
            return None
        table = self.spec.stickiness == Stickiness.TABLE
        if table:
            pinned = self._sticky_lookup(client_ip, candidates, exclude)
            if pinned is not None:
                return pinned
        server = self._pick(client_ip, candidates, bool(exclude))
        if table:
            self._sticky_store(client_ip, server)
        return server

    def _pick(self, client_ip: str, candidates: list[ServerState], retrying: bool) -> ServerState:
        algorithm = self.spec.algorithm
        if algorithm == Algorithm.SOURCE and not retrying:
            return self._maglev_pick(client_ip)
        if algorithm == Algorithm.LEASTCONN:
            least = min(s.active / s.spec.weight for s in candidates)
            candidates = [s for s in candidates if s.active / s.spec.weight == least]
        elif algorithm == Algorithm.FIRST:
            return candidates[0]
        return smooth_weighted(candidates)

    def _maglev_pick(self, client_ip: str) -> ServerState:
        usable = self.usable()
        key = tuple((s.key, s.spec.weight) for s in usable)
        if key != self._maglev_key:
            table = maglev.build_table([k for k, _ in key], [w for _, w in key])
            self._maglev = (usable, table)
            self._maglev_key = key
        servers, table = self._maglev
        return servers[table[source_slot(client_ip, len(table))]]

    def _sticky_lookup(self, client_ip: str, candidates: list[ServerState],
                       exclude: frozenset[str] | set[str]) -> ServerState | None:
        entry = self.sticky.get(client_ip)
        if entry is None:
            return None
        key, expires = entry
        now = time.monotonic()
        server = self.servers.get(key)
        if expires < now or server is None:
            return None
        # Drain takes no new clients, but clients already pinned to it stay (Linode's node modes).
        draining = server.spec.mode == ServerMode.DRAIN and server.up and key not in exclude
        if server not in candidates and not draining:
            return None
        self.sticky[client_ip] = (key, now + self.spec.sticky_timeout_ms / 1000)
        self.sticky.move_to_end(client_ip)
        return server

    def _sticky_store(self, client_ip: str, server: ServerState) -> None:
        self.sticky[client_ip] = (server.key, time.monotonic() + self.spec.sticky_timeout_ms / 1000)
        self.sticky.move_to_end(client_ip)
        if len(self.sticky) > STICKY_TABLE_MAX:
            self.sticky.popitem(last=False)

    def stats(self) -> list[dict]:
        return [s.stats() for s in self.servers.values()]


def smooth_weighted(candidates: list[ServerState]) -> ServerState:
    """nginx's smooth weighted round robin: weights 5,1,1 give a a b a c a a, not a a a a a b c."""
    total = 0
    best = None
    for s in candidates:
        s.current_weight += s.spec.weight
        total += s.spec.weight
        if best is None or s.current_weight > best.current_weight:
            best = s
    best.current_weight -= total
    return best


def pools_for(frontends, running: dict[int, Pool]) -> dict[int, Pool]:
    """One Pool per backend of `frontends`; a running one is kept (its sticky table, counts)."""
    pools: dict[int, Pool] = {}
    for f in frontends:
        bid = f.backend.id
        pools.setdefault(bid, running.get(bid) or Pool(f.backend))
    return pools


def switch_frontends(states: dict, wanted: dict, added: dict, pools: dict[int, Pool]) -> None:
    """After an apply bound what it added: every wanted frontend's state (running or
    added) takes its new spec and pool, a changed backend updating the pool in place."""
    for key, f in wanted.items():
        state = added.get(key) or states[key]
        state.spec = f
        state.pool = pools[f.backend.id]
        if state.pool.spec != f.backend:
            state.pool.update(f.backend)
        states[key] = state
