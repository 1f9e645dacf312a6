"""bpf/structs.h and its ctypes mirror (lbfast/xdp/structs.py) agree on every size and
offset, and bpf/hashing.h computes lbfast.hashing.source_hash bit for bit: both checked
by compiling small C programs with gcc against the real headers."""
import ctypes as ct
import ipaddress
import random
import subprocess
from pathlib import Path

import pytest

from lbfast import hashing
from lbfast.xdp.consts import BPF_DIR, CONSTS_H, DEFAULTS, Constants, _GUARDED
from lbfast.xdp.structs import c_structs


PRELUDE = """
#include <stddef.h>
#include <stdio.h>
#include <arpa/inet.h>
#include <linux/types.h>
#define __always_inline inline __attribute__((always_inline))
#define bpf_ntohl ntohl
#include "structs.h"
#include "hashing.h"
"""


def build_and_run(tmp_path: Path, body: str, consts: Constants, stdin: str = "") -> str:
    src = tmp_path / "probe.c"
    exe = tmp_path / "probe"
    src.write_text(PRELUDE + "int main(void) {\n" + body + "\nreturn 0;\n}\n")
    # the -D flags the loader passes, minus the kernel tick rate nothing here uses
    flags = [f for f in consts.cflags()] + ["-DJIFFIES_PER_S=250"]
    subprocess.run(["gcc", "-O1", "-Wall", "-Wno-unused-function", f"-I{BPF_DIR}", *flags,
                    "-o", str(exe), str(src)], check=True, capture_output=True, text=True)
    return subprocess.run([str(exe)], input=stdin, check=True, capture_output=True,
                          text=True).stdout


def c_type(name: str) -> str:
    return f"union {name}" if name == "addr" else f"struct {name}"


def layout_program(consts: Constants) -> tuple[str, dict[str, int]]:
    """C statements printing `name size` / `name.field offset`, and what ctypes says."""
    lines, expected = [], {}
    for name, mirror in c_structs(consts).items():
        lines.append(f'printf("{name} %zu\\n", sizeof({c_type(name)}));')
        expected[name] = ct.sizeof(mirror)
        for field, _ in mirror._fields_:
            lines.append(f'printf("{name}.{field} %zu\\n", offsetof({c_type(name)}, {field}));')
            expected[f"{name}.{field}"] = getattr(mirror, field).offset
    return "\n".join(lines), expected


@pytest.mark.parametrize("overrides", [{}, {"SELECTOR_SIZE": 251, "MAX_FRONTENDS": 16,
                                            "MAX_SERVERS": 64, "LEASTCONN_MAX_SCAN": 8}],
                         ids=["defaults", "small-build"])
def test_ctypes_mirrors_match_c_layout(tmp_path, overrides):
    consts = Constants(overrides, for_build=False)
    body, expected = layout_program(consts)
    got = {}
    for line in build_and_run(tmp_path, body, consts).splitlines():
        key, value = line.split()
        got[key] = int(value)
    assert got == expected


def test_every_constant_of_the_header_is_read_by_python():
    text = CONSTS_H.read_text()
    guarded = {m.group(1) for m in _GUARDED.finditer(text)}
    defined = {line.split()[1] for line in text.splitlines()
               if line.startswith("#define ") and not line.startswith("#define LBFAST_")}
    derived = {"SNAT_PORT_COUNT"}   # computed from others, not overridable
    assert defined - derived == guarded
    assert guarded <= set(DEFAULTS) | {"CT_REFRESH_JIFFIES", "HALFOPEN_PORT_HOLD_JIFFIES"}  # need the clock


def source_vectors() -> list[str]:
    rng = random.Random(7)
    v4 = ["0.0.0.0", "10.200.0.2", "192.0.2.1", "255.255.255.255"]
    v4 += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(200)]
    v6 = ["::", "fd00:200::2", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
    v6 += [str(ipaddress.IPv6Address(rng.getrandbits(128))) for _ in range(200)]
    return v4 + v6


def test_source_hash_in_c_equals_python(tmp_path):
    """bpf/hashing.h source_hash against lbfast.hashing.source_hash on 408 addresses."""
    body = r"""
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        union addr a = {0};
        unsigned family = line[0] - '0';
        unsigned char *b = (unsigned char *)&a;
        for (int i = 0; i < (family == FAMILY_V4 ? 4 : 16); i++)
            sscanf(line + 2 + 2 * i, "%2hhx", &b[i]);
        printf("%u\n", source_hash(&a, family));
    }
    """
    addrs = source_vectors()
    stdin = "".join(
        f"{4 if ipaddress.ip_address(a).version == 4 else 6} {ipaddress.ip_address(a).packed.hex()}\n"
        for a in addrs)
    got = [int(x) for x in build_and_run(tmp_path, body, Constants(for_build=False),
                                         stdin).split()]
    want = [hashing.source_hash(ipaddress.ip_address(a).packed) for a in addrs]
    assert got == want
