"""nginx backends for the end-to-end runs: one per backend namespace, one worker each,
a small plain-text body naming the backend, HTTP on port 80 and HTTPS on 443 (the
direct TLS baseline)."""
from __future__ import annotations

import os
import subprocess
import time

from bench.e2e.tls import CIPHERSUITE, TLS_VERSION, CertFiles

HTTP_PORT = 80
HTTPS_PORT = 443
WORKERS = 1


def body(name: str) -> str:
    """What backend `name` answers on every request (the functional check reads it)."""
    return f"{name}\n"


def temp_paths(workdir: str) -> str:
    return "\n".join(f"  {kind}_temp_path {workdir}/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))


def nginx_backend_conf(name: str, workdir: str, cert: CertFiles | None) -> str:
    tls = "" if cert is None else f"""
    listen {HTTPS_PORT} ssl backlog=4096;
    ssl_certificate {cert.cert};
    ssl_certificate_key {cert.key};
    ssl_protocols {TLS_VERSION};
    ssl_conf_command Ciphersuites {CIPHERSUITE};"""
    return f"""# lbfast bench backend {name}
daemon off;
worker_processes {WORKERS};
worker_rlimit_nofile 16384;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
{temp_paths(workdir)}
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  server {{
    listen {HTTP_PORT} backlog=4096;{tls}
    location / {{
      default_type text/plain;
      add_header X-Backend {name} always;
      return 200 "{body(name).strip()}\\n";
    }}
  }}
}}
"""


def private_dir(parent: str, name: str) -> str:
    """A 0755 directory: nginx workers run as www-data and must reach their temp paths."""
    path = os.path.join(parent, name)
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    return path


def start_nginx(host, conf_text: str, workdir: str) -> subprocess.Popen:
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    log = open(os.path.join(workdir, "stderr.log"), "ab")
    try:
        return host.popen(["nginx", "-p", workdir, "-c", conf], stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def start_backends(tb, rundir: str, cert: CertFiles | None) -> list[subprocess.Popen]:
    procs, workdirs = [], []
    for i, b in enumerate(tb.backends):
        name = f"b{i}"
        workdir = private_dir(rundir, f"nginx-{name}")
        procs.append(start_nginx(b, nginx_backend_conf(name, workdir, cert), workdir))
        workdirs.append(workdir)
    for b, p, workdir in zip(tb.backends, procs, workdirs):
        wait_listening(tb, b, b.ip, HTTP_PORT, p, os.path.join(workdir, "error.log"))
    return procs


def wait_listening(tb, host, addr: str, port: int, proc: subprocess.Popen | None,
                   log: str | None = None, timeout: float = 15.0, client=None) -> None:
    """Wait until `addr:port` accepts from `client` (default: the LB namespace for a
    backend, the client namespace otherwise); fail early with the log if `proc` died."""
    who = client or (tb.lb if host in tb.backends else tb.client)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[4:]} exited with {proc.returncode}: {tail(log)}")
        try:
            who.connect(addr, port, timeout=0.5).close()
            return
        except OSError as e:
            last = e
            time.sleep(0.02)
    raise TimeoutError(f"{addr}:{port} not reachable within {timeout}s ({last}): {tail(log)}")


def tail(path: str | None, n: int = 600) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""
