"""Daemon logging under systemd: with stderr connected to the journal (JOURNAL_STREAM) records
go to journald's native socket with FRONTEND/BACKEND/SERVER fields; without that socket they
go to stderr with <N> priority prefixes; elsewhere to stderr as always."""
import os
import socket
import struct
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_SOME = """
import logging, sys
from control import journal
journal.configure("info", sys.argv[1])
logging.getLogger("lbfast.health").warning("backend 1 server 10.0.0.2:80 is DOWN: timeout",
                                           extra={"backend": 1, "server": "10.0.0.2:80"})
logging.getLogger("lbfast.daemon").info("reloaded", extra={"frontend": "http"})
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("lbfast.daemon").exception("apply failed")
"""


def parse_native(datagram: bytes) -> dict[str, str]:
    """journald's native format: KEY=value lines, or KEY, 64-bit length, value for binary-safe ones."""
    fields, i = {}, 0
    while i < len(datagram):
        end = datagram.index(b"\n", i)
        line = datagram[i:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = end + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", datagram[end + 1:end + 9])
            value = datagram[end + 9:end + 9 + size]
            assert datagram[end + 9 + size:end + 10 + size] == b"\n"
            i = end + 10 + size
        fields[key.decode()] = value.decode()
    return fields


def run_logging(journal_socket: str, stream_matches: bool) -> str:
    """Run LOG_SOME with stderr on a pipe; JOURNAL_STREAM names that pipe or another file."""
    r, w = os.pipe()
    st = os.fstat(w if stream_matches else 0)
    env = {**os.environ, "PYTHONPATH": ROOT, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    proc = subprocess.Popen([sys.executable, "-c", LOG_SOME, journal_socket], stderr=w, env=env)
    os.close(w)
    with os.fdopen(r) as stderr:
        text = stderr.read()
    assert proc.wait(10) == 0, text
    return text


@pytest.fixture
def journald(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.socket"))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_records_go_to_the_journal_with_structured_fields(journald):
    stderr = run_logging(journald.getsockname(), stream_matches=True)
    assert stderr == ""
    down, reloaded, failed = (parse_native(journald.recv(65536)) for _ in range(3))
    assert down["MESSAGE"] == "lbfast.health: backend 1 server 10.0.0.2:80 is DOWN: timeout"
    assert (down["PRIORITY"], down["SYSLOG_IDENTIFIER"], down["LOGGER"]) == ("4", "lbfast", "lbfast.health")
    assert (down["BACKEND"], down["SERVER"]) == ("1", "10.0.0.2:80") and "FRONTEND" not in down
    assert (reloaded["PRIORITY"], reloaded["FRONTEND"]) == ("6", "http")
    assert failed["PRIORITY"] == "3"
    assert failed["MESSAGE"].startswith("lbfast.daemon: apply failed\nTraceback")
    assert failed["MESSAGE"].rstrip().endswith("ZeroDivisionError: division by zero")


def test_priority_prefixes_when_the_journal_socket_is_missing(tmp_path):
    stderr = run_logging(str(tmp_path / "no-such-socket"), stream_matches=True)
    lines = stderr.splitlines()
    assert lines[0] == "<4>lbfast.health: backend 1 server 10.0.0.2:80 is DOWN: timeout"
    assert lines[1] == "<6>lbfast.daemon: reloaded"
    assert lines[2] == "<3>lbfast.daemon: apply failed"


def test_plain_stderr_when_not_connected_to_the_journal(journald):
    stderr = run_logging(journald.getsockname(), stream_matches=False)
    first = stderr.splitlines()[0]
    assert first.endswith(" WARNING lbfast.health: backend 1 server 10.0.0.2:80 is DOWN: timeout")
    journald.settimeout(0.2)
    with pytest.raises(TimeoutError):
        journald.recv(65536)
