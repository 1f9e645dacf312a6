"""Where a running daemon can be found: pidfile and control socket paths, and the
client side of the control socket used by `lbfast status|stats|reload`."""
import os
import socket
from pathlib import Path

import orjson

RUN_DIR_ROOT = "/run/lbfast"


def run_dir() -> str:
    if os.geteuid() == 0:
        return RUN_DIR_ROOT
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/lbfast-{os.getuid()}")


def default_socket() -> str:
    return os.environ.get("LBFAST_SOCKET") or os.path.join(run_dir(), "lbfast.sock")


def default_pidfile() -> str:
    return os.environ.get("LBFAST_PIDFILE") or os.path.join(run_dir(), "lbfast.pid")


def prepare_socket(path: str) -> str:
    """Refuse to start beside a live daemon; clear a socket left by a dead one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if os.path.exists(path):
        try:
            request(path, "status", timeout=1.0)
        except (OSError, ControlError):
            os.unlink(path)
        else:
            raise OSError(f"another lbfast daemon answers on {path}")
    return path


def write_pidfile(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = f"{path}.{os.getpid()}"
    Path(tmp).write_text(f"{os.getpid()}\n")
    os.rename(tmp, path)


def remove_pidfile(path: str) -> None:
    try:
        if Path(path).read_text().strip() == str(os.getpid()):
            os.unlink(path)
    except OSError:
        pass


class ControlError(Exception):
    pass


def request(path: str, cmd: str, timeout: float = 30.0, **args) -> object:
    """Send one command to the daemon; return its result or raise ControlError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(orjson.dumps({"cmd": cmd, **args}) + b"\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    reply = orjson.loads(b"".join(chunks))
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "unknown error"))
    return reply["result"]
