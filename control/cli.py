"""The `lbfast` command line: parses, calls the control plane, prints (a table for people,
JSON with --json). Object options are generated from the model's fields, so the CLI
offers exactly what the model accepts.

Shell completion: eval "$(_LBFAST_COMPLETE=bash_source lbfast)" (zsh_source, fish_source)."""
import enum
import os
import signal
import sys
import types
import typing
from pathlib import Path

import click
import orjson

from control import config as configfile
from control import runtime
from control.edit import Change, NotFound, find_server
from control.model import Backend, Config, Frontend, HealthCheck, LoadBalancer, Server

DEFAULT_CONFIG = "/etc/lbfast/lbfast.json"
NOT_OPTIONS = {"id", "uuid", "created_at", "updated_at", "servers", "backends", "frontends",
               "certificates", "health_check"}

config_option = click.option("--config", "config_path", envvar="LBFAST_CONFIG", default=DEFAULT_CONFIG,
                             show_default=True, type=click.Path(dir_okay=False), help="Config file.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
socket_option = click.option("--socket", "socket_path", envvar="LBFAST_SOCKET", default=None,
                             help="Daemon control socket (default: /run/lbfast/lbfast.sock).")


# -- output -----------------------------------------------------------------------
def print_json(obj) -> None:
    click.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2, default=str).decode())


def print_table(rows: list[dict], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def show(obj, as_json: bool) -> None:
    doc = configfile.redact(obj.model_dump(mode="json", exclude_none=True))
    if as_json:
        print_json(doc)
        return
    for key, value in doc.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = f"{len(value)} item(s)"
        click.echo(f"{key + ':':24} {value}")


def fail(message: str, code: int = 1) -> typing.NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# -- options generated from the model -------------------------------------------------
def _base_type(annotation):
    """(python type, is_list) of a model field's annotation, Optional and Annotated removed."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        elif origin is list:
            return typing.get_args(annotation)[0], True
        else:
            return annotation, False


def model_options(model: type, prefix: str = "", required: tuple[str, ...] = ()):
    """Click options for every simple field of `model` (--field-name), all optional so an
    update only sets what is given."""
    def decorate(fn):
        for name, field in reversed(list(model.model_fields.items())):
            if name in NOT_OPTIONS or name in required:
                continue
            typ, is_list = _base_type(field.annotation)
            opt = "--" + (prefix + name).replace("_", "-")
            dest = prefix + name
            if isinstance(typ, type) and issubclass(typ, enum.Enum):
                fn = click.option(opt, dest, type=click.Choice([e.value for e in typ]), default=None)(fn)
            elif typ is bool:
                fn = click.option(f"{opt}/--no-{opt[2:]}", dest, default=None)(fn)
            elif is_list:
                fn = click.option(opt, dest, multiple=True, default=None,
                                  help="Repeat for several.")(fn)
            else:
                fn = click.option(opt, dest, type=int if typ is int else str, default=None)(fn)
        return fn
    return decorate


def given(options: dict, model: type, prefix: str = "") -> dict:
    out = {}
    for name in model.model_fields:
        value = options.get(prefix + name)
        if value is not None and value != ():
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


# -- config file editing --------------------------------------------------------------
def daemon_api(path: str):
    """The API of a daemon running on this config file, if it has one: object commands then
    read and change the running config through it (applied at once, one writer)."""
    from control.api.client import ApiUnavailable, ConfigApi
    try:
        return ConfigApi.discover(path)
    except ApiUnavailable as e:
        fail(str(e))


def file_config(path: str) -> Config:
    if not Path(path).exists():
        return Config()
    try:
        return configfile.load(path)
    except configfile.ConfigError as e:
        fail(f"{path}:\n{e}")


def load_config(path: str) -> Config:
    from control.api.client import ApiUnavailable
    api = daemon_api(path)
    if api is None:
        return file_config(path)
    try:
        return api.read()[0]
    except ApiUnavailable as e:
        fail(str(e))


def edit(path: str, change) -> object:
    """Apply `change(Change)` to the config and save it; returns what change returned. With
    a daemon's API: to the running config, re-read and re-done if it changed meanwhile."""
    from control.api.client import ApiUnavailable, Conflict
    api = daemon_api(path)
    for _ in range(20 if api is not None else 1):
        try:
            current, etag = api.read() if api is not None else (file_config(path), None)
            c = Change(current)
            result = change(c)
            new = c.done()
            if api is None:
                break
            api.put(new, etag)
        except configfile.ConfigError as e:
            fail(str(e), 2)
        except NotFound as e:
            fail(str(e), 3)
        except ApiUnavailable as e:
            fail(str(e))
        except Conflict:
            continue
        click.echo(f"applied by the running daemon ({api.url})", err=True)
        return result
    else:
        fail("the running config kept changing: try again")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    configfile.save(new, path)
    click.echo("saved; a running daemon applies it on `lbfast reload`", err=True)
    return result


def lookup(path: str, fn):
    try:
        return fn(Change(load_config(path)))
    except NotFound as e:
        fail(str(e), 3)


# -- the command group ---------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lbfast", message="lbfast %(version)s")
def cli():
    """lbfast: XDP/eBPF L4 and Cython L7 load balancer."""


@cli.command()
@config_option
@socket_option
@click.option("--pidfile", default=None, help="Pidfile (default: /run/lbfast/lbfast.pid).")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--grace", default=10.0, show_default=True,
              help="Seconds open sessions get to finish on SIGTERM.")
