"""`lbfast top` in a real terminal (tmux): the daemon's frontends, backends and servers with
their states and the stopped server's reason, counters moving from one refresh to the next,
and `q` quits, leaving the terminal as it was."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lbrun import wait_for
from tests.statusbed import StatusBed

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    b = StatusBed(tmp_path_factory.mktemp("top"))
    yield b
    b.close()


class Tmux:
    """One tmux server of our own (its own socket), one pane running `argv`."""

    def __init__(self, tmp: Path, argv: list[str], width: int = 220, height: int = 60):
        self.socket = str(tmp / "tmux.sock")
        command = shlex.join(["env", f"PYTHONPATH={ROOT}", *argv])
        self.run("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), command)

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], check=True, capture_output=True,
                              text=True, timeout=10).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "top")

    def alive(self) -> bool:
        return subprocess.run(["tmux", "-S", self.socket, "has-session", "-t", "top"],
                              capture_output=True, timeout=10).returncode == 0

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=10)


def row(screen: str, starts: str) -> list[str]:
    line = next(line for line in screen.splitlines() if line.strip().startswith(starts))
    return re.split(r"\s{2,}", line.strip())


def screen_when(term: Tmux, condition, what: str, timeout: float = 10.0) -> str:
    def ready():
        screen = term.screen()
        try:
            return screen if condition(screen) else None
        except (StopIteration, IndexError, ValueError):     # a frame being drawn
            return None
    return wait_for(ready, timeout=timeout, what=what)


def test_top_in_tmux(bed, tmp_path):
    term = Tmux(tmp_path, [sys.executable, "-m", "control.cli", "top", "--socket", bed.daemon.socket,
                           "--interval", "0.5"])
    try:
        first = screen_when(term, lambda s: "BACKEND web" in s and "q quits" in s, "the first frame")
        assert "lbfast top" in first and "LB shop  VIP 127.0.0.1" in first
        for name in ("tcp-in", "http-in", "BACKEND db", "BACKEND web", "q quits"):
            assert name in first, name
        down = row(first, bed.down_key)
        assert down[1] == "DOWN" and "Connection refused" in down[2], down
        assert row(first, f"127.0.0.1:{bed.backends.http['c']}")[1] == "DRAIN"
        assert row(first, f"127.0.0.1:{bed.backends.echo['c']}")[1] == "BACKUP"
        # a refresh redraws with the traffic counted since
        requests_before = int(row(first, "http-in")[9])
        later = screen_when(term, lambda s: int(row(s, "http-in")[9]) > requests_before,
                            "the request count to move on screen")
        assert int(row(later, "tcp-in")[8]) > int(row(first, "tcp-in")[8])
        term.run("send-keys", "-t", "top", "q")
        wait_for(lambda: not term.alive(), timeout=5, what="q to quit lbfast top")
    finally:
        term.close()


def test_top_once_without_a_terminal(bed):
    out = subprocess.run([sys.executable, "-m", "control.cli", "top", "--once", "--socket", bed.daemon.socket],
                         capture_output=True, text=True, timeout=20, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout                 # no colour codes in a pipe
    assert row(out.stdout, bed.down_key)[1] == "DOWN"
