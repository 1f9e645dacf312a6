"""The load balancers under test, each started fresh in the LB namespace of a new testbed:
lbfast (userspace L4, XDP, L7, TLS), HAProxy (mode tcp/http, TLS), nginx (stream,
proxy_pass, TLS) and nftables DNAT. Every proxy gets the same worker count."""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field

from bench.e2e.backends import (HTTP_PORT, HTTPS_PORT, private_dir, start_nginx, tail,
                                temp_paths, wait_listening)
from bench.e2e.tls import CIPHERSUITE, TLS_VERSION, CertFiles

NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
MAXCONN = 4096           # well below the 20000 open-files hard limit (two fds per session)
UPSTREAM_KEEPALIVE = 256  # idle upstream connections kept by nginx: above wrk's -c


@dataclass
class RunContext:
    """What a case needs to start its LB: the testbed, a private 0755 directory for this
    run, the certificate and the worker count shared by every proxy."""
    tb: object
    rundir: str
    cert: CertFiles
    workers: int = 1


@dataclass
class Target:
    """A started LB: the URLs wrk hits (one wrk process per URL) and how its CPU shows."""
    urls: list[str]
    lb_cpu: str = "process"      # process: LB namespace processes; kernel: no process of its own; none
    procs: list = field(default_factory=list)
    info: dict = field(default_factory=dict)


class NotAvailable(Exception):
    """The case cannot run on this host or in this tree (reported, not an error)."""


def url(addr: str, tls: bool) -> str:
    return f"https://{addr}:{HTTPS_PORT}/" if tls else f"http://{addr}:{HTTP_PORT}/"


def backend_addrs(ctx: RunContext) -> list[str]:
    return [b.ip for b in ctx.tb.backends]


# -- direct ----------------------------------------------------------------------------
def direct(ctx: RunContext, tls: bool = False, offload_off: bool = False) -> Target:
    """No LB: wrk's threads and connections split over both backends, one wrk each.
    `offload_off`: with the peers set as the XDP cases need them (what that alone costs)."""
    if offload_off:
        from control.testbed import ethtool_offload_off
        for h in (ctx.tb.client, *ctx.tb.backends):
            ethtool_offload_off(h, h.ifname)
    return Target([url(a, tls) for a in backend_addrs(ctx)], lb_cpu="none")


# -- HAProxy ---------------------------------------------------------------------------
def haproxy_conf(ctx: RunContext, mode: str, cookie: bool, tls: bool) -> str:
    tb = ctx.tb
    port = HTTPS_PORT if tls else HTTP_PORT
    bind = f"bind {tb.vip}:{port}"
    if tls:
        bind += f" ssl crt {ctx.cert.combined} alpn http/1.1"
    servers = "\n".join(
        f"  server b{i} {a}:{HTTP_PORT}" + (f" cookie b{i}" if cookie else "")
        for i, a in enumerate(backend_addrs(ctx)))
    return f"""# lbfast bench: HAProxy mode {mode}{' + cookie' if cookie else ''}{' + TLS' if tls else ''}
global
  nbthread {ctx.workers}
  maxconn {MAXCONN}
  pidfile {ctx.rundir}/haproxy.pid
  ssl-default-bind-ciphersuites {CIPHERSUITE}
  ssl-default-bind-options ssl-min-ver {TLS_VERSION}
defaults
  mode {mode}
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend fe
  {bind}
  maxconn {MAXCONN}
  default_backend be
backend be
  balance roundrobin
{'  cookie SRV insert indirect nocache' if cookie else ''}
{servers}
"""


