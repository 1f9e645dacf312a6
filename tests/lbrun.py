"""Run real lbfast daemons and real backend servers for tests: `lbfast run` as a
subprocess with its own config, control socket and pidfile."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson

from control import runtime
from control.testbed import stop_processes

LBFAST = [sys.executable, "-m", "control.cli"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def connectable(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Backends:
    """Real backend processes (control.testbed_servers) on loopback ports."""

    def __init__(self, names: list[str], host: str = "127.0.0.1", wrap: list[str] | None = None):
        self.host = host
        self.procs = []
        self.http = {}
        self.echo = {}
        for name in names:
            http, echo = free_port(host), free_port(host)
            argv = [*(wrap or []), sys.executable, "-m", "control.testbed_servers", "--name", name,
                    "--http", str(http), "--tcp-echo", str(echo), "--bind", host,
                    "--parent-pid", str(os.getpid())]
            self.procs.append(subprocess.Popen(argv, cwd=Path(__file__).parent.parent))
            self.http[name], self.echo[name] = http, echo
        if not wrap:
            for name in names:
                wait_for(lambda: connectable(host, self.http[name]) and connectable(host, self.echo[name]),
                         what=f"backend {name}")

    def stop(self, name: str) -> None:
        i = list(self.http).index(name)
        self.procs[i].terminate()
        self.procs[i].wait(5)

    def close(self) -> None:
        stop_processes(self.procs, grace=5)


class Daemon:
    """`lbfast run` on a config dict; the file is rewritten by `write()` and picked up
    with `reload()` (control socket) or `sighup()`. `command` runs another lbfast (an installed one)."""

    def __init__(self, tmp: Path, config: dict | None, wrap: list[str] | None = None, env: dict | None = None,
                 command: list[str] = LBFAST, cwd: Path = Path(__file__).parent.parent,
                 path: Path | None = None, preexec_fn=None):
        """`config` None: run on the file at `path` as it is (two daemons sharing one file)."""
        self.tmp = Path(tmp)
        self.path = Path(path) if path is not None else self.tmp / "lbfast.json"
        self.socket = str(self.tmp / "lbfast.sock")
        self.pidfile = str(self.tmp / "lbfast.pid")
        self.log = open(self.tmp / "lbfast.log", "wb")
        if config is not None:
            self.write(config)
        self.proc = subprocess.Popen(
            [*(wrap or []), *command, "run", "--config", str(self.path), "--socket", self.socket,
             "--pidfile", self.pidfile, "--log-level", "info"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=cwd,
            env={**os.environ, **(env or {})}, preexec_fn=preexec_fn)
        wait_for(self._ready, timeout=20, what="lbfast daemon")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"lbfast exited with {self.proc.returncode}:\n{self.logtext()}")
        try:
            runtime.request(self.socket, "status", timeout=1)
            return True
        except (OSError, runtime.ControlError):
            return False

    def write(self, config: dict) -> None:
        self.path.write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))

    def reload(self):
        return runtime.request(self.socket, "reload")

    def sighup(self) -> None:
        os.kill(self.proc.pid, signal.SIGHUP)

    def sighup_and_wait(self, what: str = "reload") -> None:
        """SIGHUP, then wait until the daemon counts the reload, applied or refused."""
        def outcome() -> tuple[int, int]:
            st = self.status()
            return st["reloads"], st["reload_failures"]
        before = outcome()
        self.sighup()
        wait_for(lambda: outcome() != before, what=what)

    def status(self) -> dict:
        return runtime.request(self.socket, "status")

    def stats(self) -> dict:
        return runtime.request(self.socket, "stats")

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def logtext(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.tmp / "lbfast.log").read_text(errors="replace")

    def close(self) -> None:
        stop_processes([self.proc], grace=10)
        self.log.close()


def tcp_config(vip: str, port: int, servers: list[dict], **backend) -> dict:
    return {"lbs": [{"name": "t", "vip": vip,
                     "backends": [{"name": "pool", "forward_port": 1, "servers": servers, **backend}],
                     "frontends": [{"name": "f", "port": port, "backend": "pool"}]}]}


def ask(host: str, port: int, source: str | None = None, timeout: float = 5.0) -> str:
    """One HTTP request on its own connection; returns the backend's name."""
    with socket.create_connection((host, port), timeout=timeout,
                                  source_address=(source, 0) if source else None) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.rpartition(b"\r\n\r\n")[2].decode()
