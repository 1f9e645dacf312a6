"""Can XDP run here? What the daemon's `auto` mode asks before choosing between the XDP
data plane and the userspace proxy. Cheap: no compile; a two-instruction program is
loaded, and attached only to interfaces that have no XDP program yet."""
import importlib.util
import os
import platform

from lbfast.enums import XdpMode
from lbfast.xdp.clock import load_xdp_bytecode

# r0 = XDP_PASS; exit
PASS_PROGRAM = bytes.fromhex("b700000002000000" "9500000000000000")


def load_pass_program() -> int:
    return load_xdp_bytecode(PASS_PROGRAM, b"lbfast_probe")


def probe(interfaces: list[str], xdp_mode: XdpMode = XdpMode.NATIVE) -> tuple[bool, str]:
    """(True, how XDP would run) or (False, why not)."""
    if os.geteuid() != 0:
        return False, "XDP needs root"
    if not interfaces:
        return False, "no dataplane.interfaces configured"
    if importlib.util.find_spec("bcc") is None:
        return False, "bcc is not importable (python3-bpfcc)"
    build = f"/lib/modules/{platform.release()}/build"
    if not os.path.exists(os.path.join(build, "include")):
        return False, f"no kernel headers for bcc at {build} (run .ci/setup-host)"
    try:
        fd = load_pass_program()
    except OSError as e:
        return False, f"the kernel refuses XDP programs ({e.strerror})"
    from lbfast.xdp import loader
    from lbfast.xdp.rtnetlink import NetlinkError, Rtnetlink
    notes = []
    try:
        with Rtnetlink() as rtnl:
            for ifname in interfaces:
                try:
                    link = loader.link_of(rtnl, ifname)
                except loader.XdpError as e:
                    return False, str(e)
                ids = [i for i in (link.drv_prog, link.skb_prog) if i]
                foreign = [i for i in ids if loader.prog_name(i) != loader.PROG_NAME]
                if foreign:
                    return False, f"{ifname} runs another XDP program (id {foreign[0]})"
                if ids or xdp_mode != XdpMode.NATIVE:
                    continue
                try:
                    rtnl.set_xdp(link.index, fd, loader.XDP_FLAGS_DRV_MODE)
                    rtnl.set_xdp(link.index, -1, loader.XDP_FLAGS_DRV_MODE)
                except NetlinkError as e:
                    notes.append(f"{ifname}: no native XDP ({e.strerror}), generic mode")
    finally:
        os.close(fd)
    how = f"XDP ({xdp_mode}) on {', '.join(interfaces)}"
    return True, how + (f"; {'; '.join(notes)}" if notes else "")
