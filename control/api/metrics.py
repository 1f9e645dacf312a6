"""/metrics in the Prometheus text format: per frontend and per server connections and
bytes, server health, and the daemon's reloads and API changes."""
import time

from control.api.observed import Observed, server_key
from control.config import frontend_protocol

FRONTEND_METRICS = (
    ("lbfast_frontend_connections_active", "gauge", "active", "Open client connections."),
    ("lbfast_frontend_connections_total", "counter", "total", "Client connections accepted."),
    ("lbfast_frontend_bytes_in_total", "counter", "bytes_in", "Bytes received from clients."),
    ("lbfast_frontend_bytes_out_total", "counter", "bytes_out", "Bytes sent to clients."),
    ("lbfast_frontend_refused_total", "counter", "refused", "Connections refused: no usable server."),
)
SERVER_METRICS = (
    ("lbfast_server_connections_active", "gauge", "active", "Open connections to the server."),
    ("lbfast_server_connections_total", "counter", "total", "Connections sent to the server."),
    ("lbfast_server_bytes_in_total", "counter", "bytes_in", "Bytes sent to the server (client to server)."),
    ("lbfast_server_bytes_out_total", "counter", "bytes_out", "Bytes received from the server."),
    ("lbfast_server_connect_failures_total", "counter", "failed", "Failed connection attempts."),
)


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kw) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in kw.items()) + "}"


def _xdp_stats(daemon) -> dict | None:
    """The XDP program's own counters (SYN rates, flow maps), when it runs."""
    if getattr(daemon, "xdp", None) is None:
        return None
    try:
        return daemon.xdp.stats()
    except Exception:           # a data plane going away mid-request is not /metrics' failure
        return None


def render(daemon, api) -> str:
    config = daemon.config
    seen = Observed(daemon)
    lines: list[str] = []

    def family(name, kind, help_text, samples):
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value}")

    frontends = [(lb, f) for lb in config.lbs for f in lb.frontends]
    for name, kind, key, help_text in FRONTEND_METRICS:
        family(name, kind, help_text, [
            (_labels(lb=lb.name, frontend=f.name, listen=f"{lb.vip}:{f.port}",
                     protocol=frontend_protocol(lb, f)), seen.frontend(f.id).get(key, 0))
            for lb, f in frontends])
    servers = [(lb, b, s) for lb in config.lbs for b in lb.backends for s in b.servers]
    views = {(lb.id, b.id, s.id): seen.server(b, s) for lb, b, s in servers}

    def server_labels(lb, b, s):
        return _labels(lb=lb.name, backend=b.name, server=server_key(b, s), mode=s.mode)

    family("lbfast_server_up", "gauge", "1 if the server is UP (checked or unchecked), 0 if DOWN.",
           [(server_labels(lb, b, s), 1 if views[(lb.id, b.id, s.id)].health == "UP" else 0)
            for lb, b, s in servers if views[(lb.id, b.id, s.id)].health != "unknown"])
    family("lbfast_server_health_checked", "gauge", "1 if an active health check runs for the server.",
           [(server_labels(lb, b, s), int(views[(lb.id, b.id, s.id)].checked)) for lb, b, s in servers])
    for name, kind, key, help_text in SERVER_METRICS:
        family(name, kind, help_text, [(server_labels(lb, b, s), views[(lb.id, b.id, s.id)].counters.get(key, 0))
                                       for lb, b, s in servers])
    xdp = _xdp_stats(daemon)
    if xdp:
        xdp_frontends = [(lb, f) for lb, f in frontends if f.id in xdp["frontends"]]
        for name, key, help_text in (
                ("lbfast_xdp_frontend_syn_flood", "syn_flood",
                 "1 while the frontend's SYN rate is over dataplane.syn_flood_threshold."),
                ("lbfast_xdp_frontend_syn_rate", "syn_rate", "SYNs per second to the frontend.")):
            family(name, "gauge", help_text, [
                (_labels(lb=lb.name, frontend=f.name, listen=f"{lb.vip}:{f.port}"),
                 xdp["frontends"][f.id][key]) for lb, f in xdp_frontends])
        flows = xdp["flow_state"]
        tables = ("conntrack", "half_open")
        family("lbfast_xdp_flow_entries", "gauge", "Entries in the XDP flow maps.",
               [(_labels(table=t), flows[t]["entries"]) for t in tables])
        family("lbfast_xdp_flow_capacity", "gauge", "Entries the online CPUs can hold.",
               [(_labels(table=t), flows[t]["capacity"]) for t in tables])
        family("lbfast_xdp_flow_evictions_total", "counter",
               "Entries the LRU evicted (created, neither deleted nor present).",
               [(_labels(table=t), flows[t]["evicted"]) for t in tables])
        family("lbfast_xdp_flow_events_total", "counter",
               "The XDP program's flow-state events (bpf/consts.h EVENT_*).",
               [(_labels(event=k), v) for k, v in flows["events"].items()])
    family("lbfast_load_balancers", "gauge", "Load balancers in the running config.", [("", len(config.lbs))])
    family("lbfast_reloads_total", "counter", "Config reloads applied (SIGHUP, lbfast reload).",
           [("", getattr(daemon, "reloads", 0))])
    family("lbfast_reload_failures_total", "counter", "Config reloads and API changes rejected.",
           [("", getattr(daemon, "reload_failures", 0))])
    family("lbfast_api_changes_total", "counter", "Changes applied through the API.", [("", api.changes)])
    family("lbfast_uptime_seconds", "gauge", "Seconds since the daemon started.",
           [("", round(time.time() - getattr(daemon, "started_at", time.time()), 3))])
    ha = getattr(daemon, "ha", None)
    try:
        ha_counters = ha.counters() if callable(getattr(ha, "counters", None)) else {}
    except Exception:           # HA state is read here, never the reason /metrics fails
        ha_counters = {}
    for name, value in sorted(ha_counters.items()):
        kind = "counter" if name.endswith("_total") else "gauge"
        family(name, kind, "High availability (control.ha).", [("", value)])
    return "\n".join(lines) + "\n"
