"""The userspace UDP proxy on loopback: echo round trips per second through a daemon in
`dataplane.mode: userspace` against the same two echo servers directly, and the daemon's
CPU per round trip. Clients keep a window of datagrams in flight on each socket.

    python -m bench.bench_udp [--seconds S] [--clients N] [--window W]
"""
import argparse
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench.e2e.cpu import HZ, proc_ticks
from control import runtime
from control.testbed import stop_processes

ROOT = Path(__file__).resolve().parent.parent
VIP = "127.0.0.14"
SERVERS = ("127.0.0.23", "127.0.0.24")
PAYLOAD = b"x" * 64


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pingpong(targets: list[tuple], clients: int, window: int, seconds: float) -> float:
    """Round trips per second: `clients` sockets (spread over `targets`), each keeping
    `window` datagrams in flight; a lost datagram is replaced after 0.2 s of silence."""
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(clients):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.connect(targets[i % len(targets)])
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
        for _ in range(window):
            s.send(PAYLOAD)
    done = 0
    start = time.perf_counter()
    end = start + seconds
    while (now := time.perf_counter()) < end:
        events = sel.select(0.2)
        if not events:                  # every datagram in flight lost: start again
            for s in socks:
                for _ in range(window):
                    s.send(PAYLOAD)
            continue
        for key, _ in events:
            s = key.fileobj
            while True:
                try:
                    s.recv(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                done += 1
                s.send(PAYLOAD)
    took = time.perf_counter() - start
    for s in socks:
        s.close()
    return done / took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_udp", description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=32, help="client sockets (one session each)")
    ap.add_argument("--window", type=int, default=4, help="datagrams in flight per socket")
    args = ap.parse_args(argv)
    udp = free_udp_port(SERVERS[0])
    with socket.socket() as s:      # the servers' HTTP port: a TCP listener marks each one up
        s.bind((SERVERS[0], 0))
        http = s.getsockname()[1]
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for i, addr in enumerate(SERVERS):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "control.testbed_servers", "--name", f"s{i}", "--bind", addr,
                     "--udp-echo", str(udp), "--http", str(http), "--parent-pid", str(os.getpid())],
                    cwd=ROOT))
            port = free_udp_port(VIP)
            conf, sock = Path(tmp) / "lbfast.json", os.path.join(tmp, "lbfast.sock")
            conf.write_bytes(orjson.dumps({
                "dataplane": {"mode": "userspace"},
                "lbs": [{"name": "bench", "vip": VIP,
                         "backends": [{"name": "pool", "protocol": "udp", "forward_port": udp,
                                       "servers": [{"address": a} for a in SERVERS]}],
                         "frontends": [{"name": "udp", "port": port, "backend": "pool"}]}]}))
            log = open(Path(tmp) / "lbfast.log", "wb")
            lb = subprocess.Popen([sys.executable, "-m", "control.cli", "run", "--config", str(conf),
                                   "--socket", sock, "--pidfile", os.path.join(tmp, "pid"), "--log-level",
                                   "warning"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            procs.append(lb)

            def ready() -> bool:
                try:
                    runtime.request(sock, "status", timeout=1)
                    return True
                except (OSError, runtime.ControlError):
                    return False
            wait(ready, "lbfast daemon")
            direct = pingpong([(a, udp) for a in SERVERS], args.clients, args.window, args.seconds)
            ticks = proc_ticks(lb.pid)
            proxied = pingpong([(VIP, port)], args.clients, args.window, args.seconds)
            lb_cpu_s = (proc_ticks(lb.pid) - ticks) / HZ
        finally:
            stop_processes(procs, grace=5)
    print(f"udp echo, {args.clients} client sockets x {args.window} in flight, {args.seconds:g} s each:")
    print(f"  direct to 2 servers     {direct:10.0f} round trips/s")
    print(f"  lbfast userspace UDP    {proxied:10.0f} round trips/s ({proxied / direct:.2f}x direct)")
    print(f"  lbfast CPU              {lb_cpu_s / (proxied * args.seconds) * 1e6:10.1f} us per round trip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
