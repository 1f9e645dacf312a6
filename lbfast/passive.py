"""Passive health as the managed products define it: which outcomes of live traffic are
the server's fault, and each proxy process's memory of servers it reported failing, so a
server that answers well again is reported once (the monitor counts consecutive failures)."""
import errno
from collections.abc import Callable

# 501 Not Implemented and 505 HTTP Version Not Supported answer the request, not the
# server's health (Linode's check_passive rule).
NOT_A_FAILURE = frozenset((501, 505))
# A connect that failed for want of a local resource says nothing about the server.
LOCAL_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))

Hook = Callable[[int, str, str], None]          # (backend_id, server_key, reason)


def failed_status(status: int) -> bool:
    return status >= 500 and status not in NOT_A_FAILURE


def failed_connect(exc: BaseException) -> bool:
    return not (isinstance(exc, OSError) and exc.errno in LOCAL_ERRNOS)


class PassiveReports:
    """Failures go out each time; a success only for a server whose failure was reported."""
    __slots__ = ("on_failure", "on_ok", "failing")

    def __init__(self) -> None:
        self.on_failure: Hook | None = None
        self.on_ok: Hook | None = None
        self.failing: set[tuple[int, str]] = set()

    def failure(self, backend_id: int, server_key: str, reason: str) -> None:
        self.failing.add((backend_id, server_key))
        if self.on_failure is not None:
            self.on_failure(backend_id, server_key, reason)

    def ok(self, backend_id: int, server_key: str, reason: str) -> None:
        if self.failing and (backend_id, server_key) in self.failing:
            self.failing.discard((backend_id, server_key))
            if self.on_ok is not None:
                self.on_ok(backend_id, server_key, reason)