def run(config_path, socket_path, pidfile, log_level, grace):
    """Run the daemon in the foreground (SIGHUP reloads, SIGTERM stops)."""
    from control import journal
    journal.configure(log_level)
    from control import daemon
    try:
        daemon.run(config_path, socket_path, pidfile, grace)
    except daemon.DaemonFailed as e:
        fail(f"lbfast stopped: {e}")
    except configfile.ConfigError as e:
        fail(f"{config_path}:\n{e}", 2)
    except OSError as e:
        fail(str(e))


@cli.command()
@config_option
@json_option
def check(config_path, as_json):
    """Validate a config file and print a summary (exit 2 when invalid, or when `lbfast run`
    would refuse it on this host: unknown XDP interfaces, a public API without a token, a
    VIP this host cannot reach)."""
    try:
        cfg = configfile.load(config_path)
    except configfile.ConfigError as e:
        if as_json:
            print_json({"valid": False, "errors": [{"field": p, "message": m} for p, m in e.problems]})
        else:
            click.echo(f"{config_path}: invalid\n{e}", err=True)
        sys.exit(2)
    from control import hostcheck
    refused = hostcheck.problems(cfg)
    if refused:
        if as_json:
            print_json({"valid": True, "runnable": False,
                        "errors": [{"field": p, "message": m} for p, m in refused]})
        else:
            click.echo(f"{config_path}: valid, but `lbfast run` would refuse it on this host:", err=True)
            for field, message in refused:
                click.echo(f"  {field}: {message}", err=True)
        sys.exit(2)
    rows = [{"lb": lb.name, "vip": lb.vip, "frontend": f.name, "port": f.port,
             "protocol": configfile.frontend_protocol(lb, f), "backend": f.backend,
             "servers": len(next(b for b in lb.backends if b.name == f.backend).servers)}
            for lb in cfg.lbs for f in lb.frontends]
    if as_json:
        print_json({"valid": True, "runnable": True, "frontends": rows})
    else:
        click.echo(f"{config_path}: valid, {len(cfg.lbs)} load balancer(s), {len(rows)} frontend(s)")
        print_table(rows, ["lb", "vip", "frontend", "port", "protocol", "backend", "servers"])


def daemon_request(socket_path, cmd):
    path = socket_path or runtime.default_socket()
    try:
        return runtime.request(path, cmd)
    except (FileNotFoundError, ConnectionRefusedError):
        fail(f"no lbfast daemon answers on {path}")
    except runtime.ControlError as e:
        fail(str(e), 2)


@cli.command()
@socket_option
@click.option("--pidfile", default=None)
def reload(socket_path, pidfile):
    """Make the running daemon re-read its config file."""
    path = socket_path or runtime.default_socket()
    if os.path.exists(path):
        click.echo(daemon_request(path, "reload"))
        return
    pidfile = pidfile or runtime.default_pidfile()
    try:
        pid = int(Path(pidfile).read_text())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as e:
        fail(f"no running daemon found ({path}, {pidfile}): {e}")
    click.echo(f"sent SIGHUP to {pid}")


