"""One status document for people: every load balancer, frontend, backend and server with
its state and why, counters and rates, built on demand from the running daemon (config,
data plane counters, health checks, HA) plus the samples of the last minutes."""
import os
import time

from control.api.observed import server_key
from control.config import frontend_protocol
from control.status.samples import SampleRing
from lbfast.enums import CheckType, Health, ServerMode

# Display states, HAProxy's palette of meanings; the page's legend lists them in this order.
STATES = {
    "up": "UP: checked and serving",
    "nocheck": "no check: serving, not checked",
    "going-down": "UP, failing checks: DOWN after `attempts` failures",
    "down": "DOWN: failed its checks (or a passive check)",
    "going-up": "DOWN, passing checks: UP after `rise` successes",
    "drain": "DRAIN: keeps its clients, takes no new ones",
    "backup": "BACKUP: serves only when no accept server is up",
    "maint": "MAINT (mode reject): takes no traffic",
    "init": "not checked yet",
}
ZERO_FRONTEND = {"active": 0, "total": 0, "requests": 0, "bytes_in": 0, "bytes_out": 0, "errors": 0,
                 "bad_requests": 0, "refused": 0, "timeouts": 0}
ZERO_SERVER = {"active": 0, "total": 0, "bytes_in": 0, "bytes_out": 0, "failed": 0}


def server_state(mode: ServerMode, checked: bool, status, up_in_plane: bool | None) -> tuple[str, str]:
    """(display state, label) of a server: mode first (an operator's decision), then the
    check's verdict and where its counts are heading."""
    if mode == ServerMode.REJECT:
        return "maint", "MAINT"
    if status is not None and status.health in (Health.UP, Health.DOWN) and checked:
        if status.last_ok is None:
            return "init", "INIT"       # DOWN until its first check (HAProxy's init-state down)
        if status.health == Health.DOWN:
            if status.successes:
                return "going-up", f"DOWN {status.successes}↑"
            return "down", "DOWN"
        if status.failures:
            return "going-down", f"UP {status.failures}↓"
        up = True
    elif checked and up_in_plane is None:
        return "init", "INIT"
    else:
        up = up_in_plane is not False
        if not up:
            return "down", "DOWN"
    if mode == ServerMode.DRAIN:
        return "drain", "DRAIN"
    if mode == ServerMode.BACKUP:
        return "backup", "BACKUP"
    return ("up", "UP") if checked else ("nocheck", "no check")


def _ago(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 1)


