"""The lbfast daemon: loads the config, applies it to the data planes, reloads on SIGHUP
(one writer at a time), stops on SIGTERM, and answers the CLI on a control socket."""
import asyncio
import concurrent.futures
import logging
import os
import signal
import time
from pathlib import Path

import orjson

from control import config as configfile
from control import runtime
from control.ha import HaManager
from control.health import HealthMonitor
from control.sync import backend_specs, frontend_specs
from lbfast.enums import DataplaneMode, Health, OnMarkedDown, Protocol, ProxyProtocol
from lbfast.l4proxy import L4Proxy
from lbfast.l7 import L7Dataplane
from lbfast.udp_proxy import UdpProxy

log = logging.getLogger("lbfast.daemon")


def xdp_handles(spec) -> bool:
    """Plain TCP/UDP frontends go through XDP; PROXY protocol needs a proxy to write it."""
    return spec.protocol in (Protocol.TCP, Protocol.UDP) and spec.backend.proxy_protocol == ProxyProtocol.NONE


class Daemon:
    def __init__(self, config_path: str, socket_path: str | None = None, pidfile: str | None = None,
                 grace_s: float = 10.0):
        self.config_path = config_path
        self.grace_s = grace_s
        self.socket_path = socket_path or runtime.default_socket()
        self.pidfile = pidfile or runtime.default_pidfile()
        self.config = None
        self.l4 = L4Proxy()
        self.udp = UdpProxy()                # UDP frontends when XDP does not forward them
        self.l7 = L7Dataplane()              # workers start with the first http/https frontend
        self.lock = asyncio.Lock()           # one writer: SIGHUP, API and CLI changes queue here
        self.stopping = asyncio.Event()
        self.started_at = time.time()
        self.reloads = 0
        self.reload_failures = 0
        self.last_error = ""
        self.xdp = None                      # lbfast.xdp.XdpDataplane when XDP forwards L4
        self.xdp_frontends = []              # the FrontendSpecs it forwards
        self.user_frontends = []             # and those the userspace proxies serve
        self.xdp_thread = None
        self.dataplane_reason = ""
        self.api = None                      # control.api.ApiServer when config.api.listen is set
        self.ha = HaManager(self)            # keepalived / BIRD for config.ha
        self.health = HealthMonitor(self._health_changed)
        self.backends = {}                   # backend id -> BackendSpec of the running config
        self.l4.on_connect_failure = self._passive_failure
        self.udp.on_connect_failure = self._passive_failure
        self.l7.on_passive_failure = self._passive_failure

    # -- apply and reload ---------------------------------------------------------
    def _partition(self, specs: list) -> tuple[list, list]:
        """(frontends the XDP program forwards, frontends the userspace proxies serve)."""
        if self.xdp is None:
            return [], specs
        in_kernel = [f for f in specs if xdp_handles(f)]
        return in_kernel, [f for f in specs if not xdp_handles(f)]

    def _check_claimed(self, specs: list) -> None:
        """Each userspace frontend needs exactly one plane: one that none claims fails the apply."""
        problems = []
        for f in specs:
            claims = sum(plane.handles(f) for plane in (self.l4, self.udp, self.l7))
            if claims != 1:
                why = "no data plane serves it" if not claims else f"{claims} data planes claim it"
                problems.append((f"frontend {f.name!r} (lb {f.lb_id}, {f.protocol} port {f.port})", why))
        if problems:
            raise configfile.ConfigError(problems)

    async def apply(self, config) -> None:
        """Hand the config to every data plane; raises if a data plane refuses it
        (the data planes apply nothing in that case)."""
        in_kernel, specs = self._partition(frontend_specs(config))
        self._check_claimed(specs)
        old_kernel, old_specs = self.xdp_frontends, self.user_frontends
        if self.xdp is not None:
            await self.in_xdp_thread(self.xdp.apply, in_kernel)   # refuses bad input before it writes a map
            self.xdp_frontends = in_kernel
        try:
            self.udp.sessions_max = config.dataplane.udp_sessions_max
            await self.udp.apply(specs)         # UDP sockets: no listener moves to or from it
            to_l4 = {f.listen_key for f in specs if self.l4.handles(f)}
            held = list(self.l7.frontends.values())
            if any(f.listen_key in to_l4 for f in held):   # a listener moves from L7 to L4: free it first
                await self.l7.apply([f for f in held if f.listen_key not in to_l4])
            try:
                await self.l4.apply(specs)
            except BaseException:
                await self.l7.apply(held)
                raise
            self.l7.workers_wanted = config.dataplane.workers
            try:
                await self.l7.apply(specs)
            except BaseException:
                await self.l4.apply(old_specs)      # L7 refused: L4 goes back to the running config
                raise
        except BaseException:
            await self.udp.apply(old_specs)     # a no-op when it was the one that refused
            if self.xdp is not None:
                await self.in_xdp_thread(self.xdp.apply, old_kernel)
                self.xdp_frontends = old_kernel
            raise
        self.config = config
        self.user_frontends = specs
        self.backends = {b.id: b for b in backend_specs(config)}
        self.health.update(self.backends.values())
        for (bid, key), st in self.health.status().items():   # new pools learn the known verdicts
            self._set_health(bid, key, st.health != Health.DOWN)
        await self.ha.apply(config)

    # -- health -------------------------------------------------------------------------
    def _set_health(self, backend_id: int, server_key: str, up: bool) -> None:
        for dp in (self.l4, self.udp, self.l7, self.xdp):
            if dp is not None:
                dp.set_server_health(backend_id, server_key, up)

    def _health_changed(self, backend_id: int, server_key: str, health: Health, reason: str) -> None:
        up = health != Health.DOWN
        self._set_health(backend_id, server_key, up)
        backend = self.backends.get(backend_id)
        if not up and backend is not None and backend.on_marked_down == OnMarkedDown.SHUTDOWN_SESSIONS:
            n = self.l4.close_server_sessions(backend_id, server_key)
            n += self.udp.close_server_sessions(backend_id, server_key)
            self.l7.close_server_sessions(backend_id, server_key)
            if self.xdp is not None:
                n += self.xdp.purge_server(backend_id, server_key)
            log.warning("%s is down: shut down its sessions (%d L4 flows and UDP sessions)", server_key, n)

    def _passive_failure(self, backend_id: int, server_key: str, reason: str) -> None:
        """Linode check_passive: a failed connect or a 5xx takes the server out at once."""
        backend = self.backends.get(backend_id)
        if backend is not None and backend.health_check.passive:
            self.health.report_passive_failure(backend_id, server_key, reason)

    async def commit(self, new) -> None:
        """Apply a changed config (API, CLI through the API) and write it to the file.
        The caller holds self.lock. If the data planes refuse it, nothing is written; if
        the write fails, the data planes go back to the old config."""
        old = self.config
        await self.apply(new)
        try:
            configfile.save(new, self.config_path)
        except OSError:
            await self.apply(old)
            raise

    async def reload(self) -> tuple[bool, str]:
        async with self.lock:
            try:
                new = configfile.load(self.config_path)
                await self.apply(new)
            except (configfile.ConfigError, OSError) as e:
                self.reload_failures += 1
                self.last_error = str(e)
                log.error("reload rejected, the running config stays: %s", e)
                return False, str(e)
            self.reloads += 1
            self.last_error = ""
            log.info("reloaded %s: %d load balancers", self.config_path, len(new.lbs))
            return True, "reloaded"

    # -- run ------------------------------------------------------------------------
    async def _recount_xdp_connections(self, every_s: float = 30.0) -> None:
        """The program's open-connection counts miss flows the LRU evicted unseen;
        leastconn and the stats stay right by recounting from conntrack now and then."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.in_xdp_thread(self.xdp.recount_active_connections)
            except Exception:
                log.exception("recounting XDP connections failed")

    async def in_xdp_thread(self, fn, *args):
        """pyroute2's netlink calls cannot run inside a running event loop: XDP set-up,
        apply and close run in one worker thread (map writes need not)."""
        if self.xdp_thread is None:
            self.xdp_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="xdp")
        return await asyncio.get_running_loop().run_in_executor(self.xdp_thread, fn, *args)

    def _start_xdp(self, config) -> None:
        """dataplane.mode: xdp must attach; auto attaches when it can, else the userspace
        proxy serves L4 and status says why."""
        dp = config.dataplane
        if dp.mode == DataplaneMode.USERSPACE:
            self.dataplane_reason = "dataplane.mode is userspace"
            return
        from lbfast.xdp.probe import probe
        ok, why = probe(dp.interfaces, dp.xdp_mode)
        if ok:
            from lbfast.xdp import XdpDataplane
            try:
                self.xdp = XdpDataplane(dp.interfaces, dp.xdp_mode, dp.snat_addresses or None,
                                        pin_dir=dp.pin_dir)
            except Exception as e:          # compile or attach failed
                ok, why = False, f"XDP failed to start: {e}"
        if ok:
            self.dataplane_reason = why
        elif dp.mode == DataplaneMode.XDP:
            raise configfile.ConfigError([("dataplane.mode", f"xdp cannot run here: {why}")])
        else:
            self.dataplane_reason = f"userspace L4 proxy: {why}"
        log.info("data plane: %s", self.dataplane_reason)

    async def run(self) -> None:
        config = configfile.load(self.config_path)
        await self.in_xdp_thread(self._start_xdp, config)
        try:
            await self.apply(config)
        except BaseException:
            if self.xdp is not None:
                await self.in_xdp_thread(self.xdp.close)
            raise
        ctl = await asyncio.start_unix_server(self._serve_control, path=runtime.prepare_socket(self.socket_path))
        os.chmod(self.socket_path, 0o600)
        if config.api.listen:
            from control.api import ApiServer, token_for
            self.api = ApiServer(self)
            try:
                await self.api.start(config.api.listen, token_for(config))
            except BaseException:           # e.g. no token for a non-loopback address
                ctl.close()
                Path(self.socket_path).unlink(missing_ok=True)
                raise
        runtime.write_pidfile(self.pidfile)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        if self.xdp is not None:
            recount = asyncio.ensure_future(self._recount_xdp_connections())
        log.info("lbfast running: %d frontends, data plane %s, control socket %s",
                 len(self.l4.frontends), self.dataplane_reason, self.socket_path)
        try:
            await self.stopping.wait()
        finally:
            log.info("stopping: %d open sessions get up to %.0fs", len(self.l4.sessions), self.grace_s)
            await self.ha.stop()            # VIPs move or are withdrawn while the listeners still serve
            if self.api is not None:        # no changes while the data planes drain
                await self.api.stop()
            ctl.close()
            await self.l4.drain(self.grace_s)
            await self.l4.close()
            await self.udp.close()
            await self.l7.close()
            await self.health.close()
            if self.xdp is not None:         # detaches: the kernel stack sees the VIP traffic again
                recount.cancel()
                await self.in_xdp_thread(self.xdp.close)
            Path(self.socket_path).unlink(missing_ok=True)
            runtime.remove_pidfile(self.pidfile)

    # -- control socket -------------------------------------------------------------
    async def _serve_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = orjson.loads(line)
                reply = await self.handle(request.get("cmd", ""), request)
            except orjson.JSONDecodeError:
                reply = {"ok": False, "error": "request is not JSON"}
            except Exception as e:      # a bug must not kill the control socket
                log.exception("control command failed")
                reply = {"ok": False, "error": f"internal error: {e}"}
            writer.write(orjson.dumps(reply, default=str) + b"\n")
            await writer.drain()
        except ConnectionError:
            pass                        # the client gave up (a timed-out probe): nothing to tell it
        finally:
            writer.close()

    async def handle(self, cmd: str, request: dict) -> dict:
        if cmd == "status":
            return {"ok": True, "result": self.status()}
        if cmd == "stats":
            return {"ok": True, "result": self.dataplane_stats()}
        if cmd == "ha-check":               # keepalived's track script
            ok, reason = self.ha.check()
            return {"ok": ok, "result": reason} if ok else {"ok": False, "error": reason}
        if cmd == "reload":
            ok, message = await self.reload()
            return {"ok": ok, "result": message} if ok else {"ok": False, "error": message}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _add_health(self, frontends: list[dict]) -> None:
        """Each server row gets its check verdict, last result and time of last change."""
        checks = self.health.status()
        for row in frontends:
            for server in row["servers"]:
                st = checks.get((row["backend_id"], server["key"]))
                if st is None:
                    continue
                server.update(health=str(st.health), check=str(st.check), last_ok=st.last_ok,
                              last_reason=st.last_reason, last_check=st.last_check,
                              changed_at=st.last_change, change_reason=st.change_reason)

    def xdp_stats(self) -> dict:
        """The XDP program's counters in the userspace proxies' shape."""
        raw = self.xdp.stats()
        health = self.health.status()
        frontends, backends = [], {}
        for f in self.xdp_frontends:
            t = raw["frontends"].get(f.id, {})
            frontends.append({"id": f.id, "name": f.name, "address": f.address, "port": f.port,
                              "active": t.get("active_connections", 0), "total": t.get("new_connections", 0),
                              "bytes_in": t.get("bytes_in", 0), "bytes_out": t.get("bytes_out", 0),
                              "packets_in": t.get("packets_in", 0), "packets_out": t.get("packets_out", 0),
                              "refused": 0})
            rows = backends.setdefault(str(f.backend.id), {})
            for s in f.backend.servers:
                t = raw["servers"].get(f.backend.id, {}).get(s.key, {})
                st = health.get((f.backend.id, s.key))
                rows[s.key] = {"key": s.key, "id": s.id, "mode": str(s.mode),
                               "up": st is None or st.health != Health.DOWN,
                               "active": t.get("active_connections", 0), "total": t.get("new_connections", 0),
                               "bytes_in": t.get("bytes_in", 0), "bytes_out": t.get("bytes_out", 0), "failed": 0}
        return {"frontends": frontends, "backends": {b: list(r.values()) for b, r in backends.items()},
                "drops": raw["drops"], "passes": raw["passes"]}

    def dataplane_stats(self) -> dict:
        """Counters of every data plane, merged: frontends, and servers per backend id."""
        l4, udp, l7 = self.l4.stats(), self.udp.stats(), self.l7.stats()
        out = {"frontends": l4["frontends"] + udp["frontends"] + l7["frontends"],
               "backends": {**l4["backends"], **udp["backends"], **l7["backends"]}, "l7": l7}
        if self.xdp is not None:
            x = self.xdp_stats()
            out["frontends"] += x["frontends"]
            out["backends"].update(x["backends"])
            out["xdp"] = {"drops": x["drops"], "passes": x["passes"]}
        return out

    def status(self) -> dict:
        frontends = [state.spec.status_row(plane.name, state.active, state.pool.stats())
                     for plane in (self.l4, self.udp) for state in plane.frontends.values()]
        frontends += self.l7.frontend_status()
        if self.xdp is not None:
            x = self.xdp_stats()
            active = {f["id"]: f["active"] for f in x["frontends"]}
            frontends += [f.status_row("xdp", active.get(f.id, 0), x["backends"].get(str(f.backend.id), []))
                          for f in self.xdp_frontends]
        self._add_health(frontends)
        name = "xdp" if self.xdp is not None else self.l4.name
        return {"pid": os.getpid(), "config": os.path.abspath(self.config_path),
                "uptime_s": round(time.time() - self.started_at, 1),
                "dataplane": {"name": name, "reason": self.dataplane_reason},
                "api": self.api.url if self.api is not None else None,
                "reloads": self.reloads, "reload_failures": self.reload_failures,
                "last_error": self.last_error, "ha": self.ha.status(), "frontends": frontends}


def run(config_path: str, socket_path: str | None = None, pidfile: str | None = None,
        grace_s: float = 10.0) -> None:
    import uvloop
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(Daemon(config_path, socket_path, pidfile, grace_s).run())
