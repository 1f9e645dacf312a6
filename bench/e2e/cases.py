"""The end-to-end cases: which LB, which traffic (keep-alive, a new connection per
request, TLS), the baseline each is divided by, and whether it can run here."""
from __future__ import annotations

import fnmatch
import functools
import importlib.util
import os
import platform
import shutil
from dataclasses import dataclass
from typing import Callable

from bench.e2e import proxies
from bench.e2e.proxies import RunContext, Target

GROUPS = {
    "l4-ka": "L4, keep-alive",
    "l4-close": "L4, one connection per request",
    "l7": "L7 HTTP, keep-alive",
    "tls-new": "TLS termination, a new handshake per request",
    "tls-ka": "TLS termination, keep-alive",
}


@dataclass(frozen=True)
class Case:
    key: str                                  # "l4-ka/haproxy-tcp": group/lb
    label: str                                # what the report calls it
    start: Callable[[RunContext], Target]
    close: bool = False                       # wrk -H "Connection: close"
    tls: bool = False
    sticky: bool = False
    baseline: str = ""                        # the direct case it is divided by
    peer: str = ""                            # the HAProxy case it is divided by
    requires: tuple[Callable[[], str | None], ...] = ()

    @property
    def group(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def lb(self) -> str:
        return self.key.split("/", 1)[1]

    @property
    def is_lbfast(self) -> bool:
        return self.lb.startswith("lbfast")

    @property
    def is_l4(self) -> bool:
        """Forwards connections, not requests (direct counts: one connection, one backend)."""
        return self.group.startswith("l4") or self.is_direct

    @property
    def is_direct(self) -> bool:
        return self.lb.startswith("direct")

    def unavailable(self) -> str | None:
        for check in self.requires:
            reason = check()
            if reason:
                return reason
        return None


# -- what a case needs -----------------------------------------------------------------
@functools.cache
def tool(name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if shutil.which(name) else f"`{name}` not installed"
    return check


def netns() -> str | None:
    from control.testbed import netns_unavailable_reason
    return netns_unavailable_reason()


def trustme() -> str | None:
    return None if importlib.util.find_spec("trustme") else "trustme not installed (pip install -e .[test])"


def lbfast_xdp() -> str | None:
    if importlib.util.find_spec("lbfast.xdp") is None:
        return "the XDP data plane (lbfast/xdp/) is not in this tree yet"
    if importlib.util.find_spec("bcc") is None:
        return "bcc (python3-bpfcc) not importable"
    build = f"/lib/modules/{platform.release()}/build/include"
    if not os.path.isdir(build):
        return f"no kernel headers at {build} (run `make setup`)"
    return None


def lbfast_l7() -> str | None:
    if importlib.util.find_spec("lbfast.l7") is None:
        return "the L7 proxy (lbfast/l7/) is not in this tree yet"
    return None


def nginx_stream() -> str | None:
    if not os.path.exists(proxies.NGINX_STREAM_MODULE):
        return "nginx stream module missing (Debian package libnginx-mod-stream)"
    return None


def nginx_cookie() -> str | None:
    return ("nginx has no cookie stickiness in its free version (`sticky cookie` is NGINX "
            "Plus only); not run")


BASE = (netns, tool("wrk"), tool("nginx"))
P = proxies


def _cases() -> list[Case]:
    out: list[Case] = []
    for group, close in (("l4-ka", False), ("l4-close", True)):
        base, peer = f"{group}/direct", f"{group}/haproxy-tcp"
        out += [
            Case(base, "direct to 2 backends", P.direct, close=close, requires=BASE),
            Case(f"{group}/direct-offload-off", "direct, peers' checksum offload off (as "
                 "for XDP)", functools.partial(P.direct, offload_off=True), close=close,
                 baseline=base, requires=BASE),
            Case(f"{group}/lbfast-xdp", "lbfast XDP (native)",
                 functools.partial(P.lbfast, xdp="native"),
                 close=close, baseline=base, peer=peer, requires=BASE + (lbfast_xdp,)),
            Case(f"{group}/lbfast-xdp-generic", "lbfast XDP (generic)",
                 functools.partial(P.lbfast, xdp="generic"),
                 close=close, baseline=base, peer=peer, requires=BASE + (lbfast_xdp,)),
            Case(f"{group}/lbfast-l4", "lbfast userspace L4", P.lbfast, close=close,
                 baseline=base, peer=peer, requires=BASE),
            Case(peer, "HAProxy mode tcp", functools.partial(P.haproxy, mode="tcp"), close=close,
                 baseline=base, peer=peer, requires=BASE + (tool("haproxy"),)),
            Case(f"{group}/nginx-stream", "nginx stream", functools.partial(P.nginx, kind="stream"),
                 close=close, baseline=base, peer=peer, requires=BASE + (nginx_stream,)),
            Case(f"{group}/nft-dnat", "nftables DNAT (numgen inc mod 2 + SNAT)", P.nft_dnat,
                 close=close, baseline=base, peer=peer, requires=BASE + (tool("nft"),)),
        ]
    base = "l4-ka/direct"
    for sticky in (False, True):
        sfx, what = ("-cookie", " + cookie stickiness") if sticky else ("", "")
        peer = f"l7/haproxy-http{sfx}"
        out += [
            Case(f"l7/lbfast-http{sfx}", f"lbfast L7{what}",
                 functools.partial(P.lbfast, protocol="http", cookie=sticky), sticky=sticky,
                 baseline=base, peer=peer, requires=BASE + (lbfast_l7,)),
            *([] if sticky else [Case(
                "l7/lbfast-http-logs", "lbfast L7 + access log (httplog to a file)",
                functools.partial(P.lbfast, protocol="http", access_log=True),
                baseline=base, peer=peer, requires=BASE + (lbfast_l7,))]),
            Case(peer, f"HAProxy mode http{what}",
                 functools.partial(P.haproxy, mode="http", cookie=sticky), sticky=sticky,
                 baseline=base, peer=peer, requires=BASE + (tool("haproxy"),)),
            Case(f"l7/nginx-http{sfx}", f"nginx proxy_pass{what}",
                 functools.partial(P.nginx, kind="http"), sticky=sticky, baseline=base, peer=peer,
                 requires=BASE + ((nginx_cookie,) if sticky else ())),
        ]
    for group, close in (("tls-new", True), ("tls-ka", False)):
        base, peer = f"{group}/direct-tls", f"{group}/haproxy-tls"
        out += [
            Case(base, "direct to 2 backends (backends terminate TLS)",
                 functools.partial(P.direct, tls=True), close=close, tls=True,
                 requires=BASE + (trustme,)),
            Case(f"{group}/lbfast-tls", "lbfast TLS termination",
                 functools.partial(P.lbfast, protocol="http", tls=True), close=close, tls=True,
                 baseline=base, peer=peer, requires=BASE + (trustme, lbfast_l7)),
            Case(peer, "HAProxy TLS termination",
                 functools.partial(P.haproxy, mode="http", tls=True), close=close, tls=True,
                 baseline=base, peer=peer, requires=BASE + (trustme, tool("haproxy"))),
            Case(f"{group}/nginx-tls", "nginx TLS termination",
                 functools.partial(P.nginx, kind="http", tls=True), close=close, tls=True,
                 baseline=base, peer=peer, requires=BASE + (trustme,)),
        ]
    return out


CASES: list[Case] = _cases()
BY_KEY = {c.key: c for c in CASES}


def select(patterns: list[str] | None) -> list[Case]:
    """Cases whose key matches any glob (all when none given), plus their baselines so
    every ratio has its denominator; in the suite's order."""
    if not patterns:
        return list(CASES)
    wanted = {c.key for c in CASES if any(fnmatch.fnmatchcase(c.key, p) or p == c.lb for p in patterns)}
    if not wanted:
        raise ValueError(f"no case matches {patterns}; known: {', '.join(BY_KEY)}")
    wanted |= {BY_KEY[k].baseline for k in wanted if BY_KEY[k].baseline}
    return [c for c in CASES if c.key in wanted]