@cli.command()
@socket_option
@json_option
def status(socket_path, as_json):
    """What runs: data plane, frontends, servers and their state."""
    st = daemon_request(socket_path, "status")
    if as_json:
        print_json(st)
        return
    click.echo(f"pid {st['pid']}  up {st['uptime_s']}s  config {st['config']}")
    click.echo(f"data plane: {st['dataplane']['name']} ({st['dataplane']['reason']})")
    click.echo(f"reloads: {st['reloads']} ok, {st['reload_failures']} rejected"
               + (f"  last error: {st['last_error']}" if st["last_error"] else ""))
    if st.get("ha", {}).get("mode", "none") != "none":
        print_ha(st["ha"])
    no_server = {"key": "(no servers)", "mode": "", "health": "-", "active": 0, "total": 0}
    rows = [{"frontend": f["frontend"], "listen": f["listen"], "proto": f["protocol"],
             "algorithm": f["algorithm"], "server": s["key"], "mode": s["mode"],
             "state": s.get("health") or ("UP" if s["up"] else "DOWN"), "active": s["active"],
             "total": s["total"], "last check": s.get("last_reason", "")}
            for f in st["frontends"] for s in (f["servers"] or [no_server])]
    print_table(rows, ["frontend", "listen", "proto", "algorithm", "server", "mode", "state", "active", "total",
                       "last check"])


def print_ha(ha: dict) -> None:
    engine = ha["engine"] or {}
    click.echo(f"ha: {ha['mode']}, role {ha['role']} since {ha['since']}, {ha['failovers']} failover(s), "
               f"{engine.get('name', 'no engine')} pid {engine.get('pid')} ({engine.get('restarts', 0)} restarts)"
               + (f"  error: {ha['last_error']}" if ha["last_error"] else ""))
    click.echo("  instances: " + ", ".join(f"{i['address']} {i['role']}" + (" (this host)" if i["local"] else "")
                                         for i in ha["instances"]))
    if "bgp" in ha:
        bgp = ha["bgp"]
        click.echo(f"  announced: {' '.join(bgp['announced']) or '-'}"
                   + "".join(f"  withdrawn {vip}: {why}" for vip, why in bgp["withdrawn"].items()))
        click.echo("  neighbors: " + ", ".join(f"{n['address']} AS{n['as']} {n['info'] or n['state']}"
                                             for n in bgp["neighbors"]))


@cli.command()
@socket_option
@json_option
def stats(socket_path, as_json):
    """Connection and byte counters per frontend and server."""
    st = daemon_request(socket_path, "stats")
    if as_json:
        print_json(st)
        return
    print_table(st["frontends"], ["name", "address", "port", "active", "total", "bytes_in", "bytes_out", "refused"])
    click.echo()
    names = {str(f["backend_id"]): f["backend"] for f in daemon_request(socket_path, "status")["frontends"]}
    rows = [dict(s, backend=names.get(bid, bid), server=s.get("label") or s["key"],
                 state="UP" if s["up"] else "DOWN")
            for bid, servers in st["backends"].items() for s in servers]
    print_table(rows, ["backend", "server", "state", "active", "total", "bytes_in", "bytes_out", "failed"])

    flows = st.get("xdp", {}).get("flow_state")
    if flows:       # XDP: conntrack and half-open maps, and what the program did with flows
        click.echo()
        print_table([dict(flows[t], table=t) for t in ("conntrack", "half_open")],
                    ["table", "entries", "capacity", "evicted"])
        click.echo("  " + "  ".join(f"{k} {v}" for k, v in flows["events"].items()))


@cli.command()
@socket_option
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.2), help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one view and exit (also when not on a terminal).")
def top(socket_path, interval, once):
    """The live status view in the terminal: frontends, backends, servers and why (like /status)."""
    from control import top as view
    view.run(lambda: daemon_request(socket_path, "view"), interval, once)


# -- object commands ------------------------------------------------------------------
LB_COLUMNS = ["id", "name", "vip", "frontends", "backends", "throttle"]


def lb_row(lb: LoadBalancer) -> dict:
    return {"id": lb.id, "uuid": lb.uuid, "name": lb.name, "vip": lb.vip, "frontends": len(lb.frontends),
            "backends": len(lb.backends), "throttle": lb.client_conn_throttle}


@cli.group()
def lb():
    """Load balancers (a VIP with frontends and backends)."""


@lb.command("create")
@config_option
@json_option
@click.argument("name")
@model_options(LoadBalancer, required=("name",))
def lb_create(config_path, as_json, name, **opts):
    obj = edit(config_path, lambda c: c.create_lb({"name": name, **given(opts, LoadBalancer)}))
    show(lookup(config_path, lambda c: c.lb(obj.name)), as_json)


@lb.command("list")
@config_option
@json_option
def lb_list(config_path, as_json):
    rows = [lb_row(x) for x in load_config(config_path).lbs]
    print_json(rows) if as_json else print_table(rows, LB_COLUMNS)


@lb.command("show")
@config_option
@json_option
@click.argument("lb_ref")
def lb_show(config_path, as_json, lb_ref):
    show(lookup(config_path, lambda c: c.lb(lb_ref)), as_json)


@lb.command("update")
@config_option
@json_option
@click.argument("lb_ref")
@model_options(LoadBalancer)
def lb_update(config_path, as_json, lb_ref, **opts):
    show(edit(config_path, lambda c: c.update_lb(lb_ref, given(opts, LoadBalancer))), as_json)


@lb.command("delete")
@config_option
@click.argument("lb_ref")
def lb_delete(config_path, lb_ref):
    edit(config_path, lambda c: c.delete_lb(lb_ref))


@cli.group()
def backend():
    """Backends: server pools with algorithm, stickiness and health check."""


def health_fields(opts: dict, current: HealthCheck | None = None) -> dict:
    fields = given(opts, HealthCheck, prefix="check_")
    if not fields:
        return {}
    base = current.model_dump() if current else {}
    return {"health_check": base | fields}


@backend.command("create")
@config_option
@json_option
@click.argument("lb_ref")
@click.argument("name")
@model_options(Backend, required=("name",))
@model_options(HealthCheck, prefix="check_")
def backend_create(config_path, as_json, lb_ref, name, **opts):
    fields = {"name": name, **given(opts, Backend), **health_fields(opts)}
    show(edit(config_path, lambda c: c.create_backend(lb_ref, fields)), as_json)


@backend.command("list")
@config_option
@json_option
@click.argument("lb_ref")
def backend_list(config_path, as_json, lb_ref):
    rows = [{"id": b.id, "name": b.name, "protocol": b.protocol, "port": b.forward_port,
             "algorithm": b.algorithm, "stickiness": b.stickiness, "check": b.health_check.type,
             "servers": len(b.servers)}
            for b in lookup(config_path, lambda c: c.lb(lb_ref)).backends]
    print_json(rows) if as_json else print_table(rows, list(rows[0]) if rows else [])


@backend.command("show")
@config_option
@json_option
@click.argument("lb_ref")
@click.argument("backend_ref")
def backend_show(config_path, as_json, lb_ref, backend_ref):
    show(lookup(config_path, lambda c: c.backend(lb_ref, backend_ref)), as_json)


@backend.command("update")
@config_option
@json_option
@click.argument("lb_ref")
@click.argument("backend_ref")
@model_options(Backend)
@model_options(HealthCheck, prefix="check_")
def backend_update(config_path, as_json, lb_ref, backend_ref, **opts):
    def change(c: Change):
        current = c.backend(lb_ref, backend_ref)
        return c.update_backend(lb_ref, backend_ref,
                                {**given(opts, Backend), **health_fields(opts, current.health_check)})
    show(edit(config_path, change), as_json)


@backend.command("delete")
@config_option
@click.argument("lb_ref")
@click.argument("backend_ref")
def backend_delete(config_path, lb_ref, backend_ref):
    edit(config_path, lambda c: c.delete_backend(lb_ref, backend_ref))


@cli.group()
def frontend():
    """Frontends: a port on the load balancer's VIP, forwarding to a backend."""


@frontend.command("create")
@config_option
@json_option
@click.argument("lb_ref")
@click.argument("name")
@click.option("--port", type=int, required=True)
@click.option("--backend", "backend_name", required=True, help="Backend name.")
@model_options(Frontend, required=("name", "port", "backend"))
def frontend_create(config_path, as_json, lb_ref, name, port, backend_name, **opts):
    fields = {"name": name, "port": port, "backend": backend_name, **given(opts, Frontend)}
    show(edit(config_path, lambda c: c.create_frontend(lb_ref, fields)), as_json)


