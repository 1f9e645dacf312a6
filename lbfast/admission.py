"""What lets a client connection in, shared by the userspace L4 proxy and the L7 proxy:
each frontend's cap on open connections (its backend's max_connections; beyond it a
connection waits timeout_queue for a slot, then is refused), and each process's reserve
of file descriptors (listeners stop accepting before traffic takes the descriptors that
health checks, server connections and the control plane of the same process need)."""
import logging
import os
import resource
from collections.abc import Callable

log = logging.getLogger("lbfast.admission")

RESERVE_MIN, RESERVE_MAX = 32, 1024     # descriptors kept free: a tenth of the limit within these
POLL_S = 0.2                            # while paused, how often free descriptors are counted


def raise_open_files_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (a process may do so unprivileged); the new
    (soft, hard). Child processes (L7 workers) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, e)
            return soft, hard
        log.info("open-files limit raised from %d to %d", soft, hard)
        return hard, hard
    log.info("open-files limit: %d (the hard limit)", soft)
    return soft, hard


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd")) - 1     # less the one listdir itself holds


class DescriptorReserve:
    """Pauses a process's listeners while fewer than `reserve` descriptors are free.

    The check on each accepted connection is one comparison: the kernel gives the lowest
    free descriptor, so an accepted socket numbered N means N others are open. Resuming
    needs the true count (/proc/self/fd), taken every POLL_S while paused, and waits for
    twice the reserve to be free so listeners do not flap."""

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self.pause = pause
        self.resume = resume
        self.paused = False
        self.stopped = False
        self.loop = None
        self.limit = self.reserve = 0
        self.refresh()

    def refresh(self) -> None:
        """Read the limit again (the daemon raises it at start)."""
        self.limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.reserve = min(max(self.limit // 10, RESERVE_MIN), RESERVE_MAX)

    def accepted(self, loop, transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is None or sock.fileno() < self.limit - self.reserve or self.stopped:
            return
        self.pause()                    # again if already paused: an apply may have added a listener
        if not self.paused:
            self.paused = True
            self.loop = loop
            log.warning("fewer than %d of %d file descriptors free: not accepting connections",
                        self.reserve, self.limit)
            loop.call_later(POLL_S, self._poll)

    def _poll(self) -> None:
        if self.stopped:
            return
        free = self.limit - open_descriptors()
        if free < 2 * self.reserve:
            self.loop.call_later(POLL_S, self._poll)
            return
        self.paused = False
        log.warning("%d file descriptors free again: accepting connections", free)
        self.resume()

    def stop(self) -> None:
        """Draining or closed: never resume listeners."""
        self.stopped = True


class ConnectionQueue:
    """Client connections of one frontend beyond its max_connections, oldest first. A
    session here has not started: it implements `admit()` (a slot is free) and
    `queue_expired()` (timeout_queue passed: refuse it)."""
    __slots__ = ("waiting",)

    def __init__(self) -> None:
        self.waiting: dict = {}         # session -> its timeout handle, in arrival order

    def full(self, active: int, cap: int) -> bool:
        return cap > 0 and (active >= cap or bool(self.waiting))

    def wait(self, loop, session, timeout_s: float) -> None:
        self.waiting[session] = loop.call_later(timeout_s, self._expired, session)

    def _expired(self, session) -> None:
        if self.waiting.pop(session, None) is not None:
            session.queue_expired()

    def leave(self, session) -> None:
        timer = self.waiting.pop(session, None)
        if timer is not None:
            timer.cancel()

    def released(self, active: int, cap: int) -> None:
        """A connection of the frontend closed: the oldest waiting one takes its slot."""
        if self.waiting and (cap <= 0 or active < cap):
            session = next(iter(self.waiting))
            self.waiting.pop(session).cancel()
            session.admit()


def close_servers(frontends) -> None:
    """Pause accepting: each frontend's asyncio server closes; its listening socket (the
    server ran on a duplicate) and the backlog stay, so resuming loses no connection."""
    for state in frontends.values():
        if state.server is not None:
            state.server.close()
            state.server = None
