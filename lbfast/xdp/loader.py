"""Compile and load the XDP program with bcc (once per daemon start), with its maps
pinned under the pin directory, and attach/detach it on interfaces.

Pinned maps outlive the daemon: a new start reuses them (conntrack, tables, counters),
so established flows survive. A pin whose layout no longer matches the program (a size
or struct changed) is removed first, with a warning, and created afresh.

Attaching takes over what a crashed daemon left: our program on an interface is
replaced atomically; a foreign XDP program is refused, never replaced."""
import ctypes as ct
import errno
import logging
import os
import time
from dataclasses import dataclass, field

from lbfast.enums import XdpMode
from lbfast.xdp import syscall
from lbfast.xdp.bpfmap import BpfMap
from lbfast.xdp.consts import DEFAULTS, Constants
from lbfast.xdp.maps import MAPS, MAP_BY_NAME
from lbfast.xdp.rtnetlink import Link, NetlinkError, Rtnetlink
from lbfast.xdp.source import amalgamate

log = logging.getLogger("lbfast.xdp")

PROG_NAME = "lbfast_xdp"
BPFFS = "/sys/fs/bpf"
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
MODE_FLAGS = {XdpMode.NATIVE: XDP_FLAGS_DRV_MODE, XdpMode.GENERIC: XDP_FLAGS_SKB_MODE}
# Compiler warnings bcc's kernel-header build would otherwise print on every start.
QUIET_CFLAGS = ["-Wno-unused-function", "-Wno-incompatible-pointer-types-discards-qualifiers"]


class XdpError(RuntimeError):
    pass


# ---------------------------------------------------------------------- pinning
def ensure_bpffs(path: str = BPFFS) -> None:
    """Pins need a bpf filesystem; mount one if the host has not."""
    if os.path.ismount(path):
        return
    os.makedirs(path, exist_ok=True)
    libc = ct.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", path.encode(), b"bpf", 0, None) != 0:
        e = ct.get_errno()
        raise XdpError(f"cannot mount bpffs on {path}: {os.strerror(e)}")


def recorded_layouts(pin_dir: str) -> dict[int, int]:
    """The `layouts` pin: map name digest -> key/value layout digest it was made with."""
    path = os.path.join(pin_dir, "layouts")
    if pin_mismatch(path, "layouts", None) is not None:
        return {}
    m = BpfMap("layouts", syscall.obj_get(path), ct.c_uint64, ct.c_uint64)
    try:
        return {k.value: v.value for k, v in m.items()}
    finally:
        m.close()


def pin_mismatch(path: str, name: str, consts: Constants | None,
                 layouts: dict[int, int] | None = None) -> str | None:
    """Why a pinned map cannot be reused, or None when it matches. With `layouts` (from
    recorded_layouts) the fields must be where they were, not only the sizes."""
    spec = MAP_BY_NAME.get(name)
    if spec is None:
        return "not a map of this program version"
    consts = consts if consts is not None else DEFAULTS
    try:
        fd = syscall.obj_get(path)
    except OSError as e:
        return f"unreadable ({e})"
    try:
        info = syscall.map_info(fd)
    finally:
        os.close(fd)
    want = (syscall.MAP_TYPES[spec.kind], ct.sizeof(spec.key(consts)),
            ct.sizeof(spec.value(consts)), spec.max_entries(consts), spec.flags)
    have = (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags)
    if want != have:
        return f"layout changed (type, key, value, entries, flags) {have} -> {want}"
    if layouts is not None and layouts.get(spec.name_digest()) != spec.layout_digest(consts):
        return "layout changed (fields moved, or made before layouts were recorded)"
    return None


def prepare_pin_dir(consts: Constants) -> None:
    pin_dir = str(consts["PIN_DIR"])
    # Every unknown entry there is removed: no '..' or symbolic link may lead elsewhere.
    real = os.path.realpath(pin_dir)
    if real != pin_dir or not pin_dir.startswith(BPFFS + "/"):
        raise XdpError(f"pin directory {pin_dir!r} is not a normal path inside {BPFFS} (it resolves to {real!r})")
    ensure_bpffs()
    os.makedirs(pin_dir, exist_ok=True)
    layouts = recorded_layouts(pin_dir)
    for name in sorted(os.listdir(pin_dir)):
        path = os.path.join(pin_dir, name)
        why = pin_mismatch(path, name, consts, None if name == "layouts" else layouts)
        if why:
            log.warning("pinned map %s %s: removed, its state is lost", path, why)
            os.unlink(path)


def remove_pins(pin_dir: str) -> None:
    """Forget all state: unpin every map (the program keeps its own references)."""
    if not os.path.isdir(pin_dir):
        return
    for name in os.listdir(pin_dir):
        os.unlink(os.path.join(pin_dir, name))
    os.rmdir(pin_dir)


# ---------------------------------------------------------------------- loading
@dataclass
class Program:
    """The loaded program: its fd, its maps (opened through their pins) and the bcc
    object that owns both."""
    fd: int
    maps: dict[str, BpfMap]
    consts: Constants
    compile_seconds: float
    _bcc: object = field(repr=False, default=None)

    def bcc_table(self, name: str):
        """bcc's handle on a map only a build variant has (not pinned, not in MAPS)."""
        return self._bcc.get_table(name)

    def close(self) -> None:
        """Drop our references. An attached program stays loaded by its interface; the
        maps stay by their pins."""
        for m in self.maps.values():
            m.close()
        if self._bcc is not None:
            self._bcc.cleanup()
            self._bcc = None
        self.fd = -1


