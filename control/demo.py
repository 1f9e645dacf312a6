"""`make demo`: build a small netns testbed, run lbfast on it with a real config, send
bounded real traffic from the client namespace and show how it spread over the backends."""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from control import runtime
from control.cli import print_table
from control.testbed import Testbed, ethtool_offload_off, gro_on

WEIGHTS = (3, 2, 1)


def demo_config(tb: Testbed, dataplane: str, pin_dir: str) -> dict:
    interfaces = [tb.lb_client_if, *tb.lb_backend_ifs] if dataplane != "userspace" else []
    return {
        "dataplane": {"mode": dataplane, "interfaces": interfaces, "pin_dir": pin_dir},
        "lbs": [{
            "name": "demo", "vip": tb.vip,
            "backends": [{
                "name": "web", "forward_port": 8080, "algorithm": "roundrobin",
                "health_check": {"type": "http", "http_uri": "/health", "interval_ms": 1000,
                                 "timeout_ms": 500},
                "servers": [{"address": b.ip, "weight": w, "label": f"b{i}"}
                            for i, (b, w) in enumerate(zip(tb.backends, WEIGHTS))],
            }],
            "frontends": [{"name": "http", "port": 80, "backend": "web"}],
        }],
    }


def fetch(tb: Testbed) -> str:
    with tb.client.connect(tb.vip, 80, timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.rpartition(b"\r\n\r\n")[2].decode()


def post(tb: Testbed, i: int, path: str) -> None:
    with tb.lb.connect(tb.backends[i].ip, 8080) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: demo\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        while s.recv(4096):
            pass


def wait_health(sock: str, want: str, timeout: float = 10) -> None:
    """Until b0 (the first server) shows `want` in the daemon's status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        servers = runtime.request(sock, "status")["frontends"][0]["servers"]
        if servers[0].get("health") == want:
            return
        time.sleep(0.1)
    raise SystemExit(f"b0 did not become {want}")


def spread(tb: Testbed, n: int, what: str) -> None:
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:     # bounded: exactly n requests
        got = Counter(pool.map(lambda _: fetch(tb), range(n)))
    elapsed = time.monotonic() - t0
    total_weight = sum(WEIGHTS)
    rows = [{"backend": f"b{i}", "address": f"{b.ip}:8080", "weight": w,
             "expected": f"{100 * w / total_weight:.1f}%", "requests": got.get(f"b{i}", 0),
             "share": f"{100 * got.get(f'b{i}', 0) / n:.1f}%"}
            for i, (b, w) in enumerate(zip(tb.backends, WEIGHTS))]
    print(f"\n{n} requests ({what}), one connection each, in {elapsed:.2f}s:")
    print_table(rows, ["backend", "address", "weight", "expected", "requests", "share"])
    if sum(got.values()) != n:
        raise SystemExit(f"{n - sum(got.values())} requests failed")


def wait_ready(sock: str, proc: subprocess.Popen, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lbfast exited with {proc.returncode}")
        try:
            return runtime.request(sock, "status", timeout=1)
        except (OSError, runtime.ControlError):
            time.sleep(0.1)
    raise SystemExit("lbfast did not come up")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--dataplane", default="auto", choices=["auto", "userspace", "xdp"])
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the demo builds network namespaces: run it as root")
    with tempfile.TemporaryDirectory(prefix="lbfast-demo-") as tmp, Testbed(backends=3) as tb:
        print(f"testbed: client {tb.client.ip} -> LB {tb.lb_client_ip} (VIP {tb.vip}:80) -> "
              + ", ".join(f"b{i} {b.ip}:8080" for i, b in enumerate(tb.backends)))
        tb.start_backend_servers(("http",))
        tb.add_vip_local()                  # for the userspace fallback; XDP answers before the stack
        for host in (tb.client, *tb.backends):  # what native XDP on veth needs from the peers
            gro_on(host, host.ifname)
            ethtool_offload_off(host, host.ifname)
        cfg_path, sock = Path(tmp, "lbfast.json"), str(Path(tmp, "lbfast.sock"))
        pin_dir = f"/sys/fs/bpf/lbfast-demo-{os.getpid()}"
        cfg_path.write_bytes(orjson.dumps(demo_config(tb, args.dataplane, pin_dir), option=orjson.OPT_INDENT_2))
        log = open(Path(tmp, "lbfast.log"), "wb")
        proc = tb.lb.popen([sys.executable, "-m", "control.cli", "run", "--config", str(cfg_path),
                            "--socket", sock, "--pidfile", str(Path(tmp, "lbfast.pid"))],
                           stdout=log, stderr=subprocess.STDOUT)
        status = wait_ready(sock, proc)
        print(f"lbfast {status['dataplane']['name']} data plane ({status['dataplane']['reason']})")
        spread(tb, args.requests, "all servers up")
        # A server fails its health check: lbfast takes it out of rotation within
        # interval x attempts + timeout, and back after `rise` good checks.
        post(tb, 0, "/health/down")
        wait_health(sock, "DOWN")
        print("\nb0 fails its health check (POST /health/down) and is marked DOWN:")
        spread(tb, args.requests // 2, "b0 down")
        post(tb, 0, "/health/up")
        wait_health(sock, "UP")
        print("\nb0 passes its checks again and is back in rotation.")
        print("\nlbfast status:")
        subprocess.run([sys.executable, "-m", "control.cli", "status", "--socket", sock], check=False)
        proc.terminate()
        proc.wait(10)
        log.close()
        from lbfast.xdp import remove_pins
        remove_pins(pin_dir)
    print("\ntestbed torn down.")


if __name__ == "__main__":
    main()
