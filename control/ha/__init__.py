"""High availability with proven engines, managed by lbfast: keepalived moves the VIPs
between a master and its backups (VRRP), BIRD announces them to ECMP routers (BGP)."""
from control.ha.manager import HaManager

__all__ = ["HaManager"]
