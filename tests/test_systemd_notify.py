"""The daemon speaks systemd's notify protocol to a NOTIFY_SOCKET of the test's own: READY=1
once the first config is applied (with a STATUS line), WATCHDOG=1 every half WATCHDOG_USEC,
STATUS when a server goes up or down or a reload is rejected, STOPPING=1 on SIGTERM."""
import signal
import socket
import time

import pytest

from tests.lbrun import Backends, Daemon, free_port

WATCHDOG_USEC = 400_000
VIP = "127.0.0.14"


class NotifySocket:
    """What systemd listens on: a unix datagram socket, one message per datagram."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[dict] = []

    def receive(self, timeout: float) -> dict | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096).decode()
        except TimeoutError:
            return None
        message = dict(line.split("=", 1) for line in data.splitlines())
        self.messages.append(message)
        return message

    def wait(self, predicate, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and predicate(message):
                return message
        raise TimeoutError(f"no such notification; got {self.messages[-5:]}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path):
    s = NotifySocket(tmp_path / "notify")
    yield s
    s.close()


def config(backends, port, check_interval_ms=200):
    check = {"type": "http", "http_uri": "/health", "interval_ms": check_interval_ms, "timeout_ms": 150,
             "attempts": 1, "rise": 1}
    return {"lbs": [{"name": "t", "vip": VIP,
                     "backends": [{"name": "pool", "forward_port": 1, "health_check": check,
                                   "servers": [{"address": "127.0.0.1", "port": p} for p in backends.http.values()]}],
                     "frontends": [{"name": "f", "port": port, "backend": "pool"}]}]}


def test_ready_status_watchdog_stopping(notify_socket, tmp_path):
    backends = Backends(["a", "b"])
    d = Daemon(tmp_path, config(backends, free_port(VIP)),
               env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    try:
        ready = notify_socket.wait(lambda m: "READY" in m)
        assert ready.pop("MAINPID") == str(d.proc.pid) and ready.pop("READY") == "1"
        # servers start DOWN until their first check: STATUS follows them up
        assert ready["STATUS"] in {f"1 frontends, {n}/2 servers up, data plane userspace" for n in range(3)}
        notify_socket.wait(lambda m: m.get("STATUS") == "1 frontends, 2/2 servers up, data plane userspace")
        # heartbeats: about one per 0.2 s
        start = len(notify_socket.messages)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            notify_socket.receive(end - time.monotonic())
        beats = sum(1 for m in notify_socket.messages[start:] if m == {"WATCHDOG": "1"})
        assert 3 <= beats <= 7, beats
        # a stopped event loop stops the heartbeat: systemd would restart the daemon
        d.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(0.1)
            while notify_socket.receive(0.05):
                pass
            assert notify_socket.receive(0.6) is None
        finally:
            d.proc.send_signal(signal.SIGCONT)
        backends.stop("b")
        status = notify_socket.wait(lambda m: "STATUS" in m)
        assert status["STATUS"] == "1 frontends, 1/2 servers up, data plane userspace"
        d.path.write_text("{not json")
        d.sighup()
        assert notify_socket.wait(lambda m: "STATUS" in m)["STATUS"].endswith("; last reload rejected")
        d.proc.terminate()
        assert notify_socket.wait(lambda m: "STOPPING" in m) == {"STOPPING": "1", "STATUS": "stopping"}
        assert d.proc.wait(15) == 0
    finally:
        d.close()
        backends.close()


def test_no_heartbeat_for_another_pid(notify_socket, tmp_path):
    """WATCHDOG_PID names the process the watchdog is for; anyone else keeps quiet."""
    backends = Backends(["a"])
    d = Daemon(tmp_path, config(backends, free_port(VIP), check_interval_ms=5000),
               env={"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": str(WATCHDOG_USEC), "WATCHDOG_PID": "1"})
    try:
        notify_socket.wait(lambda m: "READY" in m)
        end = time.monotonic() + 0.8
        while time.monotonic() < end:
            notify_socket.receive(end - time.monotonic())
        assert not [m for m in notify_socket.messages if "WATCHDOG" in m]
    finally:
        d.close()
        backends.close()
