"""systemd's service notification protocol (sd_notify(3)) without libsystemd: READY, STATUS,
STOPPING and WATCHDOG datagrams to $NOTIFY_SOCKET. Outside systemd every call is a no-op."""
import os
import socket


def notify(**fields: object) -> bool:
    """Send `KEY=value` lines (notify(READY=1, STATUS="...")); False when nobody listens."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):            # an abstract socket
        path = "\0" + path[1:]
    message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message, path)
    except OSError:
        return False
    return True


def watchdog_interval_s() -> float | None:
    """The heartbeat period systemd expects (half its WatchdogSec), or None when there is no
    watchdog for this process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