class StatusView:
    """Held by the daemon; `document()` is what /status.json answers and `lbfast top` draws."""

    def __init__(self, daemon, ring: SampleRing | None = None):
        self.daemon = daemon
        self.ring = ring or SampleRing()

    def planes(self) -> dict[int, str]:
        """Frontend id -> the data plane serving it."""
        d = self.daemon
        out = {state.spec.id: d.l4.name for state in d.l4.frontends.values()}
        out.update({spec.id: d.l7.name for spec in d.l7.frontends.values()})
        out.update({spec.id: "xdp" for spec in d.xdp_frontends})
        return out

    def document(self, now: float | None = None) -> dict:
        started = time.perf_counter()
        now = time.time() if now is None else now
        d = self.daemon
        config = d.config
        try:
            stats = d.dataplane_stats()
        except Exception:           # a data plane going away mid-look is not the page's failure
            stats = {"frontends": [], "backends": {}}
        counters = {}
        for row in stats.get("frontends", []):
            counters.setdefault(row["id"], []).append(row)
        servers_seen = {(int(bid), row["key"]): row for bid, rows in stats.get("backends", {}).items()
                        for row in rows}
        checks = d.health.status()
        planes = self.planes()

        lbs, looked_frontends, looked_servers = [], {}, {}
        for lb in config.lbs:
            frontends = []
            for f in lb.frontends:
                c = dict(ZERO_FRONTEND)
                responses = {}
                for row in counters.get(f.id, []):
                    for k in c:
                        c[k] += row.get(k, 0) or 0
                    for code, n in (row.get("responses") or {}).items():
                        responses[code] = responses.get(code, 0) + n
                looked_frontends[f.id] = (c["total"], c["requests"], c["active"])
                frontends.append({"id": f.id, "name": f.name, "listen": f"{lb.vip}:{f.port}",
                                  "protocol": str(frontend_protocol(lb, f)), "backend": f.backend,
                                  "dataplane": planes.get(f.id, "none"), **c,
                                  "responses": responses or None})
            backends = []
            for b in lb.backends:
                checked = b.health_check.type != CheckType.NONE
                rows = []
                for s in b.servers:
                    key = server_key(b, s)
                    seen = servers_seen.get((b.id, key))
                    st = checks.get((b.id, key))
                    state, label = server_state(s.mode, checked, st, None if seen is None else seen.get("up", True))
                    looked_servers[f"{b.id}/{key}"] = state
                    rows.append({
                        "id": s.id, "key": key, "label": s.label, "weight": s.weight, "mode": str(s.mode),
                        "state": state, "state_label": label,
                        "check": str(b.health_check.type),
                        "last_ok": st.last_ok if st else None,
                        "last_reason": st.last_reason if st else "",
                        "last_check_ago_s": _ago(now, st.last_check if st else None),
                        "last_check_ms": None if st is None or st.last_duration is None
                        else round(st.last_duration * 1000, 1),
                        "changed_ago_s": _ago(now, st.last_change if st else None),
                        "change_reason": st.change_reason if st else "",
                        **{k: (seen or {}).get(k, 0) for k in ZERO_SERVER}})
                serving = sum(r["state"] in ("up", "nocheck", "going-down", "backup") for r in rows)
                backends.append({
                    "id": b.id, "name": b.name, "protocol": str(b.protocol), "algorithm": str(b.algorithm),
                    "stickiness": str(b.stickiness), "check": str(b.health_check.type), "retries": b.retries,
                    "state": "up" if serving else "down", "serving": serving, "servers": rows,
                    **{k: sum(r[k] for r in rows) for k in ZERO_SERVER}})
            lbs.append({"id": lb.id, "name": lb.name, "vip": lb.vip, "ha_role": self.ha_role(lb.vip),
                        "throttle": lb.client_conn_throttle,
                        "dataplanes": sorted({f["dataplane"] for f in frontends}),
                        "frontends": frontends, "backends": backends})

        sample = self.ring.look(looked_frontends, looked_servers, now)
        for lb in lbs:
            for f in lb["frontends"]:
                rate = sample.rates.get(f["id"])
                f["conn_rate"] = None if rate is None else round(rate[0], 2)
                f["req_rate"] = None if rate is None else round(rate[1], 2)
                f["peak"] = max(f["active"], self.ring.peak(f["id"]))
        ha = d.ha
        doc = {
            "generated_at": round(now, 3),
            "daemon": {"pid": os.getpid(), "uptime_s": round(now - d.started_at, 1),
                       "dataplane": "xdp" if d.xdp is not None else d.l4.name,
                       "dataplane_reason": d.dataplane_reason, "reloads": d.reloads,
                       "reload_failures": d.reload_failures, "last_error": d.last_error,
                       "ha": {"mode": str(ha.ha.mode), "role": str(ha.role), "since_s": _ago(now, ha.role_since)}},
            "states": STATES,
            "lbs": lbs,
            "history": self.ring.series(),
        }
        # what this look cost the event loop (all but the JSON encoding)
        doc["daemon"]["build_ms"] = round((time.perf_counter() - started) * 1000, 3)
        return doc

    def ha_role(self, vip: str | None) -> str:
        ha = self.daemon.ha
        if vip is not None and vip in getattr(ha, "withdrawn", {}):
            return "withdrawn"
        return str(ha.role)
