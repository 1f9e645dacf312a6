"""What `lbfast run` would refuse on this host although the config file is valid: found by
`lbfast check` before a start fails. Each problem is (field, message), as ConfigError's."""
import errno
import ipaddress
import os
import socket

from control.api.server import ApiRefused, split_listen, token_for
from lbfast.enums import DataplaneMode

SYS_NET = "/sys/class/net"


def dataplane_problems(config) -> list[tuple[str, str]]:
    dp = config.dataplane
    if dp.mode != DataplaneMode.XDP:
        return []                   # auto falls back to the userspace proxy and says why
    if not dp.interfaces:
        return [("dataplane.interfaces", "dataplane.mode xdp needs at least one interface")]
    return [("dataplane.interfaces", f"no interface named {name!r} on this host")
            for name in dp.interfaces if not os.path.exists(os.path.join(SYS_NET, name))]


def api_problems(config) -> list[tuple[str, str]]:
    listen = config.api.listen
    if not listen or token_for(config):
        return []
    host, _ = split_listen(listen)
    return [] if ipaddress.ip_address(host).is_loopback else ApiRefused(listen).problems


def routable(address: str) -> bool:
    """Local or reachable through a route (connecting a UDP socket sends nothing)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((address, 9))
        except OSError as e:
            if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
                return False
            raise
    return True


def vip_problems(config) -> list[tuple[str, str]]:
    return [(f"lbs[{i}].vip", f"{lb.vip} is neither an address of this host nor routable from it")
            for i, lb in enumerate(config.lbs) if lb.vip and not routable(lb.vip)]


def problems(config) -> list[tuple[str, str]]:
    return dataplane_problems(config) + api_problems(config) + vip_problems(config)
