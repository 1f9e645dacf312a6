"""Logging for the daemon: to journald with structured fields when systemd runs it (its
native protocol, one datagram per record), else to stderr as before. Records may carry
`extra={"frontend": ..., "backend": ..., "server": ...}`; the journal keeps them as
FRONTEND=, BACKEND=, SERVER= fields (`journalctl -u lbfast SERVER=10.0.0.2:80`)."""
import logging
import os
import socket
import struct
import sys

JOURNAL_SOCKET = "/run/systemd/journal/socket"
STRUCTURED = ("frontend", "backend", "server")
STDERR_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def syslog_priority(levelno: int) -> int:
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def encode_field(key: str, value: str) -> bytes:
    """KEY=value\\n, or the length-prefixed form for values holding a newline (tracebacks)."""
    data = value.encode(errors="replace")
    if b"\n" in data:
        return key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key.encode() + b"=" + data + b"\n"


class JournalHandler(logging.Handler):
    """One datagram per record to journald's native socket."""

    def __init__(self, path: str = JOURNAL_SOCKET, identifier: str = "lbfast"):
        super().__init__()
        self.path = path
        self.identifier = identifier
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        out = {"MESSAGE": self.format(record), "PRIORITY": str(syslog_priority(record.levelno)),
               "SYSLOG_IDENTIFIER": self.identifier, "LOGGER": record.name,
               "CODE_FILE": record.pathname, "CODE_LINE": str(record.lineno), "CODE_FUNC": record.funcName}
        for key in STRUCTURED:
            value = getattr(record, key, None)
            if value is not None:
                out[key.upper()] = str(value)
        return out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sock.sendto(b"".join(encode_field(k, v) for k, v in self.fields(record).items()), self.path)
        except OSError:                  # journald gone or the record too big: keep it on stderr
            sys.stderr.write(f"<{syslog_priority(record.levelno)}>{self.format(record)}\n")
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sock.close()
        super().close()


class PriorityPrefixFormatter(logging.Formatter):
    """`<3>message`: systemd reads the syslog priority from stdout/stderr lines (sd-daemon(3))."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>{super().format(record)}"


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM=dev:inode of the stream it connected; a child whose stderr
    was redirected elsewhere inherits the variable but not the stream."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def configure(level: str, journal_socket: str = JOURNAL_SOCKET) -> logging.Handler:
    """The daemon's root handler: journald, stderr with <N> prefixes, or plain stderr."""
    if stderr_is_journal() and os.path.exists(journal_socket):
        handler: logging.Handler = JournalHandler(journal_socket)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    elif stderr_is_journal():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PriorityPrefixFormatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    return handler
