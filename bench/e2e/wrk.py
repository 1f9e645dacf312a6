"""wrk as the load generator: the command line, the parse of what `wrk_stats.lua` prints,
and the merge of several wrk processes (the direct baseline runs one per backend)."""
from __future__ import annotations

import bisect
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

LUA_SCRIPT = str(Path(__file__).with_name("wrk_stats.lua"))
ERROR_KINDS = ("connect", "read", "write", "status", "timeout")
_SUMMARY_RE = re.compile(r"^LBFAST_SUMMARY (.*)$", re.M)
_PCT_RE = re.compile(r"^LBFAST_PCT (.*)$", re.M)


class WrkError(RuntimeError):
    """wrk exited without the lines of wrk_stats.lua (bad URL, Lua error, crash)."""


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    bytes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    percentiles: list[tuple[float, float]] = field(default_factory=list)  # (percent, us)
    min_us: float = 0.0
    max_us: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def latency_us(self, percent: float) -> float:
        """Latency at `percent` (0..100), interpolated on the grid wrk printed."""
        if not self.percentiles:
            return 0.0
        ps = [p for p, _ in self.percentiles]
        vs = [v for _, v in self.percentiles]
        if percent <= ps[0]:
            return vs[0]
        if percent >= ps[-1]:
            return vs[-1] if percent < 100 else max(vs[-1], self.max_us)
        i = bisect.bisect_left(ps, percent)
        p0, p1, v0, v1 = ps[i - 1], ps[i], vs[i - 1], vs[i]
        return v0 + (v1 - v0) * (percent - p0) / (p1 - p0)

    def fraction_below(self, us: float) -> float:
        """Share of requests (0..1) at or below `us`: the inverse of latency_us."""
        pts = [(0.0, self.min_us)] + self.percentiles + [(100.0, max(self.max_us, self.percentiles[-1][1] if self.percentiles else 0))]
        if us < pts[0][1]:
            return 0.0
        for (p0, v0), (p1, v1) in zip(pts, pts[1:]):
            if us < v1:
                return (p0 + (p1 - p0) * ((us - v0) / (v1 - v0) if v1 > v0 else 1.0)) / 100
        return 1.0


def command(url: str, threads: int, connections: int, duration_s: float, timeout_s: float = 2.0,
            close: bool = False) -> list[str]:
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s",
            "--timeout", f"{timeout_s:g}s", "-s", LUA_SCRIPT]
    if close:
        argv += ["-H", "Connection: close"]
    return argv + [url]


def parse(output: str) -> WrkResult:
    m = _SUMMARY_RE.search(output)
    p = _PCT_RE.search(output)
    if not m or not p:
        tail = output.strip()[-400:]
        raise WrkError(f"wrk printed no summary (Lua done() did not run): {tail}")
    kv = dict(item.split("=", 1) for item in m.group(1).split())
    pct = [tuple(float(x) for x in item.split(":", 1)) for item in p.group(1).split()]
    return WrkResult(
        requests=int(kv["requests"]), duration_s=int(kv["duration_us"]) / 1e6,
        bytes=int(kv["bytes"]), errors={k: int(kv[k]) for k in ERROR_KINDS},
        percentiles=sorted(pct), min_us=float(kv["min_us"]), max_us=float(kv["max_us"]))


def merge(results: list[WrkResult]) -> WrkResult:
    """One result for wrk processes that ran side by side: counts add up, the duration is
    the longest, the latency distribution is the request-weighted mixture."""
    if len(results) == 1:
        return results[0]
    total = sum(r.requests for r in results)
    errors = {k: sum(r.errors.get(k, 0) for r in results) for k in ERROR_KINDS}
    merged = WrkResult(requests=total, duration_s=max(r.duration_s for r in results),
                       bytes=sum(r.bytes for r in results), errors=errors,
                       min_us=min(r.min_us for r in results), max_us=max(r.max_us for r in results))
    if total == 0:
        merged.percentiles = results[0].percentiles
        return merged
    # wrk's latencies are whole microseconds: a point just below each value keeps the
    # steps of the distributions as steps instead of interpolating across them
    values = {v for r in results for _, v in r.percentiles} | {merged.min_us, merged.max_us}
    xs = sorted(values | {v - 0.5 for v in values if v >= 0.5})

    def mixture(us: float) -> float:
        return sum(r.requests * r.fraction_below(us) for r in results if r.percentiles) / total * 100

    fs = [mixture(x) for x in xs]
    grid = [p for p, _ in results[0].percentiles]
    out = []
    for p in grid:
        i = bisect.bisect_left(fs, p)
        if i == 0:
            out.append((p, xs[0]))
        elif i >= len(xs):
            out.append((p, xs[-1]))
        else:
            f0, f1, x0, x1 = fs[i - 1], fs[i], xs[i - 1], xs[i]
            x = x0 + (x1 - x0) * ((p - f0) / (f1 - f0) if f1 > f0 else 1.0)
            out.append((p, float(math.ceil(x - 1e-9))))   # back to whole microseconds
    merged.percentiles = out
    return merged


def wait_rusage(pid: int) -> tuple[int, float]:
    """Reap a wrk process; its exit status and the CPU seconds it used (user + system,
    microsecond resolution from the kernel's rusage, not ticks)."""
    _, status, ru = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime
