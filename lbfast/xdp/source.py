"""The XDP program's C source as bcc must see it: one translation unit. bcc rewrites map
calls (`conntrack.lookup(...)`) only in its main file, so the loader inlines the local
`#include "x.h"` headers of bpf/ (each once, with #line markers so compiler messages
still name the real file and line)."""
import re
from pathlib import Path

from lbfast.xdp.consts import BPF_DIR

ENTRY = BPF_DIR / "lbfast_xdp.c"
_LOCAL_INCLUDE = re.compile(r'^#include "([^"]+)"\s*$', re.M)


def amalgamate(path: Path = ENTRY, seen: set[Path] | None = None) -> str:
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen:
        return ""
    seen.add(path)
    out: list[str] = [f'#line 1 "{path}"\n']
    lines = path.read_text().splitlines(keepends=True)
    for number, line in enumerate(lines, start=1):
        m = _LOCAL_INCLUDE.match(line)
        if not m:
            out.append(line)
            continue
        out.append(amalgamate(path.parent / m.group(1), seen))
        out.append(f'#line {number + 1} "{path}"\n')
    return "".join(out)
