"""The XDP program's constants, read from bpf/consts.h so every number is written once.
`Constants` is that header evaluated with overrides; the loader turns it into -D flags."""
import re
from importlib import resources
from pathlib import Path
from typing import Mapping

from lbfast.enums import AlgorithmCode
from lbfast.hashing import SOURCE_SEED
from lbfast.hostports import HOST_PORT_MAX, HOST_PORT_MIN
from lbfast.xdp import clock

# The C sources ship inside the package (lbfast/bpf_src, a link to bpf/ in a checkout),
# so an installed lbfast compiles the program it was built with. bcc reads real files.
BPF_DIR = Path(str(resources.files("lbfast") / "bpf_src"))
CONSTS_H = BPF_DIR / "consts.h"

# a string constant becomes a C string literal on the compiler's command line (e.g. the pin
# directory): nothing that could end the literal, escape or start a new line
C_STRING_SAFE = re.compile(r"[A-Za-z0-9_./@+-]*")
# #ifndef NAME / #define NAME value [/* comment, maybe several lines */] / #endif
_GUARDED = re.compile(r"^#ifndef (\w+)\n#define \1 ([^\n]*?)\s*(?:/\*[\s\S]*?\*/)?\n#endif", re.M)


def python_owned(with_clock: bool) -> dict[str, int]:
    """Values Python owns: passed on every compile (consts.h refuses to build without).
    The tick rate is asked from the kernel, so only builds (not imports) need it."""
    owned = {f"ALGO_{a.name}": int(a) for a in AlgorithmCode}
    owned["SOURCE_HASH_SEED"] = SOURCE_SEED
    owned["HOST_PORT_MIN"], owned["HOST_PORT_MAX"] = HOST_PORT_MIN, HOST_PORT_MAX
    if with_clock:
        owned["JIFFIES_PER_S"] = clock.hz()
    return owned


def _evaluate(expr: str, known: Mapping[str, int | str]) -> int | str:
    if expr.startswith('"'):
        return expr.strip('"')
    ints = {k: v for k, v in known.items() if isinstance(v, int)}
    return int(eval(expr, {"__builtins__": {}}, ints))  # noqa: S307 - our own header


class Constants(Mapping[str, int | str]):
    """consts.h evaluated top to bottom with `overrides` in place of the defaults, so a
    derived default (MAX_SELECTORS) follows an overridden input (MAX_BACKENDS)."""

    def __init__(self, overrides: Mapping[str, int | str] | None = None,
                 for_build: bool = True) -> None:
        self.overrides = dict(overrides or {})
        self._owned = python_owned(with_clock=for_build)
        self._values: dict[str, int | str] = dict(self._owned)
        for name, expr in _GUARDED.findall(CONSTS_H.read_text()):
            if name in self.overrides:
                self._values[name] = self.overrides[name]
                continue
            try:
                self._values[name] = _evaluate(expr, self._values)
            except NameError:   # depends on the clock, which only builds ask for
                continue
        unknown = set(self.overrides) - set(self._values)
        if unknown:
            raise ValueError(f"not constants of bpf/consts.h: {sorted(unknown)}")

    def __getitem__(self, name: str) -> int | str:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def cflags(self) -> list[str]:
        """-D flags: the codes Python owns, and every override."""
        flags = [f"-D{k}={v}U" for k, v in self._owned.items()]
        for k, v in self.overrides.items():
            if isinstance(v, str) and not C_STRING_SAFE.fullmatch(v):
                raise ValueError(f"constant {k}: {v!r} cannot be a C string literal (only {C_STRING_SAFE.pattern})")
            flags.append(f'-D{k}="{v}"' if isinstance(v, str) else f"-D{k}={v}")
        return flags


DEFAULTS = Constants(for_build=False)   # what Python reads; builds make their own
