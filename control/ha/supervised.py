"""A child process lbfast keeps running (keepalived, bird): it dies with lbfast, its output
goes to lbfast's log, and it is restarted with backoff whenever it exits unasked."""
import asyncio
import collections
import ctypes
import logging
import signal
import time
from collections.abc import Awaitable, Callable

PR_SET_PDEATHSIG = 1
RESTART_DELAY_MIN_S = 0.2
RESTART_DELAY_MAX_S = 5.0
STABLE_AFTER_S = 30.0       # a run this long resets the backoff

_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. If lbfast is killed (even SIGKILL), the
    # engine gets SIGTERM and gives the VIPs up cleanly instead of holding them for a
    # daemon that no longer serves them.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Supervised:
    """`argv()` is called at every (re)start; `before_start()` (optional) runs first, e.g. to
    wait for what a killed instance left behind; `on_exit(returncode)` is told about
    every exit that was not asked for."""

    def __init__(self, name: str, argv: Callable[[], list[str]],
                 before_start: Callable[[], Awaitable[None]] | None = None,
                 on_exit: Callable[[int], None] | None = None):
        self.name = name
        self.argv = argv
        self.before_start = before_start
        self.on_exit = on_exit
        self.log = logging.getLogger(f"lbfast.ha.{name}")
        self.proc: asyncio.subprocess.Process | None = None
        self.wanted = False
        self.restarts = 0
        self.started_at = 0.0
        self.last_exit = ""
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self._task: asyncio.Task | None = None
        self._delay = RESTART_DELAY_MIN_S

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        if self.wanted:
            return
        self.wanted = True
        try:
            await self._spawn()
        except BaseException:           # e.g. the binary is missing: the next apply tries again
            self.wanted = False
            raise
        self._task = asyncio.ensure_future(self._supervise())

    async def _spawn(self) -> None:
        if self.before_start is not None:
            await self.before_start()
        argv = self.argv()
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        self.started_at = time.monotonic()
        self.log.info("started %s (pid %d)", argv[0], self.proc.pid)

    async def _log_output(self, proc: asyncio.subprocess.Process) -> None:
        # Chunks, not readline(): an overlong line must not stop the reading (the child
        # would block on a full pipe).
        pending = b""
        while chunk := await proc.stdout.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").rstrip()
                self.tail.append(line)
                self.log.info("%s", line)

    async def _supervise(self) -> None:
        while self.wanted:
            proc = self.proc
            await self._log_output(proc)
            code = await proc.wait()
            if not self.wanted:
                return
            ran = time.monotonic() - self.started_at
            self.last_exit = f"exited with {code} after {ran:.1f}s"
            self.log.error("%s %s; restarting in %.1fs", self.name, self.last_exit,
                           0 if ran > STABLE_AFTER_S else self._delay)
            if self.on_exit is not None:
                self.on_exit(code)
            if ran > STABLE_AFTER_S:
                self._delay = RESTART_DELAY_MIN_S
            else:
                await asyncio.sleep(self._delay)
                self._delay = min(self._delay * 2, RESTART_DELAY_MAX_S)
            if not self.wanted:
                return
            self.restarts += 1
            try:
                await self._spawn()
            except OSError as e:
                # keep the dead process: the next turn finds it exited and backs off again
                self.log.error("cannot start %s: %s", self.name, e)
                self.proc, self.started_at = proc, time.monotonic()

    def send_signal(self, sig: int) -> bool:
        if not self.running:
            return False
        self.proc.send_signal(sig)
        return True

    async def stop(self, timeout: float = 5.0) -> None:
        self.wanted = False
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                self.log.warning("%s did not stop within %.0fs: killing it", self.name, timeout)
                proc.kill()
                await proc.wait()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 1.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None

    def status(self) -> dict:
        return {"name": self.name, "pid": self.pid, "running": self.running,
                "restarts": self.restarts, "last_exit": self.last_exit}