def haproxy(ctx: RunContext, mode: str = "tcp", cookie: bool = False, tls: bool = False) -> Target:
    tb = ctx.tb
    tb.add_vip_local()
    conf = os.path.join(ctx.rundir, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(haproxy_conf(ctx, mode, cookie, tls))
    log_path = os.path.join(ctx.rundir, "haproxy.log")
    with open(log_path, "ab") as log:
        p = tb.lb.popen(["haproxy", "-db", "-f", conf], stdout=log, stderr=subprocess.STDOUT)
    wait_listening(tb, tb.lb, tb.vip, HTTPS_PORT if tls else HTTP_PORT, p, log_path)
    return Target([url(tb.vip, tls)], procs=[p])


# -- nginx -----------------------------------------------------------------------------
def nginx_head(ctx: RunContext, workdir: str, modules: str = "") -> str:
    return f"""{modules}daemon off;
worker_processes {ctx.workers};
worker_rlimit_nofile 16384;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 8192; }}
"""


def upstream(ctx: RunContext, keepalive: bool) -> str:
    servers = "".join(f"    server {a}:{HTTP_PORT};\n" for a in backend_addrs(ctx))
    extra = (f"    keepalive {UPSTREAM_KEEPALIVE};\n    keepalive_requests 10000000;\n"
             if keepalive else "")
    return f"  upstream be {{\n{servers}{extra}  }}\n"


def nginx_proxy_conf(ctx: RunContext, workdir: str, tls: bool) -> str:
    tb = ctx.tb
    if tls:
        listen = (f"listen {tb.vip}:{HTTPS_PORT} ssl backlog=4096;\n"
                  f"    ssl_certificate {ctx.cert.cert};\n    ssl_certificate_key {ctx.cert.key};\n"
                  f"    ssl_protocols {TLS_VERSION};\n    ssl_conf_command Ciphersuites {CIPHERSUITE};")
    else:
        listen = f"listen {tb.vip}:{HTTP_PORT} backlog=4096;"
    return nginx_head(ctx, workdir) + f"""http {{
  access_log off;
{temp_paths(workdir)}
  keepalive_requests 10000000;
  keepalive_timeout 120s;
{upstream(ctx, keepalive=True)}  server {{
    {listen}
    location / {{
      proxy_pass http://be;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def nginx_stream_conf(ctx: RunContext, workdir: str) -> str:
    return nginx_head(ctx, workdir, f"load_module {NGINX_STREAM_MODULE};\n") + f"""stream {{
{upstream(ctx, keepalive=False)}  server {{
    listen {ctx.tb.vip}:{HTTP_PORT} backlog=4096;
    proxy_pass be;
  }}
}}
"""


def nginx(ctx: RunContext, kind: str = "http", tls: bool = False) -> Target:
    tb = ctx.tb
    tb.add_vip_local()
    workdir = private_dir(ctx.rundir, "nginx-lb")
    if kind == "stream":
        if not os.path.exists(NGINX_STREAM_MODULE):
            raise NotAvailable(f"nginx stream module missing ({NGINX_STREAM_MODULE}: "
                               "Debian package libnginx-mod-stream)")
        text = nginx_stream_conf(ctx, workdir)
    else:
        text = nginx_proxy_conf(ctx, workdir, tls)
    p = start_nginx(tb.lb, text, workdir)
    wait_listening(tb, tb.lb, tb.vip, HTTPS_PORT if tls else HTTP_PORT, p,
                   os.path.join(workdir, "error.log"))
    return Target([url(tb.vip, tls)], procs=[p])


# -- nftables --------------------------------------------------------------------------
def nft_ruleset(ctx: RunContext) -> str:
    addrs = backend_addrs(ctx)
    mapping = ", ".join(f"{i} : {a}" for i, a in enumerate(addrs))
    return f"""table ip lbfast_bench {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {ctx.tb.vip} tcp dport {HTTP_PORT} dnat to numgen inc mod {len(addrs)} map {{ {mapping} }}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip daddr {{ {", ".join(addrs)} }} tcp dport {HTTP_PORT} masquerade
  }}
}}
"""


# Finished connections leave conntrack entries for 120 s by default: at tens of thousands
# of new connections per second that fills the (host-wide) table in seconds.
NFT_SYSCTLS = {"net.netfilter.nf_conntrack_tcp_timeout_time_wait": 1,
               "net.netfilter.nf_conntrack_tcp_timeout_close": 1,
               "net.netfilter.nf_conntrack_tcp_timeout_fin_wait": 1,
               "net.netfilter.nf_conntrack_tcp_timeout_last_ack": 1}


def nft_dnat(ctx: RunContext) -> Target:
    tb = ctx.tb
    path = os.path.join(ctx.rundir, "dnat.nft")
    with open(path, "w") as f:
        f.write(nft_ruleset(ctx))
    tb.lb.run(["nft", "-f", path])
    tb.lb.sysctls(NFT_SYSCTLS)
    return Target([url(tb.vip, False)], lb_cpu="kernel", info={"ruleset": path})


# -- lbfast ----------------------------------------------------------------------------
def lbfast_config(ctx: RunContext, protocol: str, cookie: bool, tls: bool, xdp: str,
                  access_log: bool = False) -> dict:
    tb = ctx.tb
    backend = {"name": "web", "protocol": protocol, "forward_port": HTTP_PORT,
               "algorithm": "roundrobin", "stickiness": "cookie" if cookie else "none",
               "servers": [{"address": a, "label": f"b{i}"} for i, a in enumerate(backend_addrs(ctx))]}
    frontend = {"name": "web", "port": HTTPS_PORT if tls else HTTP_PORT, "backend": "web",
                "access_log": access_log}
    lb = {"name": "bench", "vip": tb.vip, "backends": [backend], "frontends": [frontend]}
    if tls:
        lb["certificates"] = [{"name": "bench", "chain_pem": ctx.cert.chain_pem(),
                               "key_pem": ctx.cert.key_pem()}]
        frontend["certificates"] = ["bench"]
    dataplane = {"mode": "xdp" if xdp else "userspace", "workers": ctx.workers}
    if xdp:
        dataplane["interfaces"] = [tb.lb_client_if, *tb.lb_backend_ifs]
        dataplane["xdp_mode"] = xdp
    return {"dataplane": dataplane, "lbs": [lb],
            "access_log": {"path": os.path.join(ctx.rundir, "access.log")}}


def lbfast(ctx: RunContext, protocol: str = "tcp", cookie: bool = False, tls: bool = False,
           xdp: str = "", access_log: bool = False) -> Target:
    """`xdp`: "" (userspace proxies), "native" or "generic"; `access_log`: a line per request"""
    from control import runtime

    tb = ctx.tb
    if xdp:
        from control.testbed import ethtool_offload_off, gro_on
        # XDP on veth, either mode: senders' checksums must be computed in software (a
        # partial checksum cannot be updated like a full one); native also needs NAPI
        # (GRO on) on the veths that receive redirected frames
        for h in (tb.client, *tb.backends):
            ethtool_offload_off(h, h.ifname)
            if xdp == "native":
                gro_on(h, h.ifname)
    # with XDP too: packets XDP passes up (a non-SYN without state) get the kernel's RST
    tb.add_vip_local()
    conf = os.path.join(ctx.rundir, "lbfast.json")
    with open(conf, "w") as f:
        json.dump(lbfast_config(ctx, protocol, cookie, tls, xdp, access_log), f, indent=2)
    os.chmod(conf, 0o600)
    sock = os.path.join(ctx.rundir, "lbfast.sock")
    log_path = os.path.join(ctx.rundir, "lbfast.log")
    with open(log_path, "ab") as log:
        p = tb.lb.python(["-m", "control.cli", "run", "--config", conf, "--socket", sock,
                          "--pidfile", os.path.join(ctx.rundir, "lbfast.pid"),
                          "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
    status = None
    deadline = time.monotonic() + 30      # an XDP start compiles the program (~1.3 s)
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"lbfast run exited with {p.returncode}: {tail(log_path)}")
        try:
            status = runtime.request(sock, "status", timeout=2.0)
            break
        except (OSError, runtime.ControlError, ValueError):
            time.sleep(0.05)
    if status is None:
        raise TimeoutError(f"lbfast daemon did not answer on {sock} within 30 s: {tail(log_path)}")
    plane = status.get("dataplane") or {}
    if xdp:
        link = tb.lb.run(["ip", "link", "show", "dev", tb.lb_client_if]).stdout
        if "xdp" not in link:
            raise NotAvailable(f"no XDP program on {tb.lb_client_if}: the daemon runs "
                               f"{plane.get('name', '?')} ({plane.get('reason', '')})")
    port = HTTPS_PORT if tls else HTTP_PORT
    listed = [str(fe.get("listen", "")) for fe in status.get("frontends", [])]
    if not any(x.endswith(f":{port}") for x in listed):
        # the daemon accepted the config but runs no data plane for this frontend kind
        try:
            wait_listening(tb, tb.lb, tb.vip, port, p, log_path, timeout=1.0, client=tb.client)
        except (TimeoutError, RuntimeError):
            kind = f"{protocol}{' + TLS' if tls else ''}{' + cookie' if cookie else ''}"
            raise NotAvailable(f"the daemon does not serve {kind} frontends yet "
                               f"(its status lists: {', '.join(listed) or 'none'})") from None
    elif not xdp:
        wait_listening(tb, tb.lb, tb.vip, port, p, log_path)
    return Target([url(tb.vip, tls)], lb_cpu="kernel" if xdp else "process", procs=[p],
                  info={"dataplane": plane})