@frontend.command("list")
@config_option
@json_option
@click.argument("lb_ref")
def frontend_list(config_path, as_json, lb_ref):
    lbo = lookup(config_path, lambda c: c.lb(lb_ref))
    rows = [{"id": f.id, "name": f.name, "listen": f"{lbo.vip}:{f.port}",
             "protocol": configfile.frontend_protocol(lbo, f), "backend": f.backend,
             "timeout_client_ms": f.timeout_client_ms} for f in lbo.frontends]
    print_json(rows) if as_json else print_table(rows, list(rows[0]) if rows else [])


@frontend.command("show")
@config_option
@json_option
@click.argument("lb_ref")
@click.argument("frontend_ref")
def frontend_show(config_path, as_json, lb_ref, frontend_ref):
    show(lookup(config_path, lambda c: c.frontend(lb_ref, frontend_ref)), as_json)


@frontend.command("update")
@config_option
@json_option
@click.argument("lb_ref")
@click.argument("frontend_ref")
@model_options(Frontend)
def frontend_update(config_path, as_json, lb_ref, frontend_ref, **opts):
    show(edit(config_path, lambda c: c.update_frontend(lb_ref, frontend_ref, given(opts, Frontend))), as_json)


@frontend.command("delete")
@config_option
@click.argument("lb_ref")
@click.argument("frontend_ref")
def frontend_delete(config_path, lb_ref, frontend_ref):
    edit(config_path, lambda c: c.delete_frontend(lb_ref, frontend_ref))


@cli.group()
def server():
    """Servers of a backend (Linode nodes, Scaleway server_ip)."""


@server.command("create")
@config_option
@json_option
@click.argument("lb_ref")
@click.argument("backend_ref")
@click.argument("address")
@model_options(Server, required=("address",))
def server_create(config_path, as_json, lb_ref, backend_ref, address, **opts):
    fields = {"address": address, **given(opts, Server)}
    show(edit(config_path, lambda c: c.create_server(lb_ref, backend_ref, fields)), as_json)


@server.command("list")
@config_option
@json_option
@click.argument("lb_ref")
@click.argument("backend_ref")
def server_list(config_path, as_json, lb_ref, backend_ref):
    b = lookup(config_path, lambda c: c.backend(lb_ref, backend_ref))
    rows = [{"id": s.id, "address": s.address, "port": s.port or b.forward_port, "weight": s.weight,
             "mode": s.mode, "label": s.label} for s in b.servers]
    print_json(rows) if as_json else print_table(rows, ["id", "address", "port", "weight", "mode", "label"])


@server.command("show")
@config_option
@json_option
@click.argument("lb_ref")
@click.argument("backend_ref")
@click.argument("server_ref")
def server_show(config_path, as_json, lb_ref, backend_ref, server_ref):
    show(lookup(config_path, lambda c: find_server(c.backend(lb_ref, backend_ref), server_ref)), as_json)


@server.command("update")
@config_option
@json_option
@click.argument("lb_ref")
@click.argument("backend_ref")
@click.argument("server_ref")
@model_options(Server)
def server_update(config_path, as_json, lb_ref, backend_ref, server_ref, **opts):
    show(edit(config_path, lambda c: c.update_server(lb_ref, backend_ref, server_ref, given(opts, Server))), as_json)


@server.command("delete")
@config_option
@click.argument("lb_ref")
@click.argument("backend_ref")
@click.argument("server_ref")
def server_delete(config_path, lb_ref, backend_ref, server_ref):
    edit(config_path, lambda c: c.delete_server(lb_ref, backend_ref, server_ref))


# The object commands share their verbs: one help line per verb, filled in per object.
VERB_HELP = {
    "create": "Create a {what} (options: its fields).",
    "list": "List the {what}s (a table, or JSON with --json).",
    "show": "Show one {what} by name or id.",
    "update": "Change the given fields of a {what}; the others stay.",
    "delete": "Delete a {what}.",
}
for _group, _what in ((lb, "load balancer"), (backend, "backend"), (frontend, "frontend"), (server, "server")):
    for _verb, _command in _group.commands.items():
        if not _command.help and _verb in VERB_HELP:
            _command.help = VERB_HELP[_verb].format(what=_what)


def main():
    cli(prog_name="lbfast")


if __name__ == "__main__":
    main()
