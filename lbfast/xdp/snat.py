"""The LB addresses a server's flows leave from (full NAT): by default the preferred
source of the route to the server, as the kernel would choose it; or the configured
`snat_addresses` of the server's family, which the program takes in turn."""
import ipaddress

from lbfast.xdp.rtnetlink import NetlinkError, Rtnetlink


class SnatError(RuntimeError):
    pass


class SnatResolver:
    def __init__(self, rtnl: Rtnetlink, snat_addresses: list[str] | None = None):
        self._rtnl = rtnl
        self._configured = [ipaddress.ip_address(a) for a in (snat_addresses or [])]

    def route(self, server_ip: str) -> tuple[str, int]:
        """(preferred source address, egress ifindex) of the route to server_ip."""
        try:
            route = self._rtnl.route(server_ip)
        except NetlinkError as e:
            raise SnatError(f"no route to server {server_ip}: {e}") from e
        return route.prefsrc, route.oif

    def sources_for(self, server_ip: str, most: int) -> list[str]:
        """The configured addresses of the server's family (up to `most`; each brings a
        port range of its own), else the route's preferred source."""
        version = ipaddress.ip_address(server_ip).version
        configured = [str(a) for a in self._configured if a.version == version]
        if configured:
            return configured[:most]
        src, _ = self.route(server_ip)
        if not src:
            raise SnatError(f"the route to server {server_ip} has no source address; "
                            f"configure snat_addresses")
        return [src]
