"""The XDP/eBPF L4 data plane: bpf/lbfast_xdp.c compiled and loaded with bcc, driven by
XdpDataplane from the control plane's FrontendSpecs."""
from lbfast.xdp.dataplane import XdpDataplane
from lbfast.xdp.loader import XdpError, remove_pins
from lbfast.xdp.probe import probe

__all__ = ["XdpDataplane", "XdpError", "probe", "remove_pins"]
