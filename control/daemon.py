"""The lbfast daemon: loads the config, applies it to the data planes, reloads on SIGHUP
(one writer at a time), stops on SIGTERM, and answers the CLI on a control socket.

SIGTERM and SIGINT stop it with status 0; any other stop (a background task or thread
that dies, a data plane that fails for good) is logged with its cause and ends with
status 1, so that a supervisor (systemd's Restart=on-failure) starts it again."""
import asyncio
import concurrent.futures
import logging
import os
import signal
import threading
import time
from pathlib import Path

import orjson

from control import config as configfile
from control import runtime, sdnotify
from control.ha import HaManager
from control.health import HealthMonitor
from control.status import StatusView
from control.sync import backend_specs, frontend_specs
from lbfast import access_log
from lbfast.admission import raise_open_files_limit
from lbfast.enums import DataplaneMode, Health, OnMarkedDown, Protocol, ProxyProtocol
from lbfast.l4proxy import L4Proxy
from lbfast.l7 import L7Dataplane
from lbfast.udp_proxy import UdpProxy

log = logging.getLogger("lbfast.daemon")


class DaemonFailed(RuntimeError):
    """The daemon stopped for a reason other than SIGTERM/SIGINT."""


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
        self.failure = ""                    # why the daemon stops, when not on a signal
        self.loop: asyncio.AbstractEventLoop | None = None
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
        self.view = StatusView(self)         # /status, /status.json and `lbfast top`
        self.l4.passive.on_failure = self.l7.on_passive_failure = self._passive_failure
        self.l4.passive.on_ok = self.l7.on_passive_ok = self._passive_ok
        self.udp.on_connect_failure = self._passive_failure

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
            if config.dataplane.cookie_secret:
                self.l7.use_secret(config.dataplane.cookie_secret.encode())
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
        sdnotify.notify(STATUS=self.summary())
        backend = self.backends.get(backend_id)
        if not up and backend is not None and backend.on_marked_down == OnMarkedDown.SHUTDOWN_SESSIONS:
            n = self.l4.close_server_sessions(backend_id, server_key)
            n += self.udp.close_server_sessions(backend_id, server_key)
            self.l7.close_server_sessions(backend_id, server_key)
            if self.xdp is not None:
                n += self.xdp.purge_server(backend_id, server_key)
            log.warning("%s is down: shut down its sessions (%d L4 flows and UDP sessions)", server_key, n,
                        extra={"backend": backend_id, "server": server_key})

    def _passive_failure(self, backend_id: int, server_key: str, reason: str) -> None:
        """Linode check_passive: `attempts` consecutive failed connects or 5xx take the server out."""
        backend = self.backends.get(backend_id)
        if backend is not None and backend.health_check.passive:
            self.health.report_passive_failure(backend_id, server_key, reason)

    def _passive_ok(self, backend_id: int, server_key: str, reason: str) -> None:
        self.health.report_passive_ok(backend_id, server_key)

    async def commit(self, new) -> None:
        """Apply a changed config (API, CLI through the API) and write it to the file.
        The caller holds self.lock. If the data planes refuse it, nothing is written; if
        the write fails, the data planes go back to the old config."""
        old = self.config
        if new.dataplane.cookie_secret is None:     # a whole new config keeps the cookies valid
            new.dataplane.cookie_secret = old.dataplane.cookie_secret
        try:
            await self.apply(new)
            try:
                configfile.save(new, self.config_path)
            except OSError:
                await self.apply(old)
                raise
        except Exception as e:
            self._refused("change", e)
            raise

    def _refused(self, what: str, e: Exception) -> str:
        """Every refused reload or change is counted and logged with its reason; the
        running config stays. Unexpected failures also leave their traceback in the log."""
        reason = str(e) or type(e).__name__
        self.reload_failures += 1
        self.last_error = reason
        expected = isinstance(e, (configfile.ConfigError, OSError, ValueError, RuntimeError))
        log.error("%s rejected, the running config stays: %s", what, reason, exc_info=None if expected else e)
        return reason

    async def reload(self) -> tuple[bool, str]:
        async with self.lock:
            try:
                new = configfile.load(self.config_path)
                configfile.keep_cookie_secret(new, self.config_path, self.config.dataplane.cookie_secret)
                await self.apply(new)
            except Exception as e:
                reason = self._refused("reload", e)
                sdnotify.notify(STATUS=f"{self.summary()}; last reload rejected")
                return False, reason
            self.reloads += 1
            self.last_error = ""
            log.info("reloaded %s: %d load balancers", self.config_path, len(new.lbs))
            sdnotify.notify(STATUS=self.summary())
            return True, "reloaded"

    # -- failures -------------------------------------------------------------------
    def fail(self, reason: str) -> None:
        """Stop the daemon because something it needs has stopped working (exit status 1)."""
        log.error("stopping on a failure: %s", reason)
        if not self.failure:
            self.failure = reason
        self.stopping.set()

    def fail_from_thread(self, reason: str) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.fail, reason)

    def _thread_died(self, args) -> None:
        """threading.excepthook: no thread of the daemon may end on an exception unseen."""
        log.error("thread %s died", args.thread.name if args.thread else "?",
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        self.fail_from_thread(f"thread {args.thread.name if args.thread else '?'} died: "
                              f"{args.exc_value!r}")

    def watch(self, task: asyncio.Future, what: str) -> asyncio.Future:
        """A background task that must run as long as the daemon: its end stops the daemon."""
        def ended(t: asyncio.Future) -> None:
            if self.stopping.is_set():
                return
            error = None if t.cancelled() else t.exception()
            if error is not None:
                log.error("%s died", what, exc_info=error)
            self.fail(f"{what} ended: {error!r}" if error is not None else
                      f"{what} ended ({'cancelled' if t.cancelled() else 'returned'})")
        task.add_done_callback(ended)
        return task

    # -- run ------------------------------------------------------------------------
    async def _recount_xdp_connections(self, every_s: float = 30.0) -> None:
        """The program's open-connection counts miss flows the LRU evicted unseen;
        leastconn and the stats stay right by recounting from conntrack now and then.
        Expired half-open flows (a SYN flood's) are swept at the same pace."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.in_xdp_thread(self.xdp.recount_active_connections)
                await self.in_xdp_thread(self.xdp.sweep_half_open)
            except Exception:
                log.exception("recounting XDP connections failed")

    async def _watch_syn_floods(self, every_s: float = 2.0) -> None:
        """Log each XDP frontend entering and leaving flood mode (bpf/flood.h)."""
        flooded: set[int] = set()
        while True:
            await asyncio.sleep(every_s)
            try:
                now = {fid: f for fid, f in self.xdp.stats()["frontends"].items() if f["syn_flood"]}
            except Exception:
                log.exception("reading XDP SYN rates failed")
                continue
            for fid in now.keys() - flooded:
                log.warning("SYN flood on frontend %d: %d SYN/s; new sources get no sticky or "
                            "throttle state until their handshake completes", fid, now[fid]["syn_rate"])
            for fid in flooded - now.keys():
                log.warning("SYN flood on frontend %d is over", fid)
            flooded = set(now)

    async def in_xdp_thread(self, fn, *args):
        """XDP set-up (the compile), apply and close block on the kernel (netlink, bpf):
        they run in one worker thread, not in the event loop."""
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
                                        pin_dir=dp.pin_dir, on_failure=self.fail_from_thread,
                                        conntrack_entries=dp.conntrack_entries,
                                        syn_flood_protection=dp.syn_flood_protection,
                                        syn_flood_threshold=dp.syn_flood_threshold)
            except Exception as e:          # compile or attach failed
                ok, why = False, f"XDP failed to start: {e}"
        if ok:
            self.dataplane_reason = why
        elif dp.mode == DataplaneMode.XDP:
            raise configfile.ConfigError([("dataplane.mode", f"xdp cannot run here: {why}")])
        else:
            self.dataplane_reason = f"userspace L4 proxy: {why}"
        log.info("data plane: %s", self.dataplane_reason)

    def summary(self) -> str:
        """One line for `systemctl status`: what serves and what is up."""
        checks = self.health.status()
        servers = [(b.id, s.key) for b in self.backends.values() for s in b.servers]
        up = sum(1 for key in servers if key not in checks or checks[key].health != Health.DOWN)
        frontends = len(self.xdp_frontends) + len(self.user_frontends)
        return f"{frontends} frontends, {up}/{len(servers)} servers up, data plane {self.dataplane_name()}"

    def dataplane_name(self) -> str:
        return "xdp" if self.xdp is not None else self.l4.name

    async def _heartbeat(self, every_s: float) -> None:
        """systemd's watchdog: beats only while the event loop turns."""
        while True:
            sdnotify.notify(WATCHDOG=1)
            await asyncio.sleep(every_s)

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT (returns) or a failure (raises DaemonFailed)."""
        self.loop = asyncio.get_running_loop()
        hook, threading.excepthook = threading.excepthook, self._thread_died
        every_s = sdnotify.watchdog_interval_s()
        heartbeat = asyncio.ensure_future(self._heartbeat(every_s)) if every_s else None
        try:
            await self._run()
        finally:
            threading.excepthook = hook
            if heartbeat is not None:
                heartbeat.cancel()
        if self.failure:
            raise DaemonFailed(self.failure)

    async def _run(self) -> None:
        raise_open_files_limit()            # the proxies keep a reserve of it for checks and control
        config = configfile.load(self.config_path)
        configfile.keep_cookie_secret(config, self.config_path)
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
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs)
        if self.xdp is not None:
            recount = self.watch(asyncio.ensure_future(self._recount_xdp_connections()),
                                 "the XDP connection recount")
            floods = self.watch(asyncio.ensure_future(self._watch_syn_floods()), "the XDP SYN flood watch")
        log.info("lbfast running: %d frontends, data plane %s, control socket %s",
                 len(self.l4.frontends), self.dataplane_reason, self.socket_path)
        sdnotify.notify(READY=1, STATUS=self.summary(), MAINPID=os.getpid())
        try:
            await self.stopping.wait()
        finally:
            sdnotify.notify(STOPPING=1, STATUS="stopping")
            log.info("stopping: %d open sessions get up to %.0fs", len(self.l4.sessions), self.grace_s)
            await self.ha.stop()            # VIPs move or are withdrawn while the listeners still serve
            if self.api is not None:        # no changes while the data planes drain
                await self.api.stop()
            ctl.close()
            await self.l4.drain(self.grace_s)
            await self.l4.close()
            await self.udp.close()
            access_log.close_all()
            await self.l7.close()
            await self.health.close()
            if self.xdp is not None:         # detaches: the kernel stack sees the VIP traffic again
                recount.cancel()
                floods.cancel()
                await self.in_xdp_thread(self.xdp.close)
            Path(self.socket_path).unlink(missing_ok=True)
            runtime.remove_pidfile(self.pidfile)
            log.info("lbfast stopped: listeners closed, XDP detached, control socket removed")

    def reopen_logs(self) -> None:
        """SIGUSR1 (logrotate): the access logs are reopened here (L4) and in the L7 workers."""
        access_log.reopen_all()
        for w in self.l7.workers:
            if w.pid is not None:
                os.kill(w.pid, signal.SIGUSR1)

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
        if cmd == "view":                   # lbfast top
            return {"ok": True, "result": self.view.document()}
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
                              "refused": 0, "syn_rate": t.get("syn_rate", 0),
                              "syn_flood": t.get("syn_flood", 0)})
            rows = backends.setdefault(str(f.backend.id), {})
            for s in f.backend.servers:
                t = raw["servers"].get(f.backend.id, {}).get(s.key, {})
                st = health.get((f.backend.id, s.key))
                rows[s.key] = {"key": s.key, "id": s.id, "mode": str(s.mode),
                               "up": st is None or st.health != Health.DOWN,
                               "active": t.get("active_connections", 0), "total": t.get("new_connections", 0),
                               "bytes_in": t.get("bytes_in", 0), "bytes_out": t.get("bytes_out", 0), "failed": 0}
        return {"frontends": frontends, "backends": {b: list(r.values()) for b, r in backends.items()},
                "drops": raw["drops"], "passes": raw["passes"], "flow_state": raw["flow_state"]}

    def dataplane_stats(self) -> dict:
        """Counters of every data plane, merged: frontends, and servers per backend id."""
        l4, udp, l7 = self.l4.stats(), self.udp.stats(), self.l7.stats()
        out = {"frontends": l4["frontends"] + udp["frontends"] + l7["frontends"],
               "backends": {**l4["backends"], **udp["backends"], **l7["backends"]}, "l7": l7}
        if self.xdp is not None:
            x = self.xdp_stats()
            out["frontends"] += x["frontends"]
            out["backends"].update(x["backends"])
            out["xdp"] = {"drops": x["drops"], "passes": x["passes"], "flow_state": x["flow_state"]}
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
        name = self.dataplane_name()
        return {"pid": os.getpid(), "config": os.path.abspath(self.config_path),
                "uptime_s": round(time.time() - self.started_at, 1),
                "dataplane": {"name": name, "reason": self.dataplane_reason},
                "api": self.api.url if self.api is not None else None,
                "reloads": self.reloads, "reload_failures": self.reload_failures,
                "last_error": self.last_error, "ha": self.ha.status(), "frontends": frontends}


def _forget_signals_in_child() -> None:
    """A process forked from the daemon (not exec'd) must not reach the daemon's signal
    handling: its handlers would write into the wakeup socket the two share, and the
    daemon would act on the child's SIGTERM."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def run(config_path: str, socket_path: str | None = None, pidfile: str | None = None,
        grace_s: float = 10.0) -> None:
    """Raises DaemonFailed when the daemon stopped for a reason other than a signal."""
    import uvloop
    os.register_at_fork(after_in_child=_forget_signals_in_child)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(Daemon(config_path, socket_path, pidfile, grace_s).run())