def load(consts: Constants, extra_cflags: list[str] = ()) -> Program:
    """Compile bpf/ with bcc (seconds: LLVM) and load the program. `extra_cflags` select
    build variants (-DLBFAST_BENCH for bench/bench_xdp.py)."""
    try:
        from bcc import BPF
    except ImportError as e:
        raise XdpError(f"bcc is not importable: {e}") from e
    prepare_pin_dir(consts)
    started = time.monotonic()
    try:
        bcc = BPF(text=amalgamate().encode(),
                  cflags=consts.cflags() + QUIET_CFLAGS + list(extra_cflags))
        fn = bcc.load_func(PROG_NAME.encode(), BPF.XDP)
    except Exception as e:
        raise XdpError(f"cannot compile/load bpf/lbfast_xdp.c: {e}") from e
    seconds = time.monotonic() - started
    pin_dir = str(consts["PIN_DIR"])
    maps = {}
    for spec in MAPS:
        fd = syscall.obj_get(os.path.join(pin_dir, spec.name))
        maps[spec.name] = BpfMap(spec.name, fd, spec.key(consts), spec.value(consts),
                                 spec.percpu)
    for spec in MAPS:
        maps["layouts"].set(ct.c_uint64(spec.name_digest()),
                            ct.c_uint64(spec.layout_digest(consts)))
    log.info("XDP program compiled and loaded in %.2f s; maps pinned in %s", seconds,
             pin_dir)
    return Program(fn.fd, maps, consts, seconds, bcc)


# ---------------------------------------------------------------------- attaching
@dataclass
class XdpState:
    drv_prog: int = 0
    skb_prog: int = 0


def xdp_state(rtnl: Rtnetlink, ifname: str) -> XdpState:
    link = link_of(rtnl, ifname)
    return XdpState(link.drv_prog, link.skb_prog)


def prog_name(prog_id: int) -> str:
    fd = syscall.prog_fd_by_id(prog_id)
    try:
        return syscall.prog_info(fd).name.decode()
    finally:
        os.close(fd)


def link_of(rtnl: Rtnetlink, ifname: str) -> Link:
    try:
        return rtnl.link(ifname)
    except NetlinkError as e:
        if e.errno == errno.ENODEV:
            raise XdpError(f"no interface {ifname!r} in this network namespace") from None
        raise


def check_attachable(rtnl: Rtnetlink, ifname: str) -> XdpState:
    """The interface exists and runs no XDP program but ours."""
    state = xdp_state(rtnl, ifname)
    for prog_id in (state.drv_prog, state.skb_prog):
        if prog_id and prog_name(prog_id) != PROG_NAME:
            raise XdpError(f"{ifname} runs another XDP program ({prog_name(prog_id)!r}, "
                           f"id {prog_id}); not replacing it")
    return state


def attach(rtnl: Rtnetlink, ifname: str, prog_fd: int, mode: XdpMode) -> XdpMode:
    """Attach (or atomically replace ours) on ifname; returns the mode it runs in."""
    link = link_of(rtnl, ifname)
    state = check_attachable(rtnl, ifname)
    # native and generic cannot coexist: clear the mode we are not about to replace
    if mode == XdpMode.NATIVE and state.skb_prog:
        rtnl.set_xdp(link.index, -1, XDP_FLAGS_SKB_MODE)
    if mode == XdpMode.GENERIC and state.drv_prog:
        rtnl.set_xdp(link.index, -1, XDP_FLAGS_DRV_MODE)
    try:
        rtnl.set_xdp(link.index, prog_fd, MODE_FLAGS[mode])
        if mode == XdpMode.NATIVE and link.kind == "veth":
            log.warning("native XDP on veth %s: every cloned TCP segment is copied into a "
                        "page; xdp_mode generic is not, and is faster on veth for new "
                        "connections (make bench: 0.80x direct vs 0.72x)", ifname)
        return mode
    except NetlinkError as e:
        if mode != XdpMode.NATIVE:
            raise XdpError(f"cannot attach XDP to {ifname}: {e}") from e
        log.warning("native XDP not available on %s (%s): falling back to generic (SKB) "
                    "mode, which is slower on a NIC with an XDP driver", ifname, e.strerror)
    if state.drv_prog:
        rtnl.set_xdp(link.index, -1, XDP_FLAGS_DRV_MODE)
    try:
        rtnl.set_xdp(link.index, prog_fd, XDP_FLAGS_SKB_MODE)
    except NetlinkError as e:
        raise XdpError(f"cannot attach XDP to {ifname}: {e}") from e
    return XdpMode.GENERIC


def detach(rtnl: Rtnetlink, ifname: str) -> None:
    """Remove our program in both modes (`ip link set dev X xdp off` only does native)."""
    try:
        link = link_of(rtnl, ifname)
    except XdpError:
        return
    for prog_id, flags in ((link.drv_prog, XDP_FLAGS_DRV_MODE),
                           (link.skb_prog, XDP_FLAGS_SKB_MODE)):
        if not prog_id or prog_name(prog_id) != PROG_NAME:
            continue
        try:
            rtnl.set_xdp(link.index, -1, flags)
        except NetlinkError as e:
            if e.errno != errno.ENODEV:
                raise
