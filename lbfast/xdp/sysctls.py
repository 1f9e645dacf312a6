"""Kernel settings the XDP full-NAT path needs on the LB host, applied in the namespace of
the caller (a network namespace has its own /proc/sys/net):

- forwarding on every XDP interface: bpf_fib_lookup answers FWD_DISABLED otherwise (the
  global ip_forward may stay off);
- the SNAT port range reserved from the host's own ephemeral ports: the LB's own
  connections (health checks) leave from the same addresses towards the same servers,
  and a reply to one of them must never match a NAT flow's reply entry."""
import logging

log = logging.getLogger("lbfast.xdp")
PROC = "/proc/sys/net"


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def enable_forwarding(interfaces: list[str]) -> None:
    for ifname in interfaces:
        for path in (f"{PROC}/ipv4/conf/{ifname}/forwarding",
                     f"{PROC}/ipv6/conf/{ifname}/forwarding"):
            try:
                with open(path) as f:
                    if f.read().strip() == "1":
                        continue
                _write(path, "1")
                log.info("enabled %s (XDP forwarding needs it)", path)
            except OSError as e:
                log.warning("cannot enable %s: %s", path, e)


def _ranges(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.replace(",", " ").split():
        lo, _, hi = part.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


def reserve_ports(low: int, high: int) -> None:
    """Add low-high to net.ipv4.ip_local_reserved_ports (which covers IPv6 too)."""
    path = f"{PROC}/ipv4/ip_local_reserved_ports"
    try:
        with open(path) as f:
            current = _ranges(f.read())
        if any(lo <= low and high <= hi for lo, hi in current):
            return
        _write(path, ",".join([f"{lo}-{hi}" for lo, hi in current] + [f"{low}-{high}"]))
        log.info("reserved ports %d-%d for SNAT (ip_local_reserved_ports)", low, high)
    except OSError as e:
        log.warning("cannot reserve the SNAT ports %d-%d from the kernel: %s; the LB's own "
                    "connections may collide with NAT flows", low, high, e)
