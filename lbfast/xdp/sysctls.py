"""Kernel settings the XDP full-NAT path needs on the LB host, applied in the namespace of
the caller (a network namespace has its own /proc/sys/net):

- forwarding on every XDP interface: bpf_fib_lookup answers FWD_DISABLED otherwise (the
  global ip_forward may stay off);
- what the kernel needs to forward a packet the program rewrote but could not send (its
  next hop unresolved, next_hop.h): accept_local on the interface (the packet's source is
  an LB address, a martian otherwise) and, for IPv6, forwarding for that interface
  (force_forwarding, when the global switch is off); a strict rp_filter would drop it;
- the SNAT port range reserved from the host's own ephemeral ports: the LB's own
  connections (health checks) leave from the same addresses towards the same servers,
  and a reply to one of them must never match a NAT flow's reply entry."""
import logging
import os

log = logging.getLogger("lbfast.xdp")
PROC = "/proc/sys/net"


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _enable(path: str, why: str) -> None:
    try:
        if _read(path) != "1":
            _write(path, "1")
            log.info("enabled %s (%s)", path, why)
    except OSError as e:
        log.warning("cannot enable %s: %s", path, e)


def enable_forwarding(interfaces: list[str]) -> None:
    try:
        v6_forwarding = _read(f"{PROC}/ipv6/conf/all/forwarding") == "1"
    except OSError:                 # no IPv6
        v6_forwarding = True
    for ifname in interfaces:
        _enable(f"{PROC}/ipv4/conf/{ifname}/forwarding", "XDP forwarding needs it")
        _enable(f"{PROC}/ipv6/conf/{ifname}/forwarding", "XDP forwarding needs it")
        _enable(f"{PROC}/ipv4/conf/{ifname}/accept_local",
                "the kernel forwards packets to unresolved neighbours")
        force = f"{PROC}/ipv6/conf/{ifname}/force_forwarding"
        if not v6_forwarding and os.path.exists(force):
            _enable(force, "the kernel forwards packets to unresolved neighbours")
        try:
            strict = max(int(_read(f"{PROC}/ipv4/conf/{name}/rp_filter"))
                         for name in ("all", ifname)) == 1
        except OSError:
            strict = False
        if strict:
            log.warning("rp_filter is strict on %s: the first packet to a neighbour not yet "
                        "resolved is dropped (set net.ipv4.conf.all/%s.rp_filter to 0 or 2)",
                        ifname, ifname)


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
