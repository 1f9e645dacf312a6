"""The program's clock is jiffies (bpf_jiffies64: a memory read, where the ktime helpers
cost 15-35 ns a packet on these hosts). Python needs the tick rate to turn timeouts into
jiffies, and the current jiffies to judge entry ages; both come from the kernel itself."""
import ctypes as ct
import gzip
import os
import re
import time
from functools import lru_cache

from lbfast.xdp import syscall

BPF_PROG_LOAD = 5
BPF_PROG_TYPE_XDP = 6
BPF_FUNC_JIFFIES64 = 118
# r0 = bpf_jiffies64(); exit  (the XDP "verdict" is then the low 32 bits of jiffies)
JIFFIES_PROGRAM = (bytes([0x85, 0, 0, 0]) + BPF_FUNC_JIFFIES64.to_bytes(4, "little")
                   + bytes.fromhex("9500000000000000"))
KNOWN_HZ = (100, 250, 300, 1000)


class _ProgLoadAttr(ct.Structure):
    _fields_ = [("prog_type", ct.c_uint32), ("insn_cnt", ct.c_uint32), ("insns", ct.c_uint64),
                ("license", ct.c_uint64), ("log_level", ct.c_uint32), ("log_size", ct.c_uint32),
                ("log_buf", ct.c_uint64), ("kern_version", ct.c_uint32),
                ("prog_flags", ct.c_uint32), ("prog_name", ct.c_char * 16)]


def load_xdp_bytecode(code: bytes, name: bytes) -> int:
    """Load a hand-assembled XDP program; returns its fd."""
    insns = ct.create_string_buffer(code, len(code))
    license_ = ct.create_string_buffer(b"GPL")
    attr = _ProgLoadAttr(prog_type=BPF_PROG_TYPE_XDP, insn_cnt=len(code) // 8,
                         insns=ct.addressof(insns), license=ct.addressof(license_),
                         prog_name=name)
    return syscall.bpf(BPF_PROG_LOAD, attr)


@lru_cache(maxsize=1)
def _jiffies_fd() -> int:
    return load_xdp_bytecode(JIFFIES_PROGRAM, b"lbfast_jiffies")


def jiffies32() -> int:
    """The low 32 bits of the kernel's jiffies."""
    verdict, _, _ = syscall.prog_test_run(_jiffies_fd(), bytes(64))
    return verdict


def _config_hz() -> int | None:
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            m = re.search(r"^CONFIG_HZ=(\d+)$", f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


@lru_cache(maxsize=1)
def hz() -> int:
    """Jiffies per second of the running kernel (its config if exposed, else timed)."""
    configured = _config_hz()
    if configured:
        return configured
    start, t0 = jiffies32(), time.monotonic()
    time.sleep(0.2)
    rate = ((jiffies32() - start) & 0xFFFFFFFF) / (time.monotonic() - t0)
    return min(KNOWN_HZ, key=lambda h: abs(h - rate))


def close() -> None:
    if _jiffies_fd.cache_info().currsize:
        os.close(_jiffies_fd())
        _jiffies_fd.cache_clear()
